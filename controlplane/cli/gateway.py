"""``tokenfab gateway`` (the OpenAI-compatible front door) and ``tokenfab usage`` (metered tokens).

``tokenfab usage`` reads the gateway's hourly usage records from etcd (``--etcd``, or the local
``tokenfab up``'s etcd found through its state directory), for billing and for checking a
tenant's consumption: ``tokenfab usage --tenant demo --since 2026-12-01T00:00 -o json``.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

EtcdOpt = Annotated[str | None, typer.Option(envvar="TOKENFAB_ETCD", help="etcd host:port[,host:port...]")]
EtcdCaOpt = Annotated[Path | None, typer.Option(envvar="TOKENFAB_ETCD_CA", help="TLS to etcd: its CA")]
EtcdCertOpt = Annotated[Path | None, typer.Option(envvar="TOKENFAB_ETCD_CERT", help="etcd client cert")]
EtcdKeyOpt = Annotated[Path | None, typer.Option(envvar="TOKENFAB_ETCD_KEY", help="etcd client key")]


class LogFormat(StrEnum):
    json = "json"
    console = "console"


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def gateway_command(
    tenants: Annotated[Path, typer.Option(help="tenants YAML: bearer tokens (re-read when it changes)")],
    listen: Annotated[
        str, typer.Option(help="host:port; beyond loopback needs --tls-cert")
    ] = "127.0.0.1:8080",
    etcd: EtcdOpt = "127.0.0.1:2379",
    etcd_ca: EtcdCaOpt = None,
    etcd_cert: EtcdCertOpt = None,
    etcd_key: EtcdKeyOpt = None,
    tls_cert: Annotated[Path | None, typer.Option(envvar="TOKENFAB_GATEWAY_CERT")] = None,
    tls_key: Annotated[Path | None, typer.Option(envvar="TOKENFAB_GATEWAY_KEY")] = None,
    public_url: Annotated[str, typer.Option(help="base URL tenants are told (default from --listen)")] = "",
    metrics_address: Annotated[str | None, typer.Option(help="host:port for /metrics")] = None,
    policy: Annotated[str, typer.Option(help="affinity | least_load | random")] = "affinity",
    burst: Annotated[float, typer.Option(help="seconds of reserved tokens a tenant may burst")] = 2.0,
    spare_horizon: Annotated[
        float | None,
        typer.Option(
            help="best effort above the reservation while replicas have < this many s of output work "
            "(default: an average call's duration at the request's SLO)"
        ),
    ] = None,
    cold_start_wait: Annotated[float, typer.Option(help="s a call waits for a first replica")] = 60.0,
    max_attempts: Annotated[int, typer.Option(help="replicas tried per call before its first token")] = 3,
    first_token_timeout: Annotated[float, typer.Option(help="s to a replica's first event")] = 30.0,
    request_timeout: Annotated[float, typer.Option(help="s for a whole call")] = 600.0,
    usage_flush: Annotated[float, typer.Option(help="s between usage writes to etcd")] = 5.0,
    demand_window: Annotated[float, typer.Option(help="s the offered demand it publishes spans")] = 30.0,
    demand_publish: Annotated[float, typer.Option(help="s between its demand records in etcd")] = 2.0,
    instance: Annotated[
        str, typer.Option(help="this instance in its etcd demand keys (default host-port-pid)")
    ] = "",
    log_format: Annotated[LogFormat, typer.Option()] = LogFormat.json,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Serve the OpenAI-compatible gateway: tenants' calls routed to their Ready replicas."""
    from pydantic import ValidationError

    from controlplane.domain.nodes import validation_message
    from controlplane.gateway import Gateway, GatewayConfig
    from tokenfab.logs import configure

    configure(fmt=log_format.value, level=log_level)
    try:
        config = GatewayConfig(
            listen=listen, tenants_file=tenants, etcd_endpoint=etcd or "127.0.0.1:2379",
            etcd_tls_ca=etcd_ca, etcd_tls_cert=etcd_cert, etcd_tls_key=etcd_key,
            tls_cert=tls_cert, tls_key=tls_key, public_url=public_url, metrics_address=metrics_address,
            policy=policy,  # type: ignore[arg-type]  # pydantic names a wrong value
            burst_s=burst, spare_horizon_s=spare_horizon, cold_start_wait_s=cold_start_wait,
            max_attempts=max_attempts, first_token_timeout_s=first_token_timeout,
            request_timeout_s=request_timeout, usage_flush_s=usage_flush, demand_window_s=demand_window,
            demand_publish_s=demand_publish, instance=instance,
        )  # fmt: skip
    except ValidationError as exc:
        field, message = validation_message(exc)
        raise _fail(f"{field}: {message}") from None

    async def serve() -> None:
        import signal

        gateway = Gateway(config)
        await gateway.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        typer.echo(json.dumps({"gateway": gateway.base_url}), err=True)
        await stop.wait()
        await gateway.stop()

    try:
        asyncio.run(serve())
    except Exception as exc:
        from controlplane.errors import TokenfabError
        from controlplane.store.base import StoreUnavailable

        if isinstance(exc, StoreUnavailable):
            raise _fail(str(exc), 3) from None
        if isinstance(exc, TokenfabError | OSError | ValueError):
            raise _fail(str(exc)) from None
        raise


