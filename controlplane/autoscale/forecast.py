"""Forecasting demand a cold start ahead: a trend-following smoother and a burst detector.

* :class:`Holt` is Holt's linear (double exponential) smoothing adapted to irregular sampling:
  the level follows the signal with weight ``1 - (1 - alpha)^(dt/tau)``, the trend (units/s)
  likewise with ``beta``. It tracks slow drift (the conversation trace's input rate triples over
  half an hour) and projects it ``horizon`` seconds ahead: the replica start time, since a replica
  asked for now serves only after its cold start.
* :func:`is_burst` flags a short-window rate well above the smoothed level; the policy then acts
  on the short window at once instead of waiting for the smoother (the code trace's request rate
  jumps tenfold from one minute to the next).

* :class:`Seasonal` keeps the daily shape (the peak of a signal per 15-minute slot, blended over
  days) so that a policy can look up what the coming slots needed on earlier days; the policy can
  use it as a pre-warm floor (off by default: on the two-day ServeGen trace it bought 0.0003 of
  attainment for 15 % more accelerator-hours, docs/design/autoscaler.md).

* :func:`minute_peaks` keeps, per minute, the peak of the short window over the smoothed level:
  the measured burstiness the policy sizes its holds by (about 1.1 to 1.2 on the conversation
  trace, whose demand drifts; a median of 1.8 and a 90th percentile of 4.2 on the code trace,
  whose bursts recur every few minutes).

Holt and the burst bound stay the core: a control loop needs an estimate that is cheap, small in
state and explainable in one sentence, and an hour-long trace has no period to fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Holt:
    level: float = math.nan
    trend: float = 0.0  # per second
    at: float = math.nan

    def update(self, value: float, now: float, *, alpha: float, beta: float, tau_s: float) -> Holt:
        if math.isnan(self.level):
            return Holt(value, 0.0, now)
        dt = max(0.0, now - self.at)
        if dt == 0.0:
            return self
        a = 1 - (1 - alpha) ** (dt / tau_s)
        b = 1 - (1 - beta) ** (dt / tau_s)
        predicted = self.level + self.trend * dt
        level = a * value + (1 - a) * predicted
        trend = b * (level - self.level) / dt + (1 - b) * self.trend
        return Holt(level, trend, now)

    def forecast(self, horizon_s: float) -> float:
        if math.isnan(self.level):
            return math.nan
        return max(0.0, self.level + self.trend * horizon_s)


def is_burst(short: float, level: float, *, ratio: float, floor: float) -> bool:
    """A burst: the short-window rate is at least ``ratio`` times the smoothed level and above
    ``floor`` (so that noise around an idle level is not a burst)."""
    if math.isnan(level):
        return short > floor
    return short > floor and short >= ratio * level


def burst_rate(
    samples: tuple[tuple[float, float], ...], windows: tuple[float, ...], slack_s: float
) -> tuple[float, float]:
    """The service rate that serves every burst in ``samples`` within ``slack_s`` of delay.

    ``samples`` are ``(time, arrival rate)`` points in time order. A burst of rate ``r`` lasting
    ``w`` seconds brings ``r x w`` work; a server of rate ``c`` finishes it ``r x w / c - w``
    seconds after it ends, so the delay stays within ``slack_s`` when
    ``c >= r x w / (w + slack_s)`` (the delay bound of network calculus, for the arrival curve
    observed over the window). Returns the largest such rate over the ``windows`` and the window
    that set it.
    """
    best, best_w = 0.0, 0.0
    if not samples:
        return best, best_w
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    for w in windows:
        start, total = 0, 0.0
        for end, value in enumerate(values):
            total += value
            while times[end] - times[start] >= w:
                total -= values[start]
                start += 1
            rate = total / (end - start + 1)
            required = rate * w / (w + slack_s)
            if required > best:
                best, best_w = required, w
    return best, best_w


@dataclass(frozen=True, slots=True)
class Seasonal:
    """The daily shape: the peak of a signal in each slot of a period (96 slots of 15 minutes in
    a day), blended over periods (``weight`` for the newest), so that the policy can look up what
    the coming slots needed on earlier days: pre-warm before a ramp it has seen before, and see a
    fall coming. Slots are by time of day of the clock it is given (UTC seconds live; seconds
    from the trace start in the simulator, whose traces start at midnight)."""

    period_s: float = 86_400.0
    slots: int = 96
    peaks: tuple[float, ...] = ()  # per slot; negative: not seen yet
    slot: int = -1  # the slot being observed, as an absolute index (period x slots + slot)
    peak: float = 0.0  # its running peak

    def _index(self, at: float) -> int:
        return math.floor(at / (self.period_s / self.slots))

    def update(self, value: float, now: float, *, weight: float = 0.5) -> Seasonal:
        index = self._index(now)
        if index == self.slot:
            return Seasonal(self.period_s, self.slots, self.peaks, index, max(self.peak, value))
        peaks = list(self.peaks) if self.peaks else [-1.0] * self.slots
        if self.slot >= 0 and index - self.slot < self.slots:  # close the slot just observed
            k = self.slot % self.slots
            peaks[k] = self.peak if peaks[k] < 0 else weight * self.peak + (1 - weight) * peaks[k]
        return Seasonal(self.period_s, self.slots, tuple(peaks), index, value)

    def ahead(self, now: float, horizon_s: float) -> float:
        """The largest learned peak of the slots from ``now`` to ``now + horizon_s`` (nan when
        none of them has been seen on an earlier day)."""
        if not self.peaks:
            return math.nan
        first, last = self._index(now), self._index(now + horizon_s)
        seen = [self.peaks[k % self.slots] for k in range(first, last + 1)]
        known = [v for v in seen if v >= 0]
        return max(known) if known else math.nan


def minute_peaks(
    peaks: tuple[tuple[float, float], ...], now: float, ratio: float, window_s: float
) -> tuple[tuple[float, float], ...]:
    """``peaks`` (``(minute start, peak)``, oldest first) with ``ratio`` folded into the minute of
    ``now`` and the minutes older than ``window_s`` dropped; a nan ``ratio`` (nothing to measure,
    e.g. no demand) adds nothing."""
    minute = math.floor(now / 60.0) * 60.0
    kept = tuple(p for p in peaks if now - p[0] <= window_s)
    if math.isnan(ratio):
        return kept
    if kept and kept[-1][0] == minute:
        return (*kept[:-1], (minute, max(kept[-1][1], ratio)))
    return (*kept, (minute, ratio))


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
