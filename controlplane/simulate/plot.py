"""PNG plot of a simulation: demand, replicas and misses over time (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from controlplane.simulate.sim import SimResult


def _smooth(values: list[float], width: int = 12) -> list[float]:
    """Trailing moving average (12 ticks of 5 s: one minute); 5 s buckets are too spiky to read."""
    return [sum(values[max(0, i - width + 1) : i + 1]) / min(width, i + 1) for i in range(len(values))]


def plot(result: SimResult, path: str | Path, *, slo: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result.timeline
    t0 = points[0].t if points else 0.0
    minutes = [(p.t - t0) / 60 for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(3, 2))
    top.plot(
        minutes,
        _smooth([p.demand_replicas for p in points]),
        color="tab:blue",
        lw=1.2,
        label="demand: replicas at full predicted capacity (1 min avg)",
    )
    top.step(minutes, [p.ready for p in points], where="post", color="tab:green", label="Ready replicas")
    top.step(
        minutes,
        [p.replicas for p in points],
        where="post",
        color="tab:orange",
        lw=0.8,
        label="replicas incl. starting",
    )
    top.set_ylabel("replicas")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(
        f"{result.policy} on {result.trace}: SLO attainment {result.slo_attainment:.4f}, "
        f"{result.accelerator_hours:.1f} accelerator-hours, {result.scaling_actions} scaling actions"
        + (f"\n{slo}" if slo else ""),
        fontsize=10,
    )
    bottom.plot(
        minutes,
        _smooth([p.demand_output_tokens_per_s for p in points]),
        color="tab:blue",
        lw=1.0,
        label="output tokens/s requested (1 min avg)",
    )
    bottom.plot(
        minutes,
        _smooth([p.demand_input_tokens_per_s / 10 for p in points]),
        color="tab:purple",
        lw=1.0,
        label="prompt tokens/s requested / 10",
    )
    if result.missed_at:
        misses = [(t - t0) / 60 for t in result.missed_at]
        bottom.plot(
            misses, [0] * len(misses), "|", color="tab:red", ms=8, label="requests that missed the SLO"
        )
    bottom.set_ylabel("tokens/s")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
