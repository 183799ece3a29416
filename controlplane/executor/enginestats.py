"""Engine metrics in vLLM's Prometheus names, both ways: the simulated engine exports them, and one
scraper turns any engine's ``/metrics`` page into the replica's stats.

Names follow vLLM's production metrics (https://docs.vllm.ai/en/stable/usage/metrics/):
``vllm:num_requests_running`` / ``vllm:num_requests_waiting`` (gauges), ``vllm:kv_cache_usage_perc``
(0..1; older releases call it ``vllm:gpu_cache_usage_perc``), ``vllm:prompt_tokens_total`` and
``vllm:generation_tokens_total`` (counters), ``vllm:time_to_first_token_seconds`` and
``vllm:time_per_output_token_seconds`` (histograms). vllm-ascend and vllm-metax are vLLM platform
plugins and export the same page. Rates and percentiles are computed over the interval between
two scrapes (counter and bucket differences), which is how Prometheus' ``rate()`` and
``histogram_quantile()`` read the same series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PROMPT_TOKENS = "vllm:prompt_tokens"  # counter family name (samples carry _total)
GENERATION_TOKENS = "vllm:generation_tokens"
TTFT = "vllm:time_to_first_token_seconds"
TPOT = "vllm:time_per_output_token_seconds"
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class Stats:
    input_tokens_per_second: float = 0.0
    output_tokens_per_second: float = 0.0
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    ttft_p50_s: float = math.nan
    ttft_p95_s: float = math.nan
    tpot_p50_s: float = math.nan
    tpot_p95_s: float = math.nan
    finished: int = 0


class EngineExporter:
    """The metrics page of the simulated engine, in vLLM's names."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        self.running = Gauge(RUNNING, "Requests in the batch.", labels, registry=self.registry)
        self.waiting = Gauge(WAITING, "Requests queued.", labels, registry=self.registry)
        self.kv = Gauge(KV_USAGE[0], "KV-cache usage, 1 is full.", labels, registry=self.registry)
        self.prompt = Counter(PROMPT_TOKENS, "Prompt tokens processed.", labels, registry=self.registry)
        self.generated = Counter(GENERATION_TOKENS, "Tokens generated.", labels, registry=self.registry)
        self.ttft = Histogram(
            TTFT, "Time to first token.", labels, buckets=TTFT_BUCKETS, registry=self.registry
        )
        self.tpot = Histogram(
            TPOT, "Time per output token.", labels, buckets=TPOT_BUCKETS, registry=self.registry
        )
        self.model = model

    def page(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@dataclass
class _Sample:
    at: float
    prompt: float
    generated: float
    ttft: dict[float, float]
    tpot: dict[float, float]


def _quantile(q: float, buckets: dict[float, float]) -> float:
    """histogram_quantile over cumulative bucket counts (upper bound -> count)."""
    bounds = sorted(buckets)
    if not bounds:
        return math.nan
    total = buckets[bounds[-1]]
    if total <= 0:
        return math.nan
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            within = (rank - previous_count) / max(count - previous_count, 1e-12)
            return previous_bound + (bound - previous_bound) * within
        previous_bound, previous_count = bound, count
    return previous_bound


@dataclass
class Scraper:
    """Turns successive ``/metrics`` pages into :class:`Stats` (rates over ``window_s``)."""

    window_s: float = 10.0
    _history: list[_Sample] = field(default_factory=list)

    def update(self, page: str, now: float) -> Stats:
        gauges: dict[str, float] = {}
        sample = _Sample(now, 0.0, 0.0, {}, {})
        for family in text_string_to_metric_families(page):
            for s in family.samples:
                if s.name in (RUNNING, WAITING, *KV_USAGE):
                    gauges[s.name] = gauges.get(s.name, 0.0) + s.value
                elif s.name == PROMPT_TOKENS + "_total":
                    sample.prompt += s.value
                elif s.name == GENERATION_TOKENS + "_total":
                    sample.generated += s.value
                elif s.name in (TTFT + "_bucket", TPOT + "_bucket"):
                    target = sample.ttft if s.name.startswith(TTFT) else sample.tpot
                    bound = float(s.labels["le"])
                    target[bound] = target.get(bound, 0.0) + s.value
        self._history.append(sample)
        while len(self._history) > 2 and self._history[1].at <= now - self.window_s:
            self._history.pop(0)
        base = self._history[0]
        span = now - base.at
        diff_ttft = {b: c - base.ttft.get(b, 0.0) for b, c in sample.ttft.items()}
        diff_tpot = {b: c - base.tpot.get(b, 0.0) for b, c in sample.tpot.items()}
        kv = next((gauges[name] for name in KV_USAGE if name in gauges), 0.0)
        return Stats(
            input_tokens_per_second=(sample.prompt - base.prompt) / span if span > 0 else 0.0,
            output_tokens_per_second=(sample.generated - base.generated) / span if span > 0 else 0.0,
            running=int(gauges.get(RUNNING, 0)),
            waiting=int(gauges.get(WAITING, 0)),
            kv_cache_usage=kv,
            ttft_p50_s=_quantile(0.5, diff_ttft),
            ttft_p95_s=_quantile(0.95, diff_ttft),
            tpot_p50_s=_quantile(0.5, diff_tpot),
            tpot_p95_s=_quantile(0.95, diff_tpot),
            finished=int(diff_ttft.get(math.inf, 0.0)),
        )
