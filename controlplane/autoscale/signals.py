"""Demand signals: per-replica metric samples aggregated per capacity request, over windows.

A replica's metrics come from its engine (vLLM's names, or the simulated engine's): input and
output tokens/s, running and waiting requests, KV-cache usage, TTFT and TPOT p95. The autoscaler
sees one :class:`Signals` per request and tick, summed over its Ready replicas.

Missing is not zero: a Ready replica without a fresh sample (older than ``stale_after_s``) makes
the request's signals *incomplete*, and :class:`Signals.missing` says which replicas and why. A
policy must never read an incomplete signal as low demand (the guard rail in the policy refuses
to scale down on it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    replica_id: str
    at: float  # seconds on the autoscaler's clock
    input_tokens_per_s: float
    output_tokens_per_s: float
    requests_per_s: float  # finished requests per second
    running: int
    waiting: int
    kv_usage: float  # 0..1
    ttft_p95_s: float = math.nan
    tpot_p95_s: float = math.nan
    # prompt and output tokens of the requests that finished in the window, per second (vLLM's
    # request_prompt_tokens / request_generation_tokens histogram sums); nan when not exported
    finished_input_tokens_per_s: float = math.nan
    finished_output_tokens_per_s: float = math.nan


@dataclass(frozen=True, slots=True)
class Signals:
    """One request's demand at one moment, summed over its Ready replicas."""

    at: float
    replicas: int  # Ready replicas expected to report
    reporting: int  # of which had a fresh sample
    input_tokens_per_s: float
    output_tokens_per_s: float
    requests_per_s: float
    running: int
    waiting: int  # includes requests queued in front of the replicas (router, scale from zero)
    kv_usage: float  # mean over reporting replicas
    ttft_p95_s: float  # worst replica; nan when nothing finished
    tpot_p95_s: float
    missing: tuple[str, ...] = ()  # "replica-id: reason"
    finished_input_tokens_per_s: float = math.nan  # nan unless every reporting replica has it
    finished_output_tokens_per_s: float = math.nan

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def ongoing(self) -> int:
        return self.running + self.waiting

    def mean_tokens(self, fallback_input: float, fallback_output: float) -> tuple[float, float]:
        """Mean prompt and output tokens per request (the fallbacks without traffic).

        From the finished requests' own lengths when the engines export them: dividing the
        tokens processed per second by the requests finished per second is skewed whenever the
        two are out of step (in a burst the prompts are prefilled long before those requests
        finish; on the code trace that estimate reached 34k-token means for prompts of at most
        7.4k). The rate ratio is the fallback, for engines that export only the counters."""
        if self.requests_per_s <= 0 or self.output_tokens_per_s <= 0:
            return fallback_input, fallback_output
        if math.isfinite(self.finished_input_tokens_per_s) and math.isfinite(
            self.finished_output_tokens_per_s
        ):
            return (
                max(1.0, self.finished_input_tokens_per_s / self.requests_per_s),
                max(1.0, self.finished_output_tokens_per_s / self.requests_per_s),
            )
        return (
            max(1.0, self.input_tokens_per_s / self.requests_per_s),
            max(1.0, self.output_tokens_per_s / self.requests_per_s),
        )


def _worst(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else math.nan


def aggregate(
    now: float,
    ready: Sequence[str],
    samples: Iterable[ReplicaSample],
    *,
    stale_after_s: float = 15.0,
    queued: int = 0,
) -> Signals:
    """Sum the freshest sample of each Ready replica; report the ones that are missing or stale."""
    latest: dict[str, ReplicaSample] = {}
    for sample in samples:
        if sample.replica_id in ready and (
            sample.replica_id not in latest or sample.at > latest[sample.replica_id].at
        ):
            latest[sample.replica_id] = sample
    missing: list[str] = []
    fresh: list[ReplicaSample] = []
    for replica_id in ready:
        found = latest.get(replica_id)
        if found is None:
            missing.append(f"{replica_id}: no metrics yet")
        elif now - found.at > stale_after_s:
            missing.append(f"{replica_id}: metrics {now - found.at:.0f}s old")
        else:
            fresh.append(found)
    return Signals(
        at=now,
        replicas=len(ready),
        reporting=len(fresh),
        input_tokens_per_s=sum(s.input_tokens_per_s for s in fresh),
        output_tokens_per_s=sum(s.output_tokens_per_s for s in fresh),
        requests_per_s=sum(s.requests_per_s for s in fresh),
        running=sum(s.running for s in fresh),
        waiting=sum(s.waiting for s in fresh) + queued,
        kv_usage=sum(s.kv_usage for s in fresh) / len(fresh) if fresh else 0.0,
        ttft_p95_s=_worst(s.ttft_p95_s for s in fresh),
        tpot_p95_s=_worst(s.tpot_p95_s for s in fresh),
        missing=tuple(missing),
        finished_input_tokens_per_s=sum(s.finished_input_tokens_per_s for s in fresh) if fresh else math.nan,
        finished_output_tokens_per_s=sum(s.finished_output_tokens_per_s for s in fresh)
        if fresh
        else math.nan,
    )


def window_mean(history: Sequence[tuple[float, float]], now: float, window_s: float) -> float:
    """Mean of the ``(time, value)`` points within ``window_s`` of ``now`` (nan when none)."""
    values = [v for t, v in history if now - t <= window_s]
    return sum(values) / len(values) if values else math.nan


def trim(
    history: tuple[tuple[float, float], ...], now: float, keep_s: float
) -> tuple[tuple[float, float], ...]:
    start = 0
    while start < len(history) and now - history[start][0] > keep_s:
        start += 1
    return history[start:]
