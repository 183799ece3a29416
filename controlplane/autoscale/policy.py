"""Scaling policies: pure functions from (context, previous state, now) to (decision, new state).

Every policy (Tokenfab's and the baselines in :mod:`controlplane.autoscale.baselines`) has the
same shape, so the live reconcile loop and the simulator drive the same code. Time is an
argument; nothing here reads a clock or does I/O.

Tokenfab's policy sizes capacity in tokens, not requests:

1. **Demand** (output and input tokens/s) = what the replicas serve plus the queue drained over
   ``drain_s``: a saturated request's served rate is its capacity, so the queue is the part of
   demand that served metrics cannot show.
2. **Forecast** a cold start ahead with :class:`~controlplane.autoscale.forecast.Holt`; on a
   burst (short window >= ``burst_ratio`` x level) the short-window demand is used at once.
3. **Need** = forecast / (per-replica capacity at the SLO x ``target_utilisation``), the
   capacity coming from the performance model (calibrated) for the observed prompt/output mix.
4. **Anti-flap**: scale up at once (bounded to ``max_step_up`` or doubling per decision); scale
   down only after need stayed below the current count for ``down_delay_s``, by at most
   ``max_step_down``, and only when N-1 replicas would still run at or under
   ``target_utilisation x (1 - hysteresis)``. The holds follow the measured burstiness: where
   the 90th percentile of the last hour's per-minute peaks (short window over level) stays under
   ``burst_ratio`` (bursts do not recur), they shrink to ``smooth_hold`` (0.3) of themselves.
5. **Guard rails**: never below the floor (the reserved target), never above the ceiling
   (max tokens/s, tenant budget, free fleet), no scale-down on incomplete metrics, an observed
   SLO breach with a queue adds a replica, and scale-to-zero only when opted in and idle for
   ``zero_after_s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from controlplane.autoscale.forecast import Holt, Seasonal, burst_rate, is_burst, minute_peaks, quantile
from controlplane.autoscale.signals import Signals, trim

DEFAULT_MAX_CONCURRENCY = 256  # a replica's concurrent requests (the engines' default batch bound)


@dataclass(frozen=True, slots=True)
class UnitCapacity:
    """What one new replica (of the type the scheduler would pick) sustains at the SLO."""

    output_tokens_per_s: float
    input_tokens_per_s: float
    max_concurrency: int
    cost_per_hour: float
    accelerator: str = ""
    tp: int = 1


@dataclass(frozen=True, slots=True)
class ScalingContext:
    request_id: str
    signals: Signals | None  # None: no metrics at all this tick
    current: int  # replicas counted for scaling: Ready + Starting
    ready: int
    floor: int
    ceiling: int
    capacity: Callable[[float, float], UnitCapacity]  # (mean input, mean output) -> per replica
    cold_start_s: float = 60.0
    ttft_target_s: float = 1.0
    tpot_target_s: float = 0.05
    mean_input_tokens: float = 1024.0  # the request's declared mix, used before traffic shows one
    mean_output_tokens: float = 256.0
    scale_to_zero: bool = False


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    request_id: str
    at: float
    policy: str
    current: int
    desired: int
    reason: str
    demand_output_tokens_per_s: float = math.nan
    demand_input_tokens_per_s: float = math.nan
    forecast_output_tokens_per_s: float = math.nan
    per_replica_output_tokens_per_s: float = math.nan
    predicted_utilisation: float = math.nan  # of the desired replicas at the forecast
    predicted_slo_ok: bool = True
    cost_per_hour: float = math.nan  # of the desired replicas
    inputs: dict[str, float] = field(default_factory=dict)

    @property
    def action(self) -> str:
        if self.desired > self.current:
            return "scale_up"
        if self.desired < self.current:
            return "scale_down"
        return "hold"


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    def initial(self) -> Any: ...

    def decide(self, ctx: ScalingContext, state: Any, now: float) -> tuple[ScalingDecision, Any]: ...


def clamp(desired: int, ctx: ScalingContext) -> tuple[int, str]:
    """Apply floor and ceiling; the second value explains a clamp ("" when none)."""
    if desired < ctx.floor:
        return ctx.floor, f"held at the floor of {ctx.floor} (reserved capacity)"
    if desired > ctx.ceiling:
        return ctx.ceiling, f"capped at {ctx.ceiling} (ceiling: max tokens/s, budget or free fleet)"
    return desired, ""


@dataclass(frozen=True, slots=True)
class TokenfabConfig:
    target_utilisation: float = 0.8
    hysteresis: float = 0.1
    drain_s: float = 20.0  # a queue should be served within this
    alpha: float = 0.3  # Holt level weight per tau_s
    beta: float = 0.1  # Holt trend weight per tau_s
    tau_s: float = 10.0
    short_window_s: float = 10.0
    burst_ratio: float = 1.5
    burst_hold_s: float = 600.0  # how long an observed burst keeps its capacity
    burst_windows: tuple[float, ...] = (10.0, 30.0, 60.0)
    ttft_slack: float = 0.5  # share of the TTFT target a burst may spend queueing
    burst_utilisation: float = 0.8  # the burst bound is a worst case: sized at this share of capacity
    down_delay_s: float = 300.0  # need must stay low this long before a scale-down
    max_step_up: int = 8  # replicas per decision, beyond doubling
    max_step_down: int = 1
    down_cooldown_s: float = 30.0  # between two scale-downs
    zero_after_s: float = 300.0
    mix_requests: float = 200.0  # finished requests the smoothed mix spans
    season_floor: float = (
        0.0  # > 0: need >= this x the steady need the coming slots peaked at on earlier days
    )
    season_lead_s: float = 900.0  # how far past a cold start the daily shape looks ahead
    # Measured burstiness: per minute, the peak of the short window over the smoothed level;
    # where the ``burstiness_quantile`` of the last ``burstiness_window_s`` of minutes stays
    # under ``burst_ratio`` (bursts do not recur), the holds above shrink to ``smooth_hold``
    # of themselves and the burst bound is sized at ``smooth_burst_utilisation``.
    burstiness_window_s: float = 3600.0
    burstiness_quantile: float = 0.9
    burstiness_min_minutes: int = 10  # fewer minutes seen: assume bursty (the configured holds)
    smooth_hold: float = 0.3  # share of down_delay_s and burst_hold_s kept on smooth demand
    smooth_hysteresis: float = 0.1
    smooth_burst_utilisation: float = 1.0


@dataclass(frozen=True, slots=True)
class TokenfabState:
    holt: Holt = field(default_factory=Holt)
    short: tuple[tuple[float, float], ...] = ()  # (time, output-token demand)
    arrivals: tuple[tuple[float, float], ...] = ()  # (time, demand incl. queue) for burst_hold_s
    needs: tuple[tuple[float, float], ...] = ()  # (time, replicas needed)
    last_demand_at: float = math.nan  # last time any demand was seen
    last_down_at: float = -math.inf
    mean_input: float = math.nan  # smoothed request mix
    mean_output: float = math.nan
    season: Seasonal = field(default_factory=Seasonal)  # the daily shape of the steady need
    peaks: tuple[tuple[float, float], ...] = ()  # (minute start, peak short window / level)


@dataclass(frozen=True, slots=True)
class TokenfabPolicy:
    config: TokenfabConfig = TokenfabConfig()
    name: str = "tokenfab"

    def initial(self) -> TokenfabState:
        return TokenfabState()

    def encode(self, state: TokenfabState) -> dict[str, Any]:
        """The state as plain JSON data (NaN and infinities included), for etcd: a new leader
        resumes the smoother and the windows instead of starting blind."""
        return {
            "holt": [state.holt.level, state.holt.trend, state.holt.at],
            "short": [list(p) for p in state.short],
            "arrivals": [list(p) for p in state.arrivals],
            "needs": [list(p) for p in state.needs],
            "last_demand_at": state.last_demand_at,
            "last_down_at": state.last_down_at,
            "mean_input": state.mean_input,
            "mean_output": state.mean_output,
            "season": [list(state.season.peaks), state.season.slot, state.season.peak],
            "peaks": [list(p) for p in state.peaks],
        }

    def decode(self, data: dict[str, Any]) -> TokenfabState:
        """The inverse of :meth:`encode`; KeyError/TypeError/ValueError on anything else."""

        def pairs(name: str) -> tuple[tuple[float, float], ...]:
            return tuple((float(t), float(v)) for t, v in data[name])

        level, trend, at = (float(x) for x in data["holt"])
        season = Seasonal()
        if "season" in data:  # states written before the daily shape existed have none
            peaks, slot, peak = data["season"]
            season = Seasonal(peaks=tuple(float(v) for v in peaks), slot=int(slot), peak=float(peak))
        return TokenfabState(
            holt=Holt(level, trend, at),
            short=pairs("short"),
            arrivals=pairs("arrivals"),
            needs=pairs("needs"),
            last_demand_at=float(data["last_demand_at"]),
            last_down_at=float(data["last_down_at"]),
            mean_input=float(data["mean_input"]),
            mean_output=float(data["mean_output"]),
            season=season,
            peaks=pairs("peaks") if "peaks" in data else (),  # absent in states written before it
        )

    def decide(
        self, ctx: ScalingContext, state: TokenfabState, now: float
    ) -> tuple[ScalingDecision, TokenfabState]:
        """The module docstring's five steps, one method each; pure."""
        sig = ctx.signals
        base = ScalingDecision(ctx.request_id, now, self.name, ctx.current, ctx.current, "")
        if sig is None or (sig.reporting == 0 and sig.replicas > 0):
            desired, clamped = clamp(ctx.current, ctx)
            why = "no metrics: holding (missing metrics are never read as zero demand)"
            return replace(base, desired=desired, reason=f"{why}; {clamped}" if clamped else why), state
        mean_in, mean_out = self.mix(ctx, sig, state, now)
        unit = ctx.capacity(mean_in, mean_out)
        demand = self.demand(sig, unit, mean_out)  # 1
        forecast = self.forecast(ctx, state, demand, unit, now)  # 2
        holds = self.holds(forecast.peaks)
        need = self.need(ctx, state, demand, forecast, unit, holds, now)  # 3
        last_demand = now if (demand.rate > 0 or sig.ongoing > 0) else state.last_demand_at
        new_state = TokenfabState(
            forecast.holt, forecast.short_history, need.arrivals, need.history, last_demand,
            state.last_down_at, mean_in, mean_out, need.season, forecast.peaks,
        )  # fmt: skip
        desired, reasons, new_state = self.anti_flap(
            ctx, sig, state, new_state, demand, forecast, need, holds, now
        )  # 4
        desired, reasons = self.guard_rails(ctx, sig, desired, reasons, last_demand, now)  # 5
        if desired < ctx.current:
            new_state = replace(new_state, last_down_at=now)
        expected = forecast.expected
        utilisation = (
            expected / (desired * unit.output_tokens_per_s)
            if desired and unit.output_tokens_per_s
            else math.nan
        )
        return (
            replace(
                base,
                desired=desired,
                reason="; ".join(reasons),
                demand_output_tokens_per_s=demand.output,
                demand_input_tokens_per_s=demand.input,
                forecast_output_tokens_per_s=expected,
                per_replica_output_tokens_per_s=unit.output_tokens_per_s,
                predicted_utilisation=utilisation,
                predicted_slo_ok=desired > 0 and utilisation <= 1.0 if expected > 0 else True,
                cost_per_hour=desired * unit.cost_per_hour,
                inputs={
                    "output_tokens_per_s": sig.output_tokens_per_s,
                    "input_tokens_per_s": sig.input_tokens_per_s,
                    "requests_per_s": sig.requests_per_s,
                    "running": float(sig.running),
                    "waiting": float(sig.waiting),
                    "kv_usage": sig.kv_usage,
                    "ttft_p95_s": sig.ttft_p95_s,
                    "tpot_p95_s": sig.tpot_p95_s,
                    "reporting": float(sig.reporting),
                    "mean_input_tokens": mean_in,
                    "mean_output_tokens": mean_out,
                    "backlog_output_tokens_per_s": demand.backlog,
                    "holt_level": forecast.holt.level,
                    "holt_trend_per_s": forecast.holt.trend,
                    "short_window": forecast.short,
                    "steady_need": need.steady,
                    "burst_need": need.burst,
                    "burst": float(forecast.burst),
                    "seasonal_need": need.seasonal,
                    "burstiness": holds.burstiness,
                    "down_delay_s": holds.down_delay_s,
                    "burst_hold_s": holds.burst_hold_s,
                },
            ),
            new_state,
        )

    def mix(self, ctx: ScalingContext, sig: Signals, state: TokenfabState, now: float) -> tuple[float, float]:
        """The request mix (mean prompt and output tokens), which moves the per-replica capacity.
        Smoothed per request, not per second (each tick weighs as the requests it saw, over
        ``mix_requests``), so that a quiet window of a few long requests does not swing the count."""
        seen_in, seen_out = sig.mean_tokens(ctx.mean_input_tokens, ctx.mean_output_tokens)
        if math.isnan(state.mean_input):
            return seen_in, seen_out
        seen = sig.requests_per_s * max(0.0, now - state.holt.at)
        w = 1 - math.exp(-seen / self.config.mix_requests)
        return (
            state.mean_input + w * (seen_in - state.mean_input),
            state.mean_output + w * (seen_out - state.mean_output),
        )

    def demand(self, sig: Signals, unit: UnitCapacity, mean_out: float) -> _Demand:
        """Step 1: served demand in output-equivalent tokens/s at the observed mix (the missing
        replicas' share extrapolated from the reporting ones, never taken as zero), and the queue
        as a backlog to drain within ``drain_s``: a saturated replica serves its capacity, so the
        queue is the part of demand served metrics cannot show. The backlog stays out of the
        smoother: it is not a rate, and smoothing it would overshoot once it drains."""
        scale = sig.replicas / sig.reporting if sig.reporting else 1.0
        out = sig.output_tokens_per_s * scale
        inp = sig.input_tokens_per_s * scale
        ratio = unit.input_tokens_per_s / unit.output_tokens_per_s if unit.output_tokens_per_s > 0 else 0.0
        rate = max(out, inp / ratio if ratio > 0 else 0.0)
        return _Demand(out, inp, rate, sig.waiting * mean_out / self.config.drain_s)

    def forecast(
        self, ctx: ScalingContext, state: TokenfabState, demand: _Demand, unit: UnitCapacity, now: float
    ) -> _Forecast:
        """Step 2: Holt's level and trend projected a cold start ahead; on a burst (the short
        window at ``burst_ratio`` x the level) the short window at once."""
        cfg = self.config
        holt = state.holt.update(demand.rate, now, alpha=cfg.alpha, beta=cfg.beta, tau_s=cfg.tau_s)
        history = trim((*state.short, (now, demand.rate)), now, cfg.short_window_s)
        short = sum(v for _, v in history) / len(history)
        ahead = holt.forecast(ctx.cold_start_s)
        burst = is_burst(short, holt.level, ratio=cfg.burst_ratio, floor=0.05 * unit.output_tokens_per_s)
        expected = max(ahead, short) if burst else max(ahead, holt.level)
        floor = 0.05 * unit.output_tokens_per_s
        ratio = short / max(holt.level, floor) if short > floor or holt.level > floor else math.nan
        peaks = minute_peaks(state.peaks, now, ratio, cfg.burstiness_window_s)
        return _Forecast(holt, history, short, burst, expected, peaks)

    def holds(self, peaks: tuple[tuple[float, float], ...]) -> _Holds:
        """How long needs and bursts are held, by the measured burstiness: the
        ``burstiness_quantile`` of the per-minute peaks (short window over level). Demand whose
        bursts do not recur (that quantile under ``burst_ratio``, over at least
        ``burstiness_min_minutes``) is followed closely: ``smooth_hold`` of the holds, the smooth
        hysteresis and burst utilisation. Otherwise, and before enough minutes are seen, the
        configured holds provision for bursts a cold start cannot chase."""
        cfg = self.config
        level = quantile([v for _, v in peaks], cfg.burstiness_quantile)
        if len(peaks) >= cfg.burstiness_min_minutes and level < cfg.burst_ratio:
            return _Holds(
                cfg.down_delay_s * cfg.smooth_hold, cfg.burst_hold_s * cfg.smooth_hold,
                cfg.smooth_burst_utilisation, cfg.smooth_hysteresis, level, True,
            )  # fmt: skip
        return _Holds(
            cfg.down_delay_s, cfg.burst_hold_s, cfg.burst_utilisation, cfg.hysteresis,
            level if math.isfinite(level) else math.nan, False,
        )  # fmt: skip

    def need(
        self,
        ctx: ScalingContext,
        state: TokenfabState,
        demand: _Demand,
        forecast: _Forecast,
        unit: UnitCapacity,
        holds: _Holds,
        now: float,
    ) -> _Need:
        """Step 3: replicas for the forecast at ``target_utilisation`` of the per-replica capacity,
        and for the recent arrival curve: bursts shorter than a cold start cannot be chased, only
        provisioned for, so every burst seen in ``burst_hold_s`` must drain within the TTFT slack
        (:func:`~controlplane.autoscale.forecast.burst_rate`)."""
        cfg = self.config
        per_replica = unit.output_tokens_per_s * cfg.target_utilisation
        steady = forecast.expected / per_replica if per_replica > 0 else math.inf
        arrivals = trim((*state.arrivals, (now, demand.rate + demand.backlog)), now, cfg.burst_hold_s)
        slack_s = cfg.ttft_slack * ctx.ttft_target_s
        held = tuple(p for p in arrivals if now - p[0] <= holds.burst_hold_s)
        rate, window = burst_rate(held, cfg.burst_windows, slack_s)
        burst_per_replica = unit.output_tokens_per_s * holds.burst_utilisation
        burst = rate / burst_per_replica if burst_per_replica > 0 else 0.0
        # The daily shape: what the coming slots needed on earlier days, a floor that pre-warms
        # before a ramp seen before (off when season_floor is 0).
        season = state.season.update(steady, now)
        seasonal = season.ahead(now, ctx.cold_start_s + cfg.season_lead_s) * cfg.season_floor
        need = max(steady, burst, seasonal if math.isfinite(seasonal) else 0.0)
        backlog = demand.backlog / unit.output_tokens_per_s if unit.output_tokens_per_s > 0 else 0.0
        history = trim((*state.needs, (now, need)), now, cfg.down_delay_s)
        return _Need(
            need, steady, burst, window, slack_s, per_replica, need + backlog, arrivals, history, season,
            seasonal if math.isfinite(seasonal) else 0.0,
        )  # fmt: skip

    def anti_flap(
        self,
        ctx: ScalingContext,
        sig: Signals,
        state: TokenfabState,
        new_state: TokenfabState,
        demand: _Demand,
        forecast: _Forecast,
        need: _Need,
        holds: _Holds,
        now: float,
    ) -> tuple[int, list[str], TokenfabState]:
        """Step 4: up at once (at most doubling + ``max_step_up``); an observed SLO breach that
        more replicas fix adds one; down only after the need peaked below N-1 (with hysteresis)
        for ``down_delay_s``, one step at a time, ``down_cooldown_s`` apart."""
        cfg = self.config
        current = ctx.current
        up_to = math.ceil(need.now - 1e-9)
        reasons: list[str] = []
        # A breach that more replicas fix: requests queue long enough to miss their TTFT, or
        # every replica has a queue while TPOT is missed (the batches are full). A slow TPOT with
        # no queue is the engine's own pace, and another replica would not change it.
        slo_breach = sig.waiting > 0 and (
            sig.ttft_p95_s > ctx.ttft_target_s
            or (sig.waiting >= max(1, sig.reporting) and sig.tpot_p95_s > ctx.tpot_target_s)
        )
        needs = need.history
        if slo_breach and up_to <= current and ctx.ready == current:
            up_to = current + 1
            # remembered as need, so the peak-hold keeps the extra replica for down_delay_s
            needs = (*needs[:-1], (now, max(need.need, float(up_to))))
            new_state = replace(new_state, needs=needs)
            reasons.append(
                f"observed SLO breach with {sig.waiting} waiting (TTFT p95 {sig.ttft_p95_s:.2f}s, "
                f"TPOT p95 {sig.tpot_p95_s * 1000:.0f}ms): one more replica"
            )
        desired = current
        unit_tps = need.per_replica / cfg.target_utilisation if cfg.target_utilisation else 0.0
        if up_to > current:
            desired = min(up_to, current + max(cfg.max_step_up, current))
            reasons.append(
                (
                    f"bursts of the last {holds.burst_hold_s:.0f}s ({need.burst_window:.0f}s window) "
                    f"need {need.burst:.2f} replicas to drain within {need.slack_s:.1f}s"
                    if need.burst > need.steady
                    else f"{'burst: ' if forecast.burst else ''}expected {forecast.expected:.0f} out tok/s "
                    f"in {ctx.cold_start_s:.0f}s needs {need.need:.2f} replicas"
                )
                + f" at {need.per_replica:.0f} tok/s each "
                f"({cfg.target_utilisation:.0%} of {unit_tps:.0f} at the SLO)"
                + (
                    f", plus {need.now - need.need:.2f} to drain {sig.waiting} queued requests"
                    if demand.backlog > 0
                    else ""
                )
            )
        elif current > 0:
            held = max(v for t, v in needs if now - t <= holds.down_delay_s)
            window_full = bool(state.needs) and now - state.needs[0][0] >= holds.down_delay_s * 0.95
            fits = held * (1 + holds.hysteresis) <= current - 1
            if not sig.complete:
                reasons.append("holding: metrics incomplete (" + "; ".join(sig.missing) + ")")
            elif fits and window_full and now - state.last_down_at < cfg.down_cooldown_s:
                reasons.append(f"holding: last scale-down {now - state.last_down_at:.0f}s ago")
            elif fits and window_full:
                desired = max(current - cfg.max_step_down, math.ceil(held * (1 + holds.hysteresis) - 1e-9))
                reasons.append(
                    f"need peaked at {held:.2f} replicas over {holds.down_delay_s:.0f}s; "
                    f"{desired} replicas still run at <= {cfg.target_utilisation:.0%} with "
                    f"{holds.hysteresis:.0%} margin" + holds.describe()
                )
            else:
                reasons.append(
                    f"holding: need {need.need:.2f} (peak {held:.2f} over the last "
                    f"{holds.down_delay_s:.0f}s) for {current} replicas" + holds.describe()
                )
        else:
            reasons.append("no demand")
        return desired, reasons, new_state

    def guard_rails(
        self,
        ctx: ScalingContext,
        sig: Signals,
        desired: int,
        reasons: list[str],
        last_demand: float,
        now: float,
    ) -> tuple[int, list[str]]:
        """Step 5: scale-to-zero (opted in, idle for ``zero_after_s``) and waking from it, then
        the floor (the reserved target) and the ceiling (max tokens/s, budget, free fleet)."""
        cfg = self.config
        if ctx.scale_to_zero and not math.isnan(last_demand) and now - last_demand >= cfg.zero_after_s:
            if sig.complete:
                desired = 0
                reasons = [f"idle for {now - last_demand:.0f}s: scale to zero (opted in)"]
        elif ctx.scale_to_zero and ctx.current == 0 and sig.ongoing > 0:
            desired = max(desired, 1)
            reasons.append(
                f"waking from zero: {sig.ongoing} requests wait out a ~{ctx.cold_start_s:.0f}s cold start"
            )
        floor = 0 if (ctx.scale_to_zero and desired == 0) else ctx.floor
        desired, clamped = clamp(desired, replace(ctx, floor=floor))
        if clamped:
            reasons.append(clamped)
        return desired, reasons


