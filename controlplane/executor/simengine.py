"""The simulated engine: a continuous-batching LLM server at the performance model's rates.

A product feature (demo, simulator, tests), with the same observable behaviour as a real engine:
requests queue, are admitted while the batch has room and the KV cache can hold their whole
context, get their prompt processed in chunks that share each engine step with decoding (as
vLLM's chunked prefill does), then emit one token per step until done. Step time comes from
:class:`~controlplane.catalog.perf.EngineProfile`, so a simulated replica is exactly as fast as
the scheduler predicts (times a calibration factor, to model an engine faster or slower than
predicted). Purely computational: time is an argument, never read from a clock.

Metrics (what a real replica exports): input and output tokens/s over a window, running and
waiting requests, KV-cache usage, and TTFT and TPOT percentiles of finished requests.

Prefix caching (off unless ``prefix_cache_blocks`` > 0), modelled on vLLM's automatic prefix
caching: a request carries the chained hashes of its prompt's full blocks of
``prefix_block_tokens`` tokens; when it joins the batch, the leading blocks already in the cache
are not computed again (``cached_tokens``; at least one prompt token is always computed, as the
engine needs it for the first output token), and its blocks enter an LRU of bounded size.
Blocks are cached as the request is admitted, a simplification of vLLM caching them as they
are computed.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from controlplane.catalog.perf import EngineProfile


@dataclass
class SimRequest:
    request_id: str
    input_tokens: int
    output_tokens: int
    arrival_s: float
    prefilled: int = 0
    generated: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None
    block_hashes: tuple[int, ...] = ()  # chained hashes of the prompt's full blocks (prefix cache)
    cached_tokens: int = 0  # prompt tokens found in the prefix cache at admission

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        if self.finish_s is None or self.first_token_s is None or self.output_tokens <= 1:
            return None
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1)


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    input_tokens_per_s: float
    output_tokens_per_s: float
    running: int
    waiting: int
    kv_usage: float  # 0..1
    ttft_p50_s: float
    ttft_p95_s: float
    tpot_p50_s: float
    tpot_p95_s: float
    finished: int


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class SimEngine:
    profile: EngineProfile
    max_batch: int = 256
    chunk_tokens: int = 2048  # prompt tokens per step (vLLM's max_num_batched_tokens scale)
    speed: float = 1.0  # calibration: >1 is faster than predicted
    now: float = 0.0
    waiting: deque[SimRequest] = field(default_factory=deque)
    running: list[SimRequest] = field(default_factory=list)
    finished: list[SimRequest] = field(default_factory=list)
    _events: deque[tuple[float, int, int]] = field(default_factory=deque)  # (time, input, output tokens)
    prompt_tokens_total: int = 0  # cumulative counters, as a real engine exports them
    generated_tokens_total: int = 0
    prefix_cache_blocks: int = 0  # 0: no prefix cache
    prefix_block_tokens: int = 16
    _prefix: OrderedDict[int, None] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.profile.kv_capacity_tokens <= 0:
            raise ValueError("profile: the model's weights leave no room for a KV cache")
        self.max_batch = min(self.max_batch, self.profile.max_batch)

    @property
    def kv_used_tokens(self) -> int:
        return sum(r.input_tokens + r.output_tokens for r in self.running)

    def submit(self, request: SimRequest) -> None:
        if request.input_tokens < 1 or request.output_tokens < 1:
            raise ValueError(
                f"request {request.request_id}: input_tokens and output_tokens must be at least 1"
            )
        total = request.input_tokens + request.output_tokens
        if total > self.profile.kv_capacity_tokens:
            raise ValueError(
                f"request {request.request_id}: {total} tokens exceed the KV cache "
                f"({self.profile.kv_capacity_tokens} tokens)"
            )
        if self.waiting and request.arrival_s < self.waiting[-1].arrival_s:
            raise ValueError(f"request {request.request_id}: submit requests in arrival order")
        self.waiting.append(request)

    def _admit(self) -> None:
        used = self.kv_used_tokens
        while self.waiting and len(self.running) < self.max_batch and self.waiting[0].arrival_s <= self.now:
            head = self.waiting[0]
            need = head.input_tokens + head.output_tokens
            if used + need > self.profile.kv_capacity_tokens:
                break  # first come, first served: no overtaking
            admitted = self.waiting.popleft()
            self._use_prefix_cache(admitted)
            self.running.append(admitted)
            used += need

    def _use_prefix_cache(self, request: SimRequest) -> None:
        if self.prefix_cache_blocks <= 0 or not request.block_hashes:
            return
        hits = 0
        for block in request.block_hashes:
            if block not in self._prefix:
                break
            hits += 1
        request.cached_tokens = min(hits * self.prefix_block_tokens, request.input_tokens - 1)
        request.prefilled = max(request.prefilled, request.cached_tokens)
        for block in request.block_hashes:
            self._prefix[block] = None
            self._prefix.move_to_end(block)
        while len(self._prefix) > self.prefix_cache_blocks:
            self._prefix.popitem(last=False)

    def step(self) -> float:
        """One engine step from ``now``; returns its duration (0 when idle)."""
        self._admit()
        if not self.running:
            return 0.0
        budget = self.chunk_tokens
        prefill_now: list[tuple[SimRequest, int]] = []
        decoding = [r for r in self.running if r.prefilled >= r.input_tokens]
        for request in self.running:
            if request.prefilled < request.input_tokens and budget > 0:
                take = min(budget, request.input_tokens - request.prefilled)
                prefill_now.append((request, take))
                budget -= take
        prefill_tokens = sum(t for _, t in prefill_now)
        contexts = [r.input_tokens + r.generated for r in decoding]
        mean_context = sum(contexts) / len(contexts) if contexts else 0.0
        duration = self.profile.step_time(len(decoding), mean_context, prefill_tokens) / self.speed
        self.now += duration
        out_tokens = 0
        for request in decoding:
            request.generated += 1
            out_tokens += 1
            if request.generated == 1:
                request.first_token_s = self.now
        for request, take in prefill_now:
            request.prefilled += take
            if request.prefilled >= request.input_tokens and request.generated == 0:
                request.generated = 1  # the prefill step emits the first token
                request.first_token_s = self.now
                out_tokens += 1
        done = [r for r in self.running if r.generated >= r.output_tokens]
        for request in done:
            request.finish_s = self.now
            self.finished.append(request)
        self.running = [r for r in self.running if r.generated < r.output_tokens]
        self._events.append((self.now, prefill_tokens, out_tokens))
        while self._events[0][0] < self.now - 120.0:  # bounded history for metrics()
            self._events.popleft()
        self.prompt_tokens_total += prefill_tokens
        self.generated_tokens_total += out_tokens
        return duration

    def pop_finished(self, before: float | None = None) -> list[SimRequest]:
        """Hand over (and forget) the finished requests (those finished before ``before``, when
        given): a long-running server calls this so that memory stays bounded; :meth:`metrics`
        then sees only what was not popped."""
        if before is None:
            done, self.finished = self.finished, []
            return done
        done = [r for r in self.finished if r.finish_s is not None and r.finish_s < before]
        self.finished = [r for r in self.finished if r.finish_s is None or r.finish_s >= before]
        return done

    def _admission_blocked(self) -> bool:
        """True when the head of the queue cannot join the batch before a running request ends."""
        if len(self.running) >= self.max_batch:
            return True
        head = self.waiting[0]
        return self.kv_used_tokens + head.input_tokens + head.output_tokens > self.profile.kv_capacity_tokens

    def _decode_run(self, until: float) -> float:
        """Fast path: while every running request is decoding and nobody can be admitted, the
        batch is the same step after step, so ``k`` steps are taken at once (to the next finish,
        arrival or ``until``). Step time uses the context at the run's midpoint; tokens, finish
        times and counters are exactly those of ``k`` single steps up to that approximation.
        Returns 0.0 when the fast path does not apply."""
        if not self.running or any(r.prefilled < r.input_tokens for r in self.running):
            return 0.0
        limit = until
        if self.waiting:
            if self.waiting[0].arrival_s <= self.now and not self._admission_blocked():
                return 0.0
            if self.waiting[0].arrival_s > self.now and not self._admission_blocked():
                limit = min(limit, self.waiting[0].arrival_s)
        remaining = min(r.output_tokens - r.generated for r in self.running)
        contexts = sum(r.input_tokens + r.generated for r in self.running) / len(self.running)
        dt = self.profile.step_time(len(self.running), contexts, 0.0) / self.speed
        k = min(remaining, max(1, math.ceil((limit - self.now) / dt)))
        if k <= 1:
            return 0.0
        dt = self.profile.step_time(len(self.running), contexts + k / 2, 0.0) / self.speed
        self.now += k * dt
        for request in self.running:
            request.generated += k
        done = [r for r in self.running if r.generated >= r.output_tokens]
        for request in done:
            request.finish_s = self.now
            self.finished.append(request)
        out_tokens = k * len(self.running)
        self.running = [r for r in self.running if r.generated < r.output_tokens]
        self._events.append((self.now, 0, out_tokens))
        while self._events[0][0] < self.now - 120.0:
            self._events.popleft()
        self.generated_tokens_total += out_tokens
        return k * dt

    def advance(self, until: float) -> None:
        """Run steps until ``until`` (or until idle, then jump the clock)."""
        while self.now < until:
            if self._decode_run(until) > 0.0:
                continue
            if self.step() == 0.0:  # idle: jump to the next arrival (or to the end)
                nxt = self.waiting[0].arrival_s if self.waiting else until
                self.now = min(until, max(nxt, self.now))
                if not self.waiting or nxt >= until:
                    self.now = until
                    return

    def metrics(self, window_s: float = 10.0) -> EngineMetrics:
        start = self.now - window_s
        while self._events and self._events[0][0] < start - 60:  # keep a bounded history
            self._events.popleft()
        recent = [e for e in self._events if e[0] >= start]
        span = max(min(window_s, self.now), 1e-9)
        done = [r for r in self.finished if r.finish_s is not None and r.finish_s >= start]
        ttfts = [r.ttft_s for r in done if r.ttft_s is not None]
        tpots = [r.tpot_s for r in done if r.tpot_s is not None]
        return EngineMetrics(
            input_tokens_per_s=sum(e[1] for e in recent) / span,
            output_tokens_per_s=sum(e[2] for e in recent) / span,
            running=len(self.running),
            waiting=sum(1 for r in self.waiting if r.arrival_s <= self.now),
            kv_usage=self.kv_used_tokens / self.profile.kv_capacity_tokens,
            ttft_p50_s=_percentile(ttfts, 0.5),
            ttft_p95_s=_percentile(ttfts, 0.95),
            tpot_p50_s=_percentile(tpots, 0.5),
            tpot_p95_s=_percentile(tpots, 0.95),
            finished=len(done),
        )
