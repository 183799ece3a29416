"""Client helpers for CLI commands that talk to a running control plane."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer

from controlplane.api.convert import node_summary
from tokenfab.tls import ClientTLS, client_channel

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


def client_tls(
    ca: Path | None, cert: Path | None, key: Path | None, server_name: str | None
) -> ClientTLS | None:
    if ca is None:
        if cert is not None or key is not None:
            raise ValueError("--tls-cert/--tls-key need --tls-ca (the CA that signed the control plane)")
        return None
    return ClientTLS(ca, cert, key, server_name)


def channel(address: str, tls: ClientTLS | None) -> grpc.aio.Channel:
    return client_channel(address, tls)


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
