"""Every policy and the oracle on one trace: what ``bench/autoscaler.py`` and ``tokenfab simulate``
print.

Warm-up: with ``warmup_until`` the trace is replayed once and only what arrives from that time on
is scored (a multi-day trace warms up on its first day and is scored on the rest, so the scored
data is never replayed as warm-up); without it, a trace is replayed twice back to back and the
second pass is scored (an hour-long trace). The declared mix (the capacity request's mean prompt
and output) comes from the warm-up part only.

Every policy's figures sit beside the oracle's: ``vs_oracle`` is its accelerator-hours over the
oracle's (1.0 = as cheap as the clairvoyant plan).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.autoscale.policy import Policy
from controlplane.catalog import Catalog
from controlplane.simulate.defaults import Defaults
from controlplane.simulate.result import SimResult
from controlplane.simulate.run import make_policy, scenario_for
from controlplane.simulate.sim import Simulator
from controlplane.simulate.trace import Trace, TraceError

_D = Defaults()
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """``"86400"``, ``"86400s"``, ``"1440m"``, ``"24h"`` or ``"1d"`` -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"warmup-until: {text!r} is not a duration such as 86400, 24h or 1d")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]


@dataclass(frozen=True, slots=True)
class Setup:
    model: str = _D.model
    fleet: str = _D.fleet
    ttft_s: float = _D.ttft_s
    tpot_s: float = _D.tpot_s
    cold_start_s: float = _D.cold_start_s
    ttft_prompt_tokens_per_s: float = 0.0  # > 0: length-aware TTFT target
    warmup_until_s: float | None = None  # None: replay twice, score the second pass


@dataclass
class Comparison:
    trace: str
    requests: int
    setup: dict[str, Any]
    results: dict[str, SimResult] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        oracle = self.results.get("oracle")
        oracle_hours = oracle.accelerator_hours if oracle else None
        policies: dict[str, dict[str, Any]] = {}
        for name, result in self.results.items():
            s = result.summary()
            policies[name] = {
                "slo_attainment": s["slo_attainment"],
                "ttft_attainment": s["ttft_attainment"],
                "tpot_attainment": s["tpot_attainment"],
                "infeasible": s["infeasible"],
                "rejected": s["rejected"],
                "accelerator_hours": s["accelerator_hours"],
                "vs_oracle": round(result.accelerator_hours / oracle_hours, 3) if oracle_hours else None,
                "fleet_capped_s": s["fleet_capped_s"],
                "scaling_actions": s["scaling_actions"],
                "max_replicas": s["max_replicas"],
                "cost": s["cost"],
                "wall_s": s["wall_s"],
            }
        # the oracle and its causal references (oracle_late*) are references, not baselines
        baselines = {k: v for k, v in policies.items() if k != "tokenfab" and not k.startswith("oracle")}
        good = {k: v for k, v in baselines.items() if v["slo_attainment"] >= 0.99}
        ours = policies.get("tokenfab")
        best = min(good, key=lambda k: good[k]["accelerator_hours"]) if good else None
        if best is None and baselines:
            best = max(baselines, key=lambda k: baselines[k]["slo_attainment"])
        savings = (
            round(1 - ours["accelerator_hours"] / good[best]["accelerator_hours"], 4)
            if ours and best in good and good[best]["accelerator_hours"] > 0
            else None
        )
        targets: dict[str, Any] = {}
        if ours and oracle:
            oracle_ok = oracle.slo_attainment >= 0.99
            targets = {
                "oracle_reaches_0.99": oracle_ok,
                "attainment_ge_0.99": ours["slo_attainment"] >= 0.99 if oracle_ok else None,
                "hours_le_1.25x_oracle": ours["vs_oracle"] is not None and ours["vs_oracle"] <= 1.25,
            }
        return {
            "trace": self.trace,
            "requests": self.requests,
            "setup": self.setup,
            "oracle": policies.get("oracle"),
            "policies": policies,
            "best_baseline": best,
            "best_baseline_reaches_0.99": bool(good),
            "savings_vs_best_baseline": savings,
            "targets": targets,
        }


def compare(
    trace: Trace,
    catalog: Catalog,
    policies: list[str],
    setup: Setup,
    *,
    make: Callable[[str, Simulator, Trace], Policy] = make_policy,
    plot_dir: Path | None = None,
    progress: Callable[[str, float, float], None] | None = None,
    oracle: bool = True,
) -> Comparison:
    """Run ``policies`` (and the oracle, unless ``oracle`` is false) on ``trace``; see the module
    docstring."""
    if setup.warmup_until_s is None:
        replay, scored_from, warm = trace.replay(loops=2), trace.duration_s + 1.0, trace
        warmup = "one unscored pass of the trace"
    else:
        if not 0 < setup.warmup_until_s < trace.duration_s:
            raise TraceError(
                f"warmup-until: {setup.warmup_until_s:g}s is not inside the trace "
                f"(0 to {trace.duration_s:.0f}s)"
            )
        replay, scored_from = trace, setup.warmup_until_s
        warm = Trace(trace.name, tuple(r for r in trace.requests if r.arrival_s < scored_from))
        warmup = f"the trace before {scored_from:.0f}s, unscored"
    scenario = scenario_for(
        replay,
        catalog,
        model=setup.model,
        fleet=setup.fleet,
        ttft_s=setup.ttft_s,
        tpot_s=setup.tpot_s,
        cold_start_s=setup.cold_start_s,
        ttft_prompt_tokens_per_s=setup.ttft_prompt_tokens_per_s,
        mix_from=warm,
    )
    simulator = Simulator(scenario, catalog)
    unit = simulator.declared
    comparison = Comparison(
        trace.name,
        sum(1 for r in replay.requests if r.arrival_s >= scored_from),
        {
            "model": setup.model,
            "fleet": f"{scenario.nodes[0].accelerator}: {len(scenario.nodes)} nodes (from {setup.fleet})",
            "slo": {
                "ttft": simulator.ttft.describe(),
                "tpot_s": setup.tpot_s,
                "per_request": "TTFT and TPOT both within target",
            },
            "cold_start_s": setup.cold_start_s,
            "warmup": warmup,
            "scored_from_s": round(scored_from, 1),
            "replica": f"{unit.accelerator} x{unit.tp}",
            "declared_mix": [round(scenario.mean_input_tokens), round(scenario.mean_output_tokens)],
            "declared_p95": [round(scenario.p95_input_tokens), round(scenario.p95_output_tokens)],
        },
    )
    names = list(dict.fromkeys([*policies, "oracle"] if oracle else policies))
    for name in names:
        policy = make(name, simulator, replay)
        tick = functools.partial(progress, name) if progress is not None else None
        result = simulator.run(replay, policy, scored_from=scored_from, progress=tick)
        comparison.results[name] = result
        if plot_dir is not None:
            from controlplane.simulate.plot import plot

            plot_dir.mkdir(parents=True, exist_ok=True)
            plot(
                result,
                plot_dir / f"{trace.name}-{name}.png",
                slo=f"{setup.model}, {comparison.setup['fleet']}; per request TTFT <= "
                f"{simulator.ttft.describe()} and TPOT <= {setup.tpot_s * 1000:g}ms",
            )
    return comparison
