"""Sending a call to a replica, and to another one when the first fails before its first token.

The router picks a replica (never one already tried for this call, nor one ejected after a
connection failure in the last ``eject_s``); the call's tokens count as outstanding on it until
it ends. Failover rules:

* **non-streamed calls**: the client sees nothing until the whole answer, so any failure (refused
  or reset connection, a 5xx or 429 from the replica, a draining replica's 503, a timeout) is
  retried on another replica, up to ``max_attempts``. A 4xx other than 429 is the client's
  fault and is passed through.
* **streamed calls**: retried the same way until the replica's first event arrives (within
  ``first_token_timeout_s``). After it, the stream is the client's: a cut (replica killed,
  connection reset, no ``[DONE]``) ends it with an error event the client sees, never a silent
  second answer.

A replica that refuses or drops a connection is *ejected* for ``eject_s``, so a dead replica
costs one failed attempt, not one per call, until its record leaves the lane table.

Errors: :class:`UpstreamFailed` (every attempt failed; 502 to the client, or 503 when no replica
was left to try).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.openai import Call
from controlplane.gateway.router import Router
from controlplane.gateway.routes import Backend, Lane
from tokenfab.errors import PermanentError, TemporaryError
from tokenfab.logs import get_logger

log = get_logger("gateway.proxy")
DONE = b"data: [DONE]"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class UpstreamFailed(TemporaryError):
    """502/503: no replica answered the call (every attempt failed, or none was tried)."""

    def __init__(self, message: str, *, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Settings:
    max_attempts: int = 3
    first_token_timeout_s: float = 30.0
    request_timeout_s: float = 600.0
    eject_s: float = 5.0


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = False

    def take(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self.prompt_tokens = int(raw.get("prompt_tokens") or 0)
            self.completion_tokens = int(raw.get("completion_tokens") or 0)
            self.reported = True


@dataclass
class Answer:
    """A non-streamed reply, passed through as the replica wrote it."""

    backend: Backend
    status: int
    body: bytes
    usage: Usage


@dataclass
class Attempt:
    """Where a call was last sent and whether it has been metered, for a caller that hangs up
    before the answer (the gateway then meters the prompt the replica was given)."""

    backend: Backend | None = None
    metered: bool = False


@dataclass
class Stream:
    """An open upstream stream whose first event has arrived: send ``first``, then iterate
    :meth:`rest`; :meth:`close` always."""

    backend: Backend
    usage: Usage
    first: bytes = b""
    done: bool = False
    _reply: aiohttp.ClientResponse | None = None
    _release: Callable[[], None] = lambda: None
    _events: AsyncIterator[bytes] | None = field(default=None, repr=False)

    async def open(self, timeout_s: float) -> None:
        """Wait for the first event (ConnectionError: the stream ended before it)."""
        events = self._events = self._read()

        async def first() -> bytes | None:
            async for event in events:
                return event
            return None

        got = await asyncio.wait_for(first(), timeout_s)
        if got is None:
            raise ConnectionError("the stream ended before its first event")
        self.first = got

    async def rest(self) -> AsyncIterator[bytes]:
        assert self._events is not None
        async for event in self._events:
            yield event

    async def _read(self) -> AsyncIterator[bytes]:
        """Each further ``data:`` event (with its blank line); sets ``done`` at ``[DONE]``."""
        assert self._reply is not None
        async for line in self._reply.content:
            line = line.rstrip(b"\r\n")
            if not line.startswith(b"data:"):
                continue
            if line == DONE:
                self.done = True
                yield line + b"\n\n"
                return
            if b'"usage":{' in line or b'"usage": {' in line:
                with contextlib.suppress(ValueError):
                    self.usage.take(json.loads(line[5:]).get("usage"))
            yield line + b"\n\n"

    def close(self) -> None:
        if self._reply is not None:
            self._reply.close()
            self._reply = None
        self._release()
        self._release = lambda: None


class Upstreams:
    def __init__(self, router: Router, metrics: GatewayMetrics, *, settings: Settings | None = None) -> None:
        self.router = router
        self.metrics = metrics
        self.settings = settings or Settings()
        self.outstanding: dict[str, float] = {}  # replica -> Lane.work of the calls in flight (routing)
        self.outstanding_output: dict[str, float] = {}  # replica -> max_tokens in flight (admission)
        self._ejected: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self.on_release: Callable[[], None] = lambda: None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=5.0), auto_decompress=False
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def lane_load(self, lane: Lane) -> float:
        """Output tokens the lane's replicas may still have to produce for the calls in flight."""
        return sum(self.outstanding_output.get(b.replica_id, 0.0) for b in lane.backends)

    def _pick(self, lane: Lane, call: Call, tried: set[str]) -> tuple[Backend | None, float]:
        """The replica for the call and the call's load on it (output-equivalent tokens)."""
        now = time.monotonic()
        ejected = {r for r, until in self._ejected.items() if until > now}
        cost = lane.work(call.prompt_tokens, call.max_tokens)
        backend = self.router.choose(
            lane.backends, self.outstanding, cost=cost, affinity=call.affinity, exclude=tried | ejected
        )
        if backend is None and ejected - tried:  # only ejected ones left: better than nothing
            backend = self.router.choose(lane.backends, self.outstanding, cost=cost, exclude=tried)
        return backend, cost

    def _hold(self, backend: Backend, cost: float, output: float) -> Callable[[], None]:
        rid = backend.replica_id
        self.outstanding[rid] = self.outstanding.get(rid, 0.0) + cost
        self.outstanding_output[rid] = self.outstanding_output.get(rid, 0.0) + output
        self.metrics.child(self.metrics.outstanding, rid).set(self.outstanding[rid])
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self.outstanding.get(rid, 0.0) - cost
            left_output = self.outstanding_output.get(rid, 0.0) - output
            if left_output <= 1e-9:
                self.outstanding_output.pop(rid, None)
            else:
                self.outstanding_output[rid] = left_output
            if left <= 1e-9:
                self.outstanding.pop(rid, None)
                left = 0.0
            else:
                self.outstanding[rid] = left
            self.metrics.child(self.metrics.outstanding, rid).set(left)
            self.on_release()

        return release

    def _failed(self, backend: Backend, cause: str, *, eject: bool) -> None:
        self.metrics.child(self.metrics.retries, cause).inc()
        if eject:
            self._ejected[backend.replica_id] = time.monotonic() + self.settings.eject_s
        log.info("gateway.upstream_failed", replica=backend.replica_id, cause=cause)

    async def send(
        self, lane_of: Callable[[], Lane | None], call: Call, path: str, attempt: Attempt
    ) -> Answer:
        """A non-streamed call, retried on another replica after any upstream failure; ``attempt``
        records the replica it was last sent to."""
        assert self._session is not None
        tried: set[str] = set()
        body = call.upstream_body()
        last = "no Ready replica"
        for _ in range(self.settings.max_attempts):
            lane = lane_of()
            backend, cost = self._pick(lane, call, tried) if lane is not None else (None, 0.0)
            if backend is None:
                break
            tried.add(backend.replica_id)
            attempt.backend = backend
            release = self._hold(backend, cost, call.max_tokens)
            try:
                async with self._session.post(
                    backend.endpoint + path, data=body, headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout_s, connect=5.0),
                ) as reply:  # fmt: skip
                    data = await reply.read()
                    if reply.status in RETRY_STATUSES:
                        last = f"replica {backend.replica_id} answered {reply.status}"
                        self._failed(backend, f"status_{reply.status}", eject=False)
                        continue
                    usage = Usage()
                    if reply.status == 200:
                        with contextlib.suppress(ValueError, AttributeError):
                            usage.take(json.loads(data).get("usage"))
                    return Answer(backend, reply.status, data, usage)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"replica {backend.replica_id}: {type(exc).__name__}"
                self._failed(backend, type(exc).__name__, eject=not isinstance(exc, TimeoutError))
            finally:
                release()
        raise UpstreamFailed(last, status=503 if not tried else 502)

    async def open_stream(
        self, lane_of: Callable[[], Lane | None], call: Call, path: str, attempt: Attempt
    ) -> Stream:
        """A streamed call, retried on another replica until its first event arrives. Whatever
        ends an attempt before the stream is handed over (a failure, a refusal, the caller hanging
        up) closes its upstream connection and releases its load."""
        assert self._session is not None
        tried: set[str] = set()
        body = call.upstream_body()
        last = "no Ready replica"
        for _ in range(self.settings.max_attempts):
            lane = lane_of()
            backend, cost = self._pick(lane, call, tried) if lane is not None else (None, 0.0)
            if backend is None:
                break
            tried.add(backend.replica_id)
            attempt.backend = backend
            release = self._hold(backend, cost, call.max_tokens)
            reply: aiohttp.ClientResponse | None = None
            handed_over = False
            try:
                reply = await self._session.post(
                    backend.endpoint + path, data=body, headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(
                        total=None, connect=5.0, sock_read=self.settings.request_timeout_s
                    ),
                )  # fmt: skip
                if reply.status != 200:
                    data = await reply.read()
                    if reply.status in RETRY_STATUSES:
                        last = f"replica {backend.replica_id} answered {reply.status}"
                        self._failed(backend, f"status_{reply.status}", eject=False)
                        continue
                    raise UpstreamRejected(reply.status, data)
                stream = Stream(backend, Usage(), _reply=reply, _release=release)
                await stream.open(self.settings.first_token_timeout_s)
                handed_over = True
                return stream
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"replica {backend.replica_id}: {type(exc).__name__} before the first token"
                cut = isinstance(exc, TimeoutError)
                self._failed(backend, type(exc).__name__, eject=not cut)
            finally:
                if not handed_over:  # CancelledError included: the caller hung up
                    if reply is not None:
                        reply.close()
                    release()
        raise UpstreamFailed(last, status=503 if not tried else 502)


class UpstreamRejected(PermanentError):
    """The replica refused the call as the client's fault (a 4xx): passed through as it is."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"replica answered {status}")
        self.status = status
        self.body = body
