"""Every autoscaling policy and the clairvoyant oracle on one trace: attainment, cost, vs_oracle.

    python bench/autoscaler.py --trace ../shared/traces/azure_llm_2023_conv.csv
    python bench/autoscaler.py --trace ../shared/traces/servegen_m_small_2d.csv --warmup-until 1d

Fixed setup for every trace and policy (no per-trace tuning): Qwen2.5-72B-Instruct (BF16) on
Ascend 910C nodes of 8 (replicas are TP 2, placed by the scheduler; the node count is sized from
the trace so that no policy is capped by it, and ``fleet_capped_s`` shows when one was), SLO per
request TTFT <= 3 s (``--ttft-prompt-rate R``: 3 s + prompt tokens / R) and TPOT <= 100 ms, 60 s
cold start, decisions every 5 s. ``--warmup-until T`` scores only what arrives from T on (the
first day of a multi-day trace warms up); without it the trace is replayed twice and the second
pass is scored.

References beside the policies: ``oracle`` (clairvoyant: each minute's fewest replicas meeting
the SLO, asked a cold start ahead), ``oracle_late`` (the causal reference: the same plan asked a
cold start plus a decision interval late, i.e. each minute's replicas asked when the minute
begins, Ready a cold start into it) and ``oracle_late_hold`` (that, holding the largest count of
the last 600 s). They share one plan and are never counted as baselines.

Per policy and for the oracle: attainment of the feasible requests, infeasible count (requests
no replica shape serves within the SLO, never scored), accelerator-hours, vs_oracle (hours /
the oracle's), fleet_capped_s, scaling actions. savings_vs_best_baseline = 1 - tokenfab hours /
the hours of the cheapest baseline reaching >= 0.99 (null when none does). ``--plot DIR`` draws
demand, replicas and attainment over time per policy. Prints one JSON object; no assertions.

``--trace synthetic:long-prompt`` replays a generated hour instead of a file (seeded, log-normal
prompts of mean 5,000 tokens and sigma 1.0, at most 30,000, p95 about 15,000; outputs of mean
200; 1 request/s on a slow sine with 3x bursts): the mix whose tail, not its mean, sizes the
replica shape (TP 4 on the 910C, where TP 2 cannot prefill the p95 prompt within 3 s).

``--tokenfab-config '{"target_utilisation": 0.9}'`` overrides TokenfabConfig fields for a
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

from controlplane.autoscale.policy import Policy, TokenfabConfig, TokenfabPolicy  # noqa: E402
from controlplane.catalog import load_catalog  # noqa: E402
from controlplane.simulate.compare import Setup, compare, parse_duration  # noqa: E402
from controlplane.simulate.run import POLICY_NAMES, make_policy  # noqa: E402
from controlplane.simulate.sim import Simulator  # noqa: E402
from controlplane.simulate.trace import (  # noqa: E402
    SyntheticDemand,
    Trace,
    TraceError,
    load_trace,
    synthetic_trace,
)

SYNTHETIC = {
    "long-prompt": SyntheticDemand(
        base_rate=1.0, mean_input_tokens=5000, mean_output_tokens=200, sigma=1.0, max_tokens=30_000
    ),
}


def _trace(spec: str) -> Trace:
    if spec.startswith("synthetic:"):
        name = spec.partition(":")[2]
        if name not in SYNTHETIC:
            raise TraceError(f"--trace: unknown synthetic trace {name!r} (known: {', '.join(SYNTHETIC)})")
        trace = synthetic_trace(SYNTHETIC[name], 3600.0, seed=1)
        return Trace(f"synthetic-{name}", trace.requests)
    return load_trace(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", required=True, help="a trace CSV, or synthetic:long-prompt")
    parser.add_argument("--policies", default=",".join(POLICY_NAMES))
    parser.add_argument("--warmup-until", default=None, help="score from this time: 86400, 24h, 1d")
    parser.add_argument("--plot", default=None, type=Path, help="directory for one PNG per policy")
    parser.add_argument("--ttft-prompt-rate", default=0.0, type=float, help="length-aware TTFT (tokens/s)")
    parser.add_argument("--tokenfab-config", default="{}", help="JSON: TokenfabConfig fields to override")
    args = parser.parse_args()
    try:
        overrides = json.loads(args.tokenfab_config)
        tokenfab_config = TokenfabConfig(**overrides)
    except (ValueError, TypeError) as exc:
        parser.error(f"--tokenfab-config: {exc}")
    try:
        warmup = parse_duration(args.warmup_until) if args.warmup_until is not None else None
        trace = _trace(args.trace)
    except (ValueError, TraceError) as exc:
        parser.error(str(exc))
    names = [n for n in args.policies.split(",") if n]
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown:
        parser.error(f"--policies: unknown {', '.join(unknown)} (known: {', '.join(POLICY_NAMES)})")

    def make(name: str, simulator: Simulator, replay: Trace) -> Policy:
        return TokenfabPolicy(tokenfab_config) if name == "tokenfab" else make_policy(name, simulator, replay)

    started = time.perf_counter()
    try:
        result = compare(
            trace,
            load_catalog(),
            names,
            Setup(ttft_prompt_tokens_per_s=args.ttft_prompt_rate, warmup_until_s=warmup),
            make=make,
            plot_dir=args.plot,
        )
    except (ValueError, TraceError) as exc:
        parser.error(str(exc))
    report = result.report()
    report["trace"] = str(args.trace)
    report["setup"]["tokenfab_config"] = overrides
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
