"""The simulator and traces: malformed traces name the line; runs are deterministic and sane."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.autoscale.baselines import StaticPolicy
from controlplane.catalog import load_catalog
from controlplane.cli.main import app
from controlplane.simulate.run import POLICY_NAMES, make_fleet, make_policy, scenario_for
from controlplane.simulate.sim import Scenario, Simulator
from controlplane.simulate.sizing import peak_replicas
from controlplane.simulate.trace import SyntheticDemand, Trace, TraceError, load_trace, synthetic_trace

CATALOG = load_catalog()
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("TIMESTAMP,ContextTokens\n2024-02-29 09:30:10.50,3\n", ":1: missing column(s) GeneratedTokens"),
        (
            HEADER + "2024-02-29 09:30:10.50,3,4\n2024-02-29 09:30:09.00,3,4\n",
            ":3: timestamps are not sorted",
        ),
        (HEADER + "2024-02-29 09:30:10.50,-3,4\n", ":2: ContextTokens must not be negative"),
        (HEADER + "2024-02-29 09:30:10.50,3,x\n", ":2: GeneratedTokens must be an integer"),
        (HEADER + "yesterday,3,4\n", ":2: TIMESTAMP 'yesterday' is not a timestamp"),
        (HEADER, "the trace has no requests"),
    ],
)
def test_malformed_traces_name_the_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(TraceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_trace(write(tmp_path, body))


def test_trace_parses_seven_fraction_digits_and_replays(tmp_path: Path) -> None:
    trace = load_trace(
        write(tmp_path, HEADER + "2024-02-29 09:30:00.1234567,10,2\n2024-02-29 09:30:02.1234567,20,3\n")
    )
    assert [r.arrival_s for r in trace.requests] == [0.0, 2.0]
    double = trace.replay(time_scale=0.5, loops=2, gap_s=1.0)
    assert [r.arrival_s for r in double.requests] == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(TraceError, match="time_scale"):
        trace.replay(time_scale=0)


def test_fleet_spec_errors_name_the_part() -> None:
    assert len(make_fleet(CATALOG, "910C:2x8,H100:1x8")) == 3
    with pytest.raises(ValueError, match="unknown accelerator type 'nope'"):
        make_fleet(CATALOG, "nope:1x8")
    with pytest.raises(ValueError, match="TYPE:NODESxDEVICES"):
        make_fleet(CATALOG, "H100:axb")


def small_scenario(trace: Trace) -> Scenario:
    return scenario_for(
        trace,
        CATALOG,
        model="qwen2.5-7b-instruct",
        fleet="L20:4x8",
        ttft_s=3.0,
        tpot_s=0.1,
        cold_start_s=30.0,
    )


def small_run(policy: str, seed: int = 1) -> dict[str, float]:
    trace = synthetic_trace(
        SyntheticDemand(base_rate=1.0, burst_every_s=120, mean_input_tokens=800), 600, seed=seed
    )
    scenario = small_scenario(trace)
    sim = Simulator(scenario, CATALOG)
    return sim.run(trace, make_policy(policy, sim, trace)).summary()


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_runs_and_accounts(policy: str) -> None:
    summary = small_run(policy)
    assert summary["requests"] > 300
    assert 0.0 <= summary["slo_attainment"] <= 1.0
    assert summary["accelerator_hours"] > 0 and summary["cost"] > 0
    assert summary["unfinished"] == 0


def test_runs_are_deterministic() -> None:
    a, b = small_run("tokenfab"), small_run("tokenfab")
    a.pop("wall_s"), b.pop("wall_s")
    a.pop("simulated_s_per_wall_s"), b.pop("simulated_s_per_wall_s")
    assert a == b


def test_more_static_capacity_never_lowers_attainment() -> None:
    trace = synthetic_trace(SyntheticDemand(base_rate=2.0, mean_input_tokens=800), 300, seed=3)
    scenario = small_scenario(trace)
    results = []
    for n in (1, 2, 4):
        sim = Simulator(dataclasses.replace(scenario, initial_replicas=n), CATALOG)
        results.append(sim.run(trace, StaticPolicy(n)).summary())
    attainment = [r["slo_attainment"] for r in results]
    hours = [r["accelerator_hours"] for r in results]
    assert attainment == sorted(attainment) and hours == sorted(hours)
    assert peak_replicas(trace, Simulator(scenario, CATALOG).declared) >= 1


def test_cli_simulate_json_and_plot(tmp_path: Path) -> None:
    trace = synthetic_trace(SyntheticDemand(base_rate=1.0), 300, seed=2)
    path = tmp_path / "synthetic.csv"
    lines = [HEADER.strip()] + [
        f"2024-02-29 09:{int(r.arrival_s // 60):02d}:{r.arrival_s % 60:09.6f},{r.input_tokens},{r.output_tokens}"
        for r in trace.requests
    ]
    path.write_text("\n".join(lines) + "\n")
    plots = tmp_path / "plots"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            str(path),
            "--policy",
            "kpa",
            "-o",
            "json",
            "--plot",
            str(plots),
            "--model",
            "qwen2.5-7b-instruct",
            "--fleet",
            "L20:2x8",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["policies"]) == {"kpa", "oracle"}
    kpa = report["policies"]["kpa"]
    assert {"slo_attainment", "infeasible", "accelerator_hours", "vs_oracle", "fleet_capped_s"} <= kpa.keys()
    assert report["oracle"]["vs_oracle"] == 1.0
    for name in ("kpa", "oracle"):
        assert (plots / f"synthetic-{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    warm = CliRunner().invoke(
        app,
        ["simulate", "--trace", str(path), "--policy", "static_peak", "--no-oracle", "-o", "json",
         "--model", "qwen2.5-7b-instruct", "--fleet", "L20:autox8", "--warmup-until", "2m"],
    )  # fmt: skip
    assert warm.exit_code == 0, warm.output
    assert json.loads(warm.output)["setup"]["scored_from_s"] == 120.0
    outside = CliRunner().invoke(app, ["simulate", "--trace", str(path), "--warmup-until", "1d"])
    assert outside.exit_code == 2 and "not inside the trace" in outside.output
    bad = CliRunner().invoke(app, ["simulate", "--trace", str(path), "--policy", "nope"])
    assert bad.exit_code == 2 and "unknown policy 'nope'" in bad.output


@pytest.mark.skipif(
    not TRACES.is_dir(), reason="../shared/traces is absent (a fresh clone has no shared traces)"
)
def test_azure_trace_loads() -> None:
    trace = load_trace(TRACES / "azure_llm_2023_code.csv")
    assert len(trace.requests) == 8819 and 3000 < trace.duration_s < 4000


def test_a_mix_no_accelerator_serves_is_sized_on_the_declared_mix() -> None:
    trace = synthetic_trace(SyntheticDemand(base_rate=1.0, mean_input_tokens=800), 60, seed=3)
    sim = Simulator(small_scenario(trace), CATALOG)
    declared = sim.capacity(sim.scenario.mean_input_tokens, sim.scenario.mean_output_tokens)
    # a smoothed mix of 2M-token prompts: nothing prefills that within the TTFT target
    assert sim.capacity(2_000_000, 200) == declared