@dataclass(frozen=True, slots=True)
class _Demand:
    output: float  # served output tokens/s
    input: float  # served prompt tokens/s
    rate: float  # output-equivalent tokens/s at the observed mix
    backlog: float  # the queue, as output tokens/s to drain within drain_s


@dataclass(frozen=True, slots=True)
class _Forecast:
    holt: Holt
    short_history: tuple[tuple[float, float], ...]
    short: float
    burst: bool
    expected: float  # output-equivalent tokens/s a cold start ahead
    peaks: tuple[tuple[float, float], ...]  # per minute: peak short window / level


@dataclass(frozen=True, slots=True)
class _Holds:
    down_delay_s: float
    burst_hold_s: float
    burst_utilisation: float
    hysteresis: float
    burstiness: float  # the quantile of the per-minute peaks (nan before any)
    smooth: bool

    def describe(self) -> str:
        if not self.smooth:
            return ""
        return f" (smooth demand, burstiness {self.burstiness:.2f}: short holds)"


@dataclass(frozen=True, slots=True)
class _Need:
    need: float  # replicas: max(steady, burst)
    steady: float
    burst: float
    burst_window: float
    slack_s: float
    per_replica: float  # output tokens/s per replica at the utilisation target
    now: float  # need plus the backlog (scale-up only)
    arrivals: tuple[tuple[float, float], ...]
    history: tuple[tuple[float, float], ...]
    season: Seasonal
    seasonal: float  # the daily-shape floor (0 when off or not learned yet)
