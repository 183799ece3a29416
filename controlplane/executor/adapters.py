"""Engine adapters: what runs inside a replica actor. Both serve the same surface, an
OpenAI-compatible HTTP server with ``/health`` and a vLLM-named ``/metrics`` page, so routers,
load generators and the metrics scraper never care which one they talk to.

* :class:`SimulatedEngineServer` runs :class:`~controlplane.executor.simengine.SimEngine` in real
  time (a 20 ms tick advances the engine to the wall clock) behind ``POST /v1/completions`` and
  ``POST /v1/chat/completions``, plain or streamed (``"stream": true``: one server-sent event per
  tick that produced tokens, then a ``usage`` event when ``stream_options.include_usage``).
  Prompts are counted, not read: a list of token ids counts one per id (the OpenAI API accepts
  token arrays), a string (or a chat message's content) about four characters per token. The
  reply's ``usage`` is real (with ``prompt_tokens_details.cached_tokens`` from the engine's
  prefix cache, which sees the prompt in blocks of 16 tokens: 16 ids or 64 characters); its
  text is empty.
* :class:`ProcessEngine` starts the real server (``vllm serve`` and friends) from the command
  the executor expanded itself (catalog + operator templates; nothing from the wire), in its own
  process group, waits for ``/health`` and stops it with SIGTERM, then SIGKILL after the drain.
  The kernel sends it SIGTERM if the process that started it (the replica's actor) dies, however
  it dies (:func:`tokenfab.parent.exec_with_parent`: no ``preexec_fn`` in a threaded actor).

Both listen on and advertise :func:`~controlplane.executor.engines.advertised_host`: the node IP
the agent passed down to its actors (Kubernetes: reachable by the gateway on other nodes), else
loopback (``tokenfab up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Protocol

from controlplane.catalog.perf import EngineProfile
from controlplane.executor import httpio
from controlplane.executor.engines import LaunchSpec, advertised_host, url_host
from controlplane.executor.enginestats import EngineExporter, Scraper, Stats
from controlplane.executor.simengine import SimEngine, SimRequest
from tokenfab.errors import PermanentError
from tokenfab.parent import exec_with_parent
from tokenfab.v1 import executor_pb2

TICK_S = 0.02


class EngineStartError(PermanentError):
    """The engine did not come up; the message says why (shown in the replica's status)."""


class Engine(Protocol):
    endpoint: str

    async def start(self) -> None: ...

    async def stats(self) -> Stats: ...

    async def stop(self, drain_s: float) -> None: ...


def _count_prompt(prompt: object) -> int:
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, str):
        return max(1, math.ceil(len(prompt) / 4))
    raise ValueError("prompt: a string or a list of token ids")


def _count_messages(messages: object) -> int:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: a non-empty list of {role, content}")
    chars = 0
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content: a string")
        chars += len(content) + 4  # the role and the template's separators
    return max(1, math.ceil(chars / 4))


BLOCK_TOKENS = 16


def _prefix_blocks(payload: dict[str, object], *, chat: bool) -> tuple[int, ...]:
    """Chained hashes of the prompt's full blocks, as a prefix cache keys them."""
    if chat:
        messages = payload.get("messages")
        assert isinstance(messages, list)
        prompt: object = "".join(
            f"<{m.get('role')}>{m.get('content')}" for m in messages if isinstance(m, dict)
        )
    else:
        prompt = payload.get("prompt")
    size = BLOCK_TOKENS if isinstance(prompt, list) else BLOCK_TOKENS * 4
    if not isinstance(prompt, list | str):
        return ()
    hashes, previous = [], 0
    for start in range(0, len(prompt) - size + 1, size):
        block = prompt[start : start + size]
        previous = hash((previous, tuple(block) if isinstance(block, list) else block))
        hashes.append(previous)
    return tuple(hashes)


