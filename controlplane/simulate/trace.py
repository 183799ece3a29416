"""Request traces in the Azure LLM inference 2023 CSV format, and a synthetic generator.

The format (Azure Public Dataset, "AzureLLMInferenceTrace"; Patel et al., *Splitwise*, ISCA 2024)
has one request per line: ``TIMESTAMP`` (``2024-02-29 09:30:00.1234567``, up to 7 fractional
digits), ``ContextTokens`` and ``GeneratedTokens``. :func:`load_trace` validates every line and
names the line of the first problem: a missing column, a bad timestamp, negative or non-integer
token counts, or timestamps that go backwards.

Replay options: ``time_scale`` stretches time (0.5 replays twice as fast, doubling the request
rate); ``loops`` repeats the trace back to back.

:func:`synthetic_trace` makes bursty demand for the demo without any recorded data: a slowly
drifting base rate (a sine over ``period_s``), Poisson arrivals, and bursts (a Markov-modulated
on/off process multiplying the rate) with log-normal prompt and output lengths.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tokenfab.errors import PermanentError

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


class TraceError(PermanentError, ValueError):
    """A malformed trace; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    arrival_s: float  # seconds from the trace's first request
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    requests: tuple[TraceRequest, ...]

    @property
    def duration_s(self) -> float:
        return self.requests[-1].arrival_s if self.requests else 0.0

    def replay(self, *, time_scale: float = 1.0, loops: int = 1, gap_s: float = 1.0) -> Trace:
        if not time_scale > 0 or not math.isfinite(time_scale):
            raise TraceError(f"time_scale must be a positive number, got {time_scale}")
        if loops < 1:
            raise TraceError(f"loops must be at least 1, got {loops}")
        out: list[TraceRequest] = []
        period = self.duration_s * time_scale + gap_s
        for loop in range(loops):
            offset = loop * period
            out.extend(
                TraceRequest(offset + r.arrival_s * time_scale, r.input_tokens, r.output_tokens)
                for r in self.requests
            )
        suffix = "" if time_scale == 1 and loops == 1 else f" (x{time_scale:g} time, {loops} loops)"
        return Trace(self.name + suffix, tuple(out))


def _timestamp(text: str) -> datetime:
    text = text.strip()
    head, dot, frac = text.partition(".")
    # Python parses at most 6 fractional digits; the trace has 7.
    return datetime.fromisoformat(head + (dot + frac[:6] if dot else ""))


def _count(value: str | None, column: str, where: str) -> int:
    if value is None or value.strip() == "":
        raise TraceError(f"{where}: {column} is empty")
    try:
        count = int(value)
    except ValueError:
        raise TraceError(f"{where}: {column} must be an integer, got {value!r}") from None
    if count < 0:
        raise TraceError(f"{where}: {column} must not be negative, got {count}")
    return count


def load_trace(path: str | Path) -> Trace:
    """Parse and validate a trace file; raises :class:`TraceError` naming the first bad line."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise TraceError(
                f"{path}:1: missing column(s) {', '.join(missing)} (header: {', '.join(header)})"
            )
        requests: list[TraceRequest] = []
        start: datetime | None = None
        previous = -math.inf
        for row in reader:
            where = f"{path}:{reader.line_num}"
            stamp = row.get("TIMESTAMP")
            if stamp is None or not stamp.strip():
                raise TraceError(f"{where}: TIMESTAMP is empty")
            try:
                when = _timestamp(stamp)
            except ValueError:
                raise TraceError(f"{where}: TIMESTAMP {stamp!r} is not a timestamp") from None
            if start is None:
                start = when
            offset = (when - start).total_seconds()
            if offset < previous:
                raise TraceError(
                    f"{where}: timestamps are not sorted ({stamp} is earlier than the line before)"
                )
            previous = offset
            input_tokens = _count(row.get("ContextTokens"), "ContextTokens", where)
            output_tokens = _count(row.get("GeneratedTokens"), "GeneratedTokens", where)
            requests.append(TraceRequest(offset, input_tokens, output_tokens))
    if not requests:
        raise TraceError(f"{path}: the trace has no requests")
    return Trace(path.stem, tuple(requests))


@dataclass(frozen=True, slots=True)
class SyntheticDemand:
    """Parameters of :func:`synthetic_trace` (and of the demo's live demand generator)."""

    base_rate: float = 2.0  # requests/s at the middle of the sine
    drift: float = 0.5  # relative amplitude of the slow sine
    period_s: float = 600.0
    burst_factor: float = 3.0  # rate multiplier during a burst
    burst_every_s: float = 180.0  # mean time between bursts
    burst_length_s: float = 30.0  # mean burst length
    mean_input_tokens: float = 1000.0
    mean_output_tokens: float = 200.0
    sigma: float = 0.8  # log-normal spread of lengths
    max_tokens: int = 8192


class SyntheticSource:
    """An endless stream of requests following :class:`SyntheticDemand`, seeded."""

    def __init__(self, params: SyntheticDemand, seed: int = 0) -> None:
        self.params = params
        self._rng = random.Random(seed)
        self._now = 0.0
        self._burst_until = -1.0
        self._next_burst = self._rng.expovariate(1 / params.burst_every_s)

    def rate(self, t: float) -> float:
        p = self.params
        base = p.base_rate * (1 + p.drift * math.sin(2 * math.pi * t / p.period_s))
        return base * (p.burst_factor if t < self._burst_until else 1.0)

    def _length(self, mean: float) -> int:
        mu = math.log(mean) - self.params.sigma**2 / 2  # log-normal with this mean
        return max(1, min(self.params.max_tokens, round(self._rng.lognormvariate(mu, self.params.sigma))))

    def __iter__(self) -> Iterator[TraceRequest]:
        p = self.params
        peak = p.base_rate * (1 + p.drift) * p.burst_factor
        while True:  # thinning (Lewis-Shedler) of a Poisson process at the peak rate
            self._now += self._rng.expovariate(peak)
            if self._now >= self._next_burst:
                self._burst_until = self._now + self._rng.expovariate(1 / p.burst_length_s)
                self._next_burst = self._burst_until + self._rng.expovariate(1 / p.burst_every_s)
            if self._rng.random() * peak <= self.rate(self._now):
                yield TraceRequest(
                    self._now, self._length(p.mean_input_tokens), self._length(p.mean_output_tokens)
                )


def synthetic_trace(params: SyntheticDemand, duration_s: float, seed: int = 0) -> Trace:
    requests: list[TraceRequest] = []
    for request in SyntheticSource(params, seed):
        if request.arrival_s > duration_s:
            break
        requests.append(request)
    return Trace(f"synthetic-{seed}", tuple(requests))
