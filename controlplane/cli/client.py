"""Client helpers for CLI commands that talk to a running control plane.

Credentials, most specific first:

* TLS: ``--tls-ca/--tls-cert/--tls-key`` (or ``TOKENFAB_TLS_*``); otherwise, when ``--address`` is
  the one ``tokenfab up`` serves (``<state dir>/endpoint``), the state dir's CA and CLI certificate.
* Bearer token: ``--token`` / ``TOKENFAB_TOKEN``; otherwise, for that same address, the state
  dir's ``admin-token`` (operator commands) or ``demo-token`` (``tokenfab request``).

So the demo needs no flags, and a CLI pointed at another control plane never sends it the demo's
credentials.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer

from controlplane.api.convert import node_summary
from tokenfab.tls import ClientTLS

DEFAULT_ADDRESS = "127.0.0.1:50051"
__all__ = ["node_summary"]

AddressOpt = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="TOKENFAB_ADDRESS",
        help="control plane host:port (agents: several, comma-separated)",
    ),
]
CaOpt = Annotated[
    Path | None, typer.Option("--tls-ca", envvar="TOKENFAB_TLS_CA", help="CA that signed the server")
]
CertOpt = Annotated[
    Path | None, typer.Option("--tls-cert", envvar="TOKENFAB_TLS_CERT", help="client certificate")
]
KeyOpt = Annotated[Path | None, typer.Option("--tls-key", envvar="TOKENFAB_TLS_KEY", help="client key")]
NameOpt = Annotated[
    str | None,
    typer.Option("--tls-server-name", envvar="TOKENFAB_TLS_SERVER_NAME", help="expected server name"),
]


def state_dir() -> Path:
    return Path(os.environ.get("TOKENFAB_STATE_DIR") or Path.cwd() / ".tokenfab")


def _up_state(address: str | None) -> Path | None:
    """The state dir when ``address`` is the control plane ``tokenfab up`` runs there."""
    state = state_dir()
    endpoint = state / "endpoint"
    try:
        served = endpoint.read_text().strip()
    except OSError:
        return None
    return state if address is None or address == served else None


def client_tls(
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    server_name: str | None,
    address: str | None = None,
) -> ClientTLS | None:
    if ca is None:
        if cert is not None or key is not None:
            raise ValueError("--tls-cert/--tls-key need --tls-ca (the CA that signed the control plane)")
        state = _up_state(address) if address is not None else None
        if state is not None and (state / "pki" / "ca.crt").exists():
            pki = state / "pki"
            return ClientTLS(pki / "ca.crt", pki / "client-cli.crt", pki / "client-cli.key", server_name)
        return None
    return ClientTLS(ca, cert, key, server_name)


def state_token(address: str | None, name: str) -> str | None:
    """``TOKENFAB_TOKEN``, else ``<state dir>/<name>`` when ``address`` is the demo's."""
    token = os.environ.get("TOKENFAB_TOKEN")
    if token:
        return token
    state = _up_state(address)
    if state is None and name == "demo-token":  # the demo token is looked for as it always was
        state = state_dir()
    if state is not None and (state / name).exists():
        return (state / name).read_text().strip() or None
    return None


class _BearerBase:
    """Adds ``authorization: Bearer <token>`` to a call unless the caller chose credentials."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        if any(key == "authorization" for key, _ in metadata):
            return details
        return details._replace(metadata=grpc.aio.Metadata(*metadata, self._header))


class _UnaryUnary(_BearerBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_BearerBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_BearerBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_BearerBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def bearer(token: str) -> list[Any]:
    """Client interceptors that put ``token`` on every call of a channel (all four call shapes)."""
    return [kind(token) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


def channel(address: str, tls: ClientTLS | None, *, token: str | None = None) -> grpc.aio.Channel:
    """A channel to ``address``; ``token`` (default: the operator token found for it) rides on
    every call."""
    token = token or state_token(address, "admin-token")
    if tls is None:
        tls = client_tls(None, None, None, None, address)
    interceptors = bearer(token) if token else []
    if tls is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    return grpc.aio.secure_channel(
        address, tls.credentials(), options=tls.channel_options(), interceptors=interceptors
    )


def humanize_until(iso: str | None, now: datetime | None = None) -> str:
    if iso is None:
        return "owned"
    end = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = (end - (now or datetime.now(UTC))).total_seconds()
    if seconds <= 0:
        return "expired"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def call_operator_api(address: str, tls: tuple[Any, ...], stub_class: Any, fn: Any) -> Any:
    """Run ``fn(stub)`` against an operator service (TLS options as ``tokenfab nodes``); gRPC
    errors become ``error: CODE: details`` and exit code 2 (3 when the server is unreachable)."""
    import asyncio

    try:
        credentials = client_tls(*tls)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None

    async def run() -> Any:
        async with channel(address, credentials) as ch:
            try:
                return await fn(stub_class(ch))
            except grpc.aio.AioRpcError as exc:
                typer.echo(f"error: {exc.code().name}: {exc.details()}", err=True)
                raise typer.Exit(3 if exc.code() == grpc.StatusCode.UNAVAILABLE else 2) from None

    return asyncio.run(run())
