"""Every autoscaling policy on one trace, one fleet, one SLO: attainment, accelerator-hours, cost.

    python bench/autoscaler.py --trace ../shared/traces/azure_llm_2023_conv.csv

Fixed setup for every trace and policy (no per-trace tuning): Qwen2.5-72B-Instruct (BF16) on a
fleet of 8 nodes x 8 Ascend 910C (replicas are TP 2, placed by the scheduler), SLO per request
TTFT <= 3 s and TPOT <= 100 ms, 60 s cold start, policy decisions every 5 s. Each policy first
replays the trace once unscored (a warm-up, so that no policy is scored on its cold history),
then is scored on the second pass.

savings_vs_best_baseline = 1 - tokenfab accelerator-hours / the accelerator-hours of the cheapest
baseline that also reaches >= 0.99 attainment (null when no baseline does; best_baseline then
names the baseline with the highest attainment). Prints one JSON object; no assertions.

``--tokenfab-config '{"target_utilisation": 0.9}'`` overrides fields of TokenfabConfig for a
sensitivity run (the recorded figures use the defaults).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controlplane.autoscale.policy import TokenfabConfig, TokenfabPolicy  # noqa: E402
from controlplane.catalog import load_catalog  # noqa: E402
from controlplane.simulate.run import POLICY_NAMES, Defaults, make_policy, scenario_for  # noqa: E402
from controlplane.simulate.sim import Simulator  # noqa: E402
from controlplane.simulate.trace import load_trace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", required=True, type=Path)
    parser.add_argument("--policies", default=",".join(POLICY_NAMES))
    parser.add_argument("--tokenfab-config", default="{}", help="JSON: TokenfabConfig fields to override")
    args = parser.parse_args()
    try:
        overrides = json.loads(args.tokenfab_config)
        tokenfab_config = TokenfabConfig(**overrides)
    except (ValueError, TypeError) as exc:
        parser.error(f"--tokenfab-config: {exc}")
    d = Defaults()
    catalog = load_catalog()
    trace = load_trace(args.trace)
    scenario = scenario_for(
        trace,
        catalog,
        model=d.model,
        fleet=d.fleet,
        ttft_s=d.ttft_s,
        tpot_s=d.tpot_s,
        cold_start_s=d.cold_start_s,
    )
    simulator = Simulator(scenario, catalog)
    replay = trace.replay(loops=2)
    policies: dict[str, dict[str, float | int | None]] = {}
    started = time.perf_counter()
    simulated = 0.0
    for name in args.policies.split(","):
        policy = (
            TokenfabPolicy(tokenfab_config) if name == "tokenfab" else make_policy(name, simulator, trace)
        )
        result = simulator.run(replay, policy, scored_from=trace.duration_s + 1.0)
        s = result.summary()
        simulated += replay.duration_s
        policies[name] = {
            "slo_attainment": s["slo_attainment"],
            "ttft_attainment": s["ttft_attainment"],
            "tpot_attainment": s["tpot_attainment"],
            "accelerator_hours": s["accelerator_hours"],
            "cost": s["cost"],
            "scaling_actions": s["scaling_actions"],
            "max_replicas": s["max_replicas"],
        }
    wall = time.perf_counter() - started
    ours = policies.get("tokenfab")
    baselines = {k: v for k, v in policies.items() if k != "tokenfab"}
    good = {k: v for k, v in baselines.items() if float(v["slo_attainment"] or 0) >= 0.99}
    savings: float | None = None
    best: str | None = None
    if ours is not None and good:
        best = min(good, key=lambda k: float(good[k]["accelerator_hours"] or 0))
        savings = round(
            1 - float(ours["accelerator_hours"] or 0) / float(good[best]["accelerator_hours"] or 1), 4
        )
    elif baselines:
        best = max(baselines, key=lambda k: float(baselines[k]["slo_attainment"] or 0))
    print(
        json.dumps(
            {
                "trace": str(args.trace),
                "requests": len(trace.requests),
                "setup": {
                    "model": d.model,
                    "fleet": d.fleet,
                    "slo": {"ttft_s": d.ttft_s, "tpot_s": d.tpot_s},
                    "cold_start_s": d.cold_start_s,
                    "warmup": "one unscored pass of the trace",
                    "replica": f"{simulator.declared.accelerator} x{simulator.declared.tp}",
                    "tokenfab_config": overrides,
                },
                "policies": policies,
                "best_baseline": best,
                "best_baseline_reaches_0.99": bool(good),
                "savings_vs_best_baseline": savings,
                "simulated_s_per_wall_s": round(simulated / wall, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
