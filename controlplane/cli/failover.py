"""``tokenfab lease revoke|extend``, ``tokenfab drain``, ``tokenfab events``: planned loss of nodes
and the story of every failover step. Operator commands (FleetService): TLS as ``tokenfab nodes``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from controlplane.cli.client import DEFAULT_ADDRESS, NO_TLS_FLAGS, AddressOpt, Client, TLSFlags, tls_options

lease_app = typer.Typer(help="Leased nodes: revoke with a notice period, or extend.")
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="table or json")]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise typer.BadParameter(f"expected a duration like 60s, 15m or 2h, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"expected ISO 8601 with a zone, e.g. 2026-12-01T00:00:00Z, got {text!r}"
        ) from None
    if value.tzinfo is None:
        raise typer.BadParameter("the time needs a zone (Z or +08:00)")
    return value


def _done(node: Any, what: str) -> None:
    from controlplane.api.convert import node_summary

    summary = node_summary(node)
    ends = summary["lease_expires_at"] or "owned"
    typer.echo(f"node/{summary['id']} {what} (state {summary['state']}, lease ends {ends})")


@lease_app.command("revoke")
@tls_options
def revoke(
    node: Annotated[str, typer.Argument(help="node id")],
    notice: Annotated[str, typer.Option(help="the lease ends this long from now: 60s, 15m, 2h")] = "60s",
    reason: Annotated[str, typer.Option(help="why (recorded in the events)")] = "",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """End a node's lease after a notice: its replicas are replaced elsewhere before it ends."""
    from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc

    seconds = parse_duration(notice)
    message = fleet_pb2.RevokeLeaseRequest(node_id=node, notice_s=seconds, reason=reason)
    _done(
        Client(address, tls).call(
            fleet_pb2_grpc.FleetServiceStub, lambda s: s.RevokeLease(message, timeout=10)
        ),
        f"lease revoked with {seconds:g} s notice",
    )