class SimulatedEngineServer:
    def __init__(self, model: str, config: executor_pb2.SimulatedEngine) -> None:
        known = {f.name for f in fields(EngineProfile)}
        raw = json.loads(config.profile_json)
        self.profile = EngineProfile(**{k: v for k, v in raw.items() if k in known})
        self.model = model
        self.config = config
        self.endpoint = ""
        self.accepting = False
        self._engine = SimEngine(
            self.profile,
            max_batch=config.max_batch or 256,
            chunk_tokens=config.chunk_tokens or 2048,
            speed=config.speed or 1.0,
            prefix_block_tokens=BLOCK_TOKENS,  # prefix caching on, as vLLM's V1 engine has it by default
            prefix_cache_blocks=self.profile.kv_capacity_tokens // BLOCK_TOKENS,
        )
        self._exporter = EngineExporter(model)
        self._scraper = Scraper()
        self._futures: dict[str, asyncio.Future[SimRequest]] = {}
        self._server: httpio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self._seq = 0
        self._counted = (0, 0)

    def _clock(self) -> float:
        return time.monotonic() - self._t0

    async def start(self) -> None:
        await asyncio.sleep(self.config.start_delay_s)  # weight loading, as the profile says
        self._t0 = time.monotonic()
        host = advertised_host(os.environ)  # the node's IP where the agent gave one, else loopback
        self._server = await httpio.serve(self._handle, host=host)
        self.endpoint = f"http://{url_host(host)}:{self._server.port}"
        self._ticker = asyncio.create_task(self._run())
        self.accepting = True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            now = self._clock()
            self._engine.advance(now)
            for request in self._engine.pop_finished():
                future = self._futures.pop(request.request_id, None)
                if future is None or future.done() or request.finish_s is None:
                    continue
                delay = max(0.0, request.finish_s - now)  # a step may end after the tick
                loop.call_later(delay, future.set_result, request)
            self._export()

    def _export(self) -> None:
        e, x, labels = self._engine, self._exporter, {"model_name": self.model}
        x.running.labels(**labels).set(len(e.running))
        x.waiting.labels(**labels).set(len(e.waiting))
        x.kv.labels(**labels).set(e.kv_used_tokens / e.profile.kv_capacity_tokens)
        prompt, generated = e.prompt_tokens_total, e.generated_tokens_total
        x.prompt.labels(**labels).inc(prompt - self._counted[0])
        x.generated.labels(**labels).inc(generated - self._counted[1])
        self._counted = (prompt, generated)

    async def _handle(self, request: httpio.Request) -> httpio.Response | httpio.Stream:
        if request.method == "GET" and request.path == "/health":
            return httpio.Response.json(200 if self.accepting else 503, {"ready": self.accepting})
        if request.method == "GET" and request.path == "/metrics":
            return httpio.Response(200, self._exporter.page(), "text/plain; version=0.0.4")
        if request.method == "POST" and request.path == "/v1/completions":
            return await self._complete(request.body, chat=False)
        if request.method == "POST" and request.path == "/v1/chat/completions":
            return await self._complete(request.body, chat=True)
        return httpio.Response.json(404, {"error": {"message": f"no route {request.method} {request.path}"}})

    async def _complete(self, body: bytes, *, chat: bool) -> httpio.Response | httpio.Stream:
        if not self.accepting:
            return httpio.Response.json(503, {"error": {"message": "replica is draining"}})
        try:
            payload = json.loads(body or b"{}")
            if chat:
                prompt_tokens = _count_messages(payload.get("messages"))
                max_tokens = int(payload.get("max_completion_tokens") or payload.get("max_tokens") or 16)
            else:
                prompt_tokens = _count_prompt(payload.get("prompt"))
                max_tokens = int(payload.get("max_tokens", 16))
            if max_tokens < 1:
                raise ValueError("max_tokens: must be at least 1")
            stream = payload.get("stream") is True
            include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        except (ValueError, TypeError, AttributeError) as exc:
            return httpio.Response.json(400, {"error": {"message": str(exc)}})
        self._seq += 1
        request = SimRequest(
            f"cmpl-{self._seq}", prompt_tokens, max_tokens, arrival_s=self._clock(),
            block_hashes=_prefix_blocks(payload, chat=chat),
        )  # fmt: skip
        try:
            self._engine.submit(request)
        except ValueError as exc:
            return httpio.Response.json(400, {"error": {"message": str(exc)}})
        future: asyncio.Future[SimRequest] = asyncio.get_running_loop().create_future()
        self._futures[request.request_id] = future
        usage: dict[str, object] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max_tokens,
            "total_tokens": prompt_tokens + max_tokens,
        }
        if stream:
            return httpio.Stream(self._stream(request, future, usage, chat=chat, include_usage=include_usage))
        self._observe(await future)
        usage["prompt_tokens_details"] = {"cached_tokens": request.cached_tokens}
        choice: dict[str, object] = {"index": 0, "finish_reason": "length"}
        choice.update({"message": {"role": "assistant", "content": ""}} if chat else {"text": ""})
        return httpio.Response.json(
            200,
            {
                "id": request.request_id,
                "object": "chat.completion" if chat else "text_completion",
                "model": self.model,
                "choices": [choice],
                "usage": usage,
            },
        )

    def _observe(self, done: SimRequest) -> None:
        labels = {"model_name": self.model}
        if done.ttft_s is not None:
            self._exporter.ttft.labels(**labels).observe(done.ttft_s)
        if done.tpot_s is not None:
            self._exporter.tpot.labels(**labels).observe(done.tpot_s)

    async def _stream(
        self,
        request: SimRequest,
        future: asyncio.Future[SimRequest],
        usage: dict[str, object],
        *,
        chat: bool,
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        """One event per tick that produced tokens (their count in the engine, their text empty),
        the last one with ``finish_reason``; then usage (when asked) and ``[DONE]``."""
        kind = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": request.request_id, "object": kind, "model": self.model}
        sent = 0
        while sent < request.output_tokens:
            if request.generated > sent:
                sent = min(request.generated, request.output_tokens)
                last = sent >= request.output_tokens
                if chat:
                    choice: dict[str, object] = {"index": 0, "delta": {"content": ""}}
                else:
                    choice = {"index": 0, "text": ""}
                choice["finish_reason"] = "length" if last else None
                yield httpio.sse({**head, "choices": [choice]})
                continue
            await asyncio.wait([future], timeout=TICK_S)
            if future.cancelled():
                return  # stopped before the end: the client sees the stream cut
        self._observe(await future)
        usage["prompt_tokens_details"] = {"cached_tokens": request.cached_tokens}
        if include_usage:
            yield httpio.sse({**head, "choices": [], "usage": usage})
        yield httpio.sse("[DONE]")

    async def stats(self) -> Stats:
        return self._scraper.update(self._exporter.page().decode(), time.monotonic())

    async def stop(self, drain_s: float) -> None:
        self.accepting = False
        in_flight = [f for f in self._futures.values() if not f.done()]
        if in_flight and drain_s > 0:
            await asyncio.wait(in_flight, timeout=drain_s)
        for future in self._futures.values():
            if not future.done():
                future.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            await self._server.close()


class ProcessEngine:
    """A real engine server as a child process, from a command the executor built itself
    (:func:`controlplane.executor.expand.expand_process`), never one from the wire."""

    def __init__(self, spec: LaunchSpec, log_path: str, *, ready_timeout_s: float = 900.0) -> None:
        if not spec.argv:
            raise EngineStartError("process: empty command")
        self.spec = spec
        self.ready_timeout_s = ready_timeout_s
        self.log_path = log_path
        self.endpoint = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._scraper = Scraper()

    @property
    def pid(self) -> int | None:
        """The engine process's id once started (None before), for logs and fault drills."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        self.spec = self.spec.on_host(advertised_host(os.environ))  # listen where it is advertised
        env = {**os.environ, **self.spec.env}
        command = self.spec.argv[0]
        if shutil.which(command, path=env.get("PATH")) is None:
            raise EngineStartError(f"cannot run {command!r}: not found or not executable")
        with open(self.log_path, "ab") as log_file:  # noqa: ASYNC230 - once per engine start
            try:  # SIGTERM from the kernel when the actor dies, even on kill -9 (tokenfab.parent)
                self._proc = await asyncio.create_subprocess_exec(
                    *exec_with_parent(self.spec.argv),
                    env=env, stdout=log_file, stderr=log_file, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                raise EngineStartError(f"cannot run {self.spec.argv[0]!r}: {exc}") from None
        self.endpoint = self.spec.endpoint
        deadline = time.monotonic() + self.ready_timeout_s
        health = self.spec.health_url
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                raise EngineStartError(
                    f"{self.spec.argv[0]} exited with {self._proc.returncode} (log: {self.log_path})"
                )
            with contextlib.suppress(OSError, TimeoutError):
                if (await httpio.request("GET", health, timeout_s=2.0)).status == 200:
                    return
            await asyncio.sleep(1.0)
        await self.stop(0.0)
        raise EngineStartError(f"not healthy after {self.ready_timeout_s:g} s (log: {self.log_path})")

    async def stats(self) -> Stats:
        url = self.endpoint + "/metrics"
        page = await httpio.request("GET", url, timeout_s=2.0)
        return self._scraper.update(page.body.decode(), time.monotonic())

    async def stop(self, drain_s: float) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), max(drain_s, 1.0))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
