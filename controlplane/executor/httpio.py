"""HTTP for engines and the gateway, on aiohttp (server and client): the replicas' OpenAI-compatible
surface (``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /health``, ``GET /metrics``),
plain or streamed as server-sent events.

Why aiohttp: one established asyncio library gives both the server (HTTP/1.1 keep-alive, chunked
streaming, its C parser) and the client the gateway and the load generators use; nothing here
parses HTTP by hand. A handler is a plain coroutine ``Request -> Response | Stream`` so engines
stay testable without a server, and the framework is named in this module only.

Errors: :func:`request` raises ``OSError`` (refused, reset) or ``TimeoutError``; a reply with any
status is returned, never raised.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, *, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload).encode(), headers=headers or {})

    def decode(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Stream:
    """A streamed reply: each chunk is written (and flushed) as the iterator yields it."""

    chunks: AsyncIterator[bytes]
    status: int = 200
    content_type: str = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response | Stream]]


def sse(payload: Any) -> bytes:
    """One server-sent event carrying ``payload`` as JSON (``data: [DONE]`` for the end marker)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class Server:
    """A running server; :meth:`close` stops it (handlers still running get a second to finish:
    drain before closing)."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self._runner = runner
        self.port = port

    async def close(self) -> None:
        await self._runner.shutdown()
        await self._runner.cleanup()


async def _reply(result: Response | Stream, http: web.Request) -> web.StreamResponse:
    if isinstance(result, Response):
        return web.Response(
            status=result.status, body=result.body, content_type=None,
            headers={"Content-Type": result.content_type, **result.headers},
        )  # fmt: skip
    out = web.StreamResponse(
        status=result.status, headers={"Content-Type": result.content_type, "Cache-Control": "no-cache"}
    )
    await out.prepare(http)
    try:
        async for chunk in result.chunks:
            await out.write(chunk)
    except (ConnectionError, asyncio.CancelledError):
        aclose = getattr(result.chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # the client went away: let the producer clean up
        raise
    await out.write_eof()
    return out


async def serve(handler: Handler, host: str = "127.0.0.1", port: int = 0) -> Server:
    async def entry(http: web.Request) -> web.StreamResponse:
        try:
            body = await http.read()
        except web.HTTPRequestEntityTooLarge as exc:
            return web.json_response({"error": {"message": exc.text}}, status=413)
        request = Request(http.method, http.path, body, {k.lower(): v for k, v in http.headers.items()})
        return await _reply(await handler(request), http)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", entry)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return Server(runner, int(bound))


async def request(
    method: str,
    url: str,
    payload: Any = None,
    *,
    timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
) -> Response:
    """One HTTP request to ``http://host:port/path``; raises OSError/TimeoutError when unreachable."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url: only http(s):// is supported, got {url!r}")
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, json=payload, headers=headers) as reply,
        ):
            body = await reply.read()
            return Response(reply.status, body, reply.headers.get("Content-Type", ""), dict(reply.headers))
    except TimeoutError:
        raise
    except aiohttp.ClientConnectionError as exc:
        raise ConnectionError(str(exc) or type(exc).__name__) from None
    except aiohttp.ClientError as exc:
        raise OSError(str(exc) or type(exc).__name__) from None
