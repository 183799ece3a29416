"""A small HTTP/1.1 server and client on asyncio streams, enough for an engine's OpenAI-compatible
surface (``POST /v1/completions``, ``GET /health``, ``GET /metrics``) on loopback.

Why not a web framework: the simulated engine runs inside every replica actor, and pulling a web
stack into each Ray worker for three routes costs more memory and start time than it saves. One
request per connection (``Connection: close``), bodies sized by ``Content-Length``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MAX_BODY = 4 * 1024 * 1024
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large", 503: "Unavailable"}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        return cls(status, json.dumps(payload).encode())

    def decode(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    pass


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    length = int(headers.get("content-length", "0") or 0)
    if length < 0 or length > MAX_BODY:
        raise HttpError(f"content-length {length} outside 0..{MAX_BODY}")
    return await reader.readexactly(length) if length else b""


def _encode(body: bytes, content_type: str, first_line: str, extra: str = "") -> bytes:
    head = (
        f"{first_line}\r\n{extra}Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def serve(handler: Handler, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line, headers = await _read_head(reader)
            method, path, _version = request_line.split(" ", 2)
            try:
                body = await _read_body(reader, headers)
            except HttpError as exc:
                response = Response.json(413, {"error": {"message": str(exc)}})
            else:
                response = await handler(Request(method, path, body, headers))
            first = f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Error')}"
            writer.write(_encode(response.body, response.content_type, first))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # a client that went away or spoke something else: nothing to answer
        finally:
            writer.close()

    return await asyncio.start_server(on_connection, host, port)


async def request(method: str, url: str, payload: Any = None, *, timeout_s: float = 30.0) -> Response:
    """One HTTP request to ``http://host:port/path``; raises OSError/TimeoutError when unreachable."""
    if not url.startswith("http://"):
        raise ValueError(f"url: only http:// is supported, got {url!r}")
    hostport, _, path = url[len("http://") :].partition("/")
    host, _, port = hostport.rpartition(":")
    body = b"" if payload is None else json.dumps(payload).encode()

    async def go() -> Response:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                _encode(body, "application/json", f"{method} /{path} HTTP/1.1", f"Host: {hostport}\r\n")
            )
            await writer.drain()
            status_line, headers = await _read_head(reader)
            data = await _read_body(reader, headers)
            return Response(int(status_line.split(" ")[1]), data, headers.get("content-type", ""))
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout_s)