def _local_etcd() -> str | None:
    """The etcd of a local ``tokenfab up`` (its state directory remembers the port)."""
    state = Path(os.environ.get("TOKENFAB_STATE_DIR") or Path.cwd() / ".tokenfab")
    try:
        return f"127.0.0.1:{int(json.loads((state / 'ports.json').read_text())['etcd_client'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    if text[-1:] in "hd" and text[:-1].isdigit():  # 24h, 7d: relative to now
        amount = int(text[:-1])
        return datetime.now(UTC) - (timedelta(hours=amount) if text[-1] == "h" else timedelta(days=amount))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"--since: expected an ISO time (2026-12-01T08:00) or 24h / 7d, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def usage_command(
    tenant: Annotated[str | None, typer.Option(help="one tenant (default: all)")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or 24h / 7d (default: everything)")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
    etcd: EtcdOpt = None,
    etcd_ca: EtcdCaOpt = None,
    etcd_cert: EtcdCertOpt = None,
    etcd_key: EtcdKeyOpt = None,
) -> None:
    """Prompt and completion tokens the gateway served, per tenant, capacity request and UTC hour."""
    from controlplane.config import parse_endpoints
    from controlplane.gateway.metering import read_usage
    from controlplane.store.base import StoreUnavailable
    from controlplane.store.etcd import EtcdStore
    from tokenfab.tls import ClientTLS

    if output not in ("table", "json"):
        raise _fail(f"--output: table or json, got {output!r}")
    endpoint = etcd or _local_etcd()
    if endpoint is None:
        raise _fail("--etcd: no etcd given and no local `tokenfab up` found")
    start = _since(since)

    async def fetch() -> list[dict[str, object]]:
        tls = ClientTLS(etcd_ca, etcd_cert, etcd_key) if etcd_ca else None
        store = EtcdStore(endpoints=parse_endpoints(endpoint), tls=tls)
        await store.connect()
        try:
            return [r.model_dump(mode="json") for r in await read_usage(store, tenant=tenant, since=start)]
        finally:
            await store.close()

    try:
        rows = asyncio.run(fetch())
    except StoreUnavailable as exc:
        raise _fail(str(exc), 3) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from controlplane.cli.views import console

    table = Table("HOUR (UTC)", "TENANT", "REQUEST", "MODEL", "CALLS", "PROMPT", "COMPLETION")
    for r in rows:
        table.add_row(
            str(r["hour"])[:13], str(r["tenant"]), str(r["request_id"]), str(r["model"]),
            str(r["requests"]), str(r["prompt_tokens"]), str(r["completion_tokens"]),
        )  # fmt: skip
    console().print(table)
