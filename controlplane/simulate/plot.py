"""PNG plot of a simulation: demand, replicas, misses and attainment over time (matplotlib, Agg).

Time is in minutes for runs up to three hours, in hours beyond; attainment is per 10-minute
bucket (feasible requests that arrived in it and met the SLO), on the right axis of the lower
panel."""

from __future__ import annotations

from pathlib import Path

from controlplane.simulate.result import SimResult


def _smooth(values: list[float], width: int = 12) -> list[float]:
    """Trailing moving average (12 ticks of 5 s: one minute); 5 s buckets are too spiky to read."""
    if width <= 1:
        return values
    return [sum(values[max(0, i - width + 1) : i + 1]) / min(width, i + 1) for i in range(len(values))]


def plot(result: SimResult, path: str | Path, *, slo: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result.timeline
    t0 = points[0].t if points else 0.0
    span = (points[-1].t - t0) if points else 0.0
    unit, scale = ("hours", 3600.0) if span > 3 * 3600 else ("minutes", 60.0)
    width = max(1, round(60.0 / (points[1].t - points[0].t))) if len(points) > 1 else 12
    if unit == "hours":
        width *= 10  # ten-minute averages on a day-long axis
    minutes = [(p.t - t0) / scale for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(3, 2))
    top.plot(
        minutes,
        _smooth([p.demand_replicas for p in points], width),
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
        _smooth([p.demand_output_tokens_per_s for p in points], width),
        color="tab:blue",
        lw=1.0,
        label="output tokens/s requested (1 min avg)",
    )
    bottom.plot(
        minutes,
        _smooth([p.demand_input_tokens_per_s / 10 for p in points], width),
        color="tab:purple",
        lw=1.0,
        label="prompt tokens/s requested / 10",
    )
    if result.missed_at:
        misses = [(t - t0) / scale for t in result.missed_at]
        bottom.plot(
            misses, [0] * len(misses), "|", color="tab:red", ms=8, label="requests that missed the SLO"
        )
    bottom.set_ylabel("tokens/s")
    bottom.set_xlabel(unit)
    bottom.legend(loc="upper left", fontsize=8)
    buckets = _attainment(result, t0, 600.0)
    if buckets:
        right = bottom.twinx()
        right.step(
            [b / scale for b, _ in buckets], [a for _, a in buckets], where="post", color="tab:green", lw=1.0
        )
        right.set_ylabel("SLO attainment per 10 min", color="tab:green")
        right.set_ylim(min(0.9, min(a for _, a in buckets)) - 0.01, 1.005)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _attainment(result: SimResult, t0: float, bucket_s: float) -> list[tuple[float, float]]:
    """(bucket start from ``t0``, share of the feasible arrivals in it that met the SLO)."""
    arrived: dict[int, int] = {}
    for p in result.timeline:
        k = int((p.t - t0) // bucket_s)
        arrived[k] = arrived.get(k, 0) + p.arrived
    missed: dict[int, int] = {}
    for t in result.missed_at:
        k = int((t - t0) // bucket_s)
        missed[k] = missed.get(k, 0) + 1
    return [(k * bucket_s, 1 - min(n, missed.get(k, 0)) / n) for k, n in sorted(arrived.items()) if n > 0]
