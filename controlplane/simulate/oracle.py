"""Planning the clairvoyant schedule: the fewest replicas, window by window, that meet the SLO.

:func:`plan_oracle` walks the trace in windows of ``window_s`` (60 s). For each window it knows
the requests that will arrive in it and searches the smallest replica count ``n`` for which they
meet the SLO (at most ``(1 - goal)`` of them miss), by *running* the window: the replicas carried
over from the previous window (their queues and batches as they are), plus fresh ones or minus
drained ones (the least loaded, which keep finishing their work, as the simulator drains), with
the simulator's own engines (the shape the scheduler picks for the declared mix, the same
prefill chunk), its router (fewest outstanding tokens) and its feasibility rules. The window's
requests are then judged a TTFT target past its end: a request without its first token by then
missed; a running one whose pace is over the TPOT target missed. The search gallops from the
previous window's count (so a steady window costs two trials) and bisects, assuming more
replicas never hurt. The chosen run becomes the state the next window starts from.

The plan is then played back by :class:`~controlplane.autoscale.oracle.OraclePolicy` in the
ordinary simulator, so the oracle is scored exactly like every policy: the same trace, fleet,
scheduler placements, engines, cold starts and accounting.

Why it is a fair lower bound (and where it is not exact):

* It cannot be beaten by foresight: it knows every arrival and its lengths, and a window's
  replicas are asked for a cold start (plus one decision interval) ahead, so they are Ready when
  the window begins; no policy can do better than to have exactly the capacity a window needs.
* It pays what any policy pays: the cold start of every replica it starts, replicas from asking
  to stopping, the same drain rule (a drained replica costs until its batch is done).
* It holds nothing for safety: no utilisation target, no hysteresis, no scale-down delay; a
  window's replicas are released at the first decision after it.
* Not exact: the search is greedy (each window's minimum given the past, not a joint optimum over
  windows; a replica kept one window longer could, rarely, save two later), the count changes only
  at window boundaries (a 10 s burst holds its replicas for the whole minute), the judgement of a
  window's last requests ignores the next window's load, and cold starts are paid ahead even when
  a replica is only needed for one window. The first three can make the oracle slightly cheaper
  or dearer than a perfect one; the scored playback, not the planning run, gives its figures.
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from controlplane.executor.simengine import SimEngine, SimRequest
from controlplane.simulate.sim import Simulator, outstanding_tokens
from controlplane.simulate.sizing import warm_replicas
from controlplane.simulate.trace import Trace, TraceRequest


@dataclass(frozen=True, slots=True)
class OraclePlan:
    window_s: float
    replicas: tuple[int, ...]  # per window, from t = 0
    goal: float
    trials: int  # window runs tried in the search
    wall_s: float


@dataclass
class _State:
    active: list[SimEngine]
    draining: list[SimEngine]


def _clone(engine: SimEngine) -> SimEngine:
    twin = copy.copy(engine)
    twin.waiting = deque(copy.copy(r) for r in engine.waiting)
    twin.running = [copy.copy(r) for r in engine.running]
    twin.finished = []
    twin._events = deque(engine._events)  # the metrics history, as the original has it
    return twin


def _idle(engine: SimEngine) -> bool:
    return not engine.running and not engine.waiting


def plan_oracle(
    simulator: Simulator, trace: Trace, *, window_s: float = 60.0, goal: float = 0.99
) -> OraclePlan:
    """The replicas each window needs so that at least ``goal`` of its feasible requests meet the
    SLO, searched by running the window (see the module docstring)."""
    if not 0 < goal <= 1:
        raise ValueError(f"oracle goal must be in (0, 1], got {goal}")
    started = time.perf_counter()
    s = simulator.scenario
    unit = simulator.declared
    feasibility = simulator.feasibility
    ttft = simulator.ttft
    slots = sum(len(node.devices) // unit.tp for node in s.nodes if node.accelerator == unit.accelerator)
    cap = max(s.min_replicas, min(s.max_replicas, slots))
    kv_cap = simulator.new_engine(unit.accelerator, unit.tp, 0.0).profile.kv_capacity_tokens

    windows: list[list[TraceRequest]] = [[] for _ in range(int(trace.duration_s // window_s) + 1)]
    for request in trace.requests:
        tokens_in, tokens_out = max(1, request.input_tokens), max(1, request.output_tokens)
        if feasibility.check(tokens_in, tokens_out) is None and tokens_in + tokens_out <= kv_cap:
            windows[int(request.arrival_s // window_s)].append(request)

    def trial(state: _State, n: int, start: float, requests: list[TraceRequest]) -> tuple[int, int, _State]:
        """Run the window with ``n`` replicas: (misses, misses allowed, the state it leaves)."""
        active = [_clone(e) for e in state.active]
        draining = [_clone(e) for e in state.draining]
        if n > len(active):
            active += [simulator.new_engine(unit.accelerator, unit.tp, start) for _ in range(n - len(active))]
        elif n < len(active):
            order = sorted(active, key=outstanding_tokens)
            drop = {id(e) for e in order[: len(active) - n]}
            draining += [e for e in active if id(e) in drop]
            active = [e for e in active if id(e) not in drop]
        engines = active + draining
        judged: list[SimRequest] = []
        for i, request in enumerate(requests):
            sim = SimRequest(
                f"o{i}", max(1, request.input_tokens), max(1, request.output_tokens), request.arrival_s
            )
            for engine in engines:
                engine.advance(sim.arrival_s)
            min(active, key=outstanding_tokens).submit(sim)
            judged.append(sim)
        end = start + window_s
        for engine in engines:
            engine.advance(end)
        carried = _State([_clone(e) for e in active], [_clone(e) for e in draining if not _idle(e)])
        if not judged:
            return 0, 0, carried
        horizon = end + max(ttft.for_prompt(r.input_tokens) for r in judged)
        for engine in engines:
            engine.advance(horizon)
        missed = 0
        for r in judged:
            if r.first_token_s is None or r.first_token_s - r.arrival_s > ttft.for_prompt(r.input_tokens):
                missed += 1
            elif r.finish_s is not None:
                missed += simulator.misses(r)
            elif r.generated > 1 and (horizon - r.first_token_s) / (r.generated - 1) > s.tpot_target_s:
                missed += 1
        return missed, math.floor((1 - goal) * len(judged) + 1e-9), carried

    first = max(s.min_replicas, s.initial_replicas or warm_replicas(trace, unit))
    state = _State([simulator.new_engine(unit.accelerator, unit.tp, 0.0) for _ in range(first)], [])
    previous = first
    plan: list[int] = []
    trials = 0
    for k, requests in enumerate(windows):
        good, state, tried = _choose(trial, state, k * window_s, requests, previous, s.min_replicas, cap)
        plan.append(good)
        trials += tried
        previous = good
    return OraclePlan(window_s, tuple(plan), goal, trials, time.perf_counter() - started)


def _choose(
    trial: Callable[[_State, int, float, list[TraceRequest]], tuple[int, int, _State]],
    state: _State,
    start: float,
    requests: list[TraceRequest],
    previous: int,
    low: int,
    high: int,
) -> tuple[int, _State, int]:
    """One window: the count chosen, the state it leaves, and the trials it took.

    When the previous count misses the goal, the count is doubled while that still lowers the
    misses; if more replicas stop helping (a request the serving shape cannot serve in time,
    whatever the count) the goal becomes the fewest misses seen, so the search never buys the
    whole fleet for a miss no replica fixes."""
    tried: dict[int, tuple[int, int, _State]] = {}

    def misses(n: int) -> tuple[int, int]:
        if n not in tried:
            tried[n] = trial(state, n, start, requests)
        return tried[n][0], tried[n][1]

    first = max(low, min(high, previous))
    missed, allowed = misses(first)
    threshold = allowed
    if missed > allowed:
        n, best = first, missed
        while n < high:
            bigger = min(high, 2 * n + 1)
            missed, _ = misses(bigger)
            if missed <= allowed:
                break
            if missed >= best:
                threshold = best
                break
            n, best = bigger, missed
        else:
            threshold = best
    good = _search(lambda n: misses(n)[0] <= threshold, first, low, high)
    misses(good)
    return good, tried[good][2], len(tried)


def _search(ok: Callable[[int], bool], start: int, low: int, high: int) -> int:
    """The smallest ``n`` in ``[low, high]`` with ``ok(n)`` (``high`` when none), for a monotone
    ``ok``: gallop from ``start`` in the direction that matters, then bisect."""
    if ok(start):
        good, bad, step = start, low - 1, 1
        while good - step > bad:
            candidate = max(low, good - step)
            if ok(candidate):
                good = candidate
                if candidate == low:
                    return low
                step *= 2
            else:
                bad = candidate
                break
    else:
        bad, step = start, 1
        while True:
            candidate = min(high, bad + step)
            if candidate == bad:
                return high
            if ok(candidate):
                good = candidate
                break
            bad = candidate
            step *= 2
    while good - bad > 1:
        middle = (good + bad) // 2
        if ok(middle):
            good = middle
        else:
            bad = middle
    return good