@lease_app.command("extend")
@tls_options
def extend(
    node: Annotated[str, typer.Argument(help="node id")],
    until: Annotated[str, typer.Option(help="the new end, ISO 8601 with a zone")],
    reason: Annotated[str, typer.Option(help="why (recorded in the events)")] = "",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """Move a node's lease end later (or set it again after a revocation)."""
    from controlplane.api.convert import datetime_to_ts
    from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc

    message = fleet_pb2.ExtendLeaseRequest(
        node_id=node, until=datetime_to_ts(parse_time(until)), reason=reason
    )
    _done(
        Client(address, tls).call(
            fleet_pb2_grpc.FleetServiceStub, lambda s: s.ExtendLease(message, timeout=10)
        ),
        "lease extended",
    )


@tls_options
def drain_command(
    node: Annotated[str, typer.Argument(help="node id")],
    reason: Annotated[str, typer.Option(help="why (recorded on the node and in the events)")] = "",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """Stop placing on a node and move its replicas off it, make-before-break."""
    from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc

    message = fleet_pb2.DrainRequest(node_id=node, reason=reason)
    _done(
        Client(address, tls).call(fleet_pb2_grpc.FleetServiceStub, lambda s: s.Drain(message, timeout=10)),
        "draining",
    )


def _stamp(at: Any) -> str:
    """A protobuf Timestamp as UTC ISO 8601 with milliseconds and a Z."""
    return str(at.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def _print_log(rows: list[dict[str, Any]], output: str, columns: list[tuple[str, str]]) -> None:
    """A log listing (events, audit) as JSON, or as a table of ``columns`` (header, row key); the
    time column shows the time of day only and the last column wraps."""
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from controlplane.cli.views import console

    table = Table()
    for i, (header, _) in enumerate(columns):
        table.add_column(header, no_wrap=i < len(columns) - 1)
    for row in rows:
        table.add_row(*(row[key][11:23] if key == "at" else row[key] for _, key in columns))
    console().print(table)


def event_summary(event: Any) -> dict[str, Any]:
    return {
        "at": _stamp(event.at),
        "kind": event.kind,
        "node_id": event.node_id,
        "request_id": event.request_id,
        "replica_id": event.replica_id,
        "message": event.message,
    }


@tls_options
def events_command(
    limit: Annotated[int, typer.Option(help="newest N events (at most 1000)")] = 50,
    node: Annotated[str, typer.Option(help="only this node")] = "",
    request: Annotated[str, typer.Option(help="only this capacity request")] = "",
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """Failover steps and node changes, oldest of the newest ``--limit`` first."""
    from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc

    if limit < 0:
        typer.echo("error: --limit: must not be negative", err=True)
        raise typer.Exit(1)
    query = fleet_pb2.ListEventsRequest(limit=limit, node_id=node, request_id=request)
    response = Client(address, tls).call(
        fleet_pb2_grpc.FleetServiceStub, lambda s: s.ListEvents(query, timeout=10)
    )
    rows = [event_summary(e) for e in reversed(response.events)]
    columns = [("AT", "at"), ("KIND", "kind"), ("NODE", "node_id"), ("REPLICA", "replica_id")]
    _print_log(rows, output, [*columns, ("MESSAGE", "message")])


def preempt_command(
    node: Annotated[str, typer.Argument(help="node id of the simulated fleet")],
    notice: Annotated[str, typer.Option(help="the node goes away this long from now: 60s, 2m")] = "120s",
    action: Annotated[str, typer.Option(help="terminate | stop | hibernate")] = "terminate",
    state_dir: Annotated[
        Path | None, typer.Option(envvar="TOKENFAB_STATE_DIR", help="the state dir of `tokenfab up`")
    ] = None,
) -> None:
    """Simulated fleets: publish a provider preemption notice on the node's metadata endpoint.

    The node's agent finds it on its next poll (as on an EC2 spot instance) and tells the control
    plane, which moves the node's replicas off before the notice runs out."""
    from agents.lease import write_notice
    from controlplane.embedded.up import default_state_dir, notice_file

    if action not in ("terminate", "stop", "hibernate"):
        raise typer.BadParameter(
            f"expected terminate, stop or hibernate, got {action!r}", param_hint="--action"
        )
    state = state_dir or default_state_dir()
    if not (state / "notices").is_dir():
        typer.echo(
            f"error: state_dir: {state} has no simulated fleet (is `tokenfab up` running there?)", err=True
        )
        raise typer.Exit(2)
    end = datetime.now(UTC) + timedelta(seconds=parse_duration(notice))
    write_notice(notice_file(state, node), end, action)
    typer.echo(f"node/{node}: {action} notice published; it goes away at {end.isoformat(timespec='seconds')}")


def audit_summary(entry: Any) -> dict[str, Any]:
    return {
        "at": _stamp(entry.at),
        "principal": entry.principal,
        "method": entry.method,
        "target": entry.target,
        "result": entry.result,
        "reason": entry.reason,
        "peer": entry.peer,
    }


@tls_options
def audit_command(
    limit: Annotated[int, typer.Option(help="newest N entries (at most 1000)")] = 50,
    principal: Annotated[str, typer.Option(help="only principals containing this, e.g. tenant/alice")] = "",
    result: Annotated[str, typer.Option(help="only this result: OK, PERMISSION_DENIED, ...")] = "",
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """The audit log (admins): every change and every refused call, oldest of the newest first."""
    from tokenfab.v1 import audit_pb2, audit_pb2_grpc

    if not 0 <= limit <= 1000:
        typer.echo("error: --limit: between 0 and 1000", err=True)
        raise typer.Exit(1)
    query = audit_pb2.ListAuditRequest(limit=limit, principal=principal, result=result)
    response = Client(address, tls).call(
        audit_pb2_grpc.AuditServiceStub, lambda s: s.ListAudit(query, timeout=10)
    )
    rows = [audit_summary(e) for e in response.entries]
    columns = [("AT", "at"), ("PRINCIPAL", "principal"), ("METHOD", "method"), ("TARGET", "target")]
    _print_log(rows, output, [*columns, ("RESULT", "result"), ("REASON", "reason")])
