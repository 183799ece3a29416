"""``tokenfab autoscaler status|history|mode``: what the autoscaler decided, why, and its switch.

An operator surface (AutoscalerService, like ``tokenfab nodes``): TLS options as for the fleet
commands. ``-o json`` prints stable keys (add, never rename).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from controlplane.cli.client import DEFAULT_ADDRESS, NO_TLS_FLAGS, AddressOpt, Client, TLSFlags, tls_options

app = typer.Typer(help="The autoscaler: status, decision history, and its mode (active, advisory, off).")
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="table or json")]


def decision_summary(decision: Any) -> dict[str, Any]:
    def opt(name: str) -> float | None:
        return getattr(decision, name) if decision.HasField(name) else None

    return {
        "request_id": decision.request_id,
        "at": decision.at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds"),
        "policy": decision.policy,
        "mode": decision.mode,
        "applied": decision.applied,
        "action": decision.action,
        "current_replicas": decision.current_replicas,
        "desired_replicas": decision.desired_replicas,
        "reserved_output_tokens_per_second": decision.reserved_output_tokens_per_second,
        "target_output_tokens_per_second": decision.target_output_tokens_per_second,
        "reason": decision.reason,
        "demand_output_tokens_per_second": opt("demand_output_tokens_per_second"),
        "forecast_output_tokens_per_second": opt("forecast_output_tokens_per_second"),
        "per_replica_output_tokens_per_second": opt("per_replica_output_tokens_per_second"),
        "predicted_utilisation": opt("predicted_utilisation"),
        "predicted_slo_ok": decision.predicted_slo_ok,
        "cost_per_hour": opt("cost_per_hour"),
        "accelerator": decision.accelerator,
        "inputs": dict(sorted(decision.inputs.items())),
    }


def status_summary(status: Any) -> dict[str, Any]:
    return {
        "mode": status.mode,
        "mode_reason": status.mode_reason,
        "mode_updated_at": (
            status.mode_updated_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")
            if status.HasField("mode_updated_at")
            else None
        ),
        "requests": [
            {
                "request_id": r.request_id,
                "tenant": r.tenant,
                "model": r.model,
                "advisory": r.advisory,
                "scale_to_zero": r.scale_to_zero,
                "reserved_output_tokens_per_second": r.reserved_output_tokens_per_second,
                "target_output_tokens_per_second": r.target_output_tokens_per_second,
                "max_output_tokens_per_second": (
                    r.max_output_tokens_per_second if r.HasField("max_output_tokens_per_second") else None
                ),
                "replicas": r.replicas,
                "last_decision": decision_summary(r.last_decision) if r.HasField("last_decision") else None,
            }
            for r in status.requests
        ],
    }


def _age(iso: str) -> str:
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def status_table(summary: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title_justify="left")
    for column in ("REQUEST", "MODEL", "RESERVED", "TARGET", "MAX", "REPLICAS", "LAST", "AGE", "REASON"):
        table.add_column(column, no_wrap=column != "REASON")
    for r in summary["requests"]:
        last = r["last_decision"] or {}
        table.add_row(
            r["request_id"], r["model"], f"{r['reserved_output_tokens_per_second']:,.0f}",
            f"{r['target_output_tokens_per_second']:,.0f}",
            f"{r['max_output_tokens_per_second']:,.0f}" if r["max_output_tokens_per_second"] else "-",
            f"{r['replicas']} -> {last.get('desired_replicas', '-')}", last.get("action", "-"),
            _age(last["at"]) if last else "-", (last.get("reason") or "")[:90],
        )  # fmt: skip
    mode = summary["mode"]
    style = {"active": "green", "advisory": "yellow", "off": "red"}[mode]
    head = Text.assemble(("autoscaler ", "bold"), (mode, f"bold {style}"))
    if summary["mode_reason"]:
        head.append(f"  ({summary['mode_reason']})", style="dim")
    return Group(head, table)


def history_table(decisions: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table()
    for column in ("AT", "REQUEST", "ACTION", "REPLICAS", "TARGET", "DEMAND", "FORECAST", "UTIL", "REASON"):
        table.add_column(column, no_wrap=column != "REASON")
    for d in decisions:
        action = d["action"] + ("" if d["applied"] or d["action"] == "hold" else f" ({d['mode']})")

        def tps(value: float | None) -> str:
            return "-" if value is None else f"{value:,.0f}"

        table.add_row(
            d["at"][11:19], d["request_id"], action, f"{d['current_replicas']} -> {d['desired_replicas']}",
            f"{d['target_output_tokens_per_second']:,.0f}", tps(d["demand_output_tokens_per_second"]),
            tps(d["forecast_output_tokens_per_second"]),
            "-" if d["predicted_utilisation"] is None else f"{d['predicted_utilisation']:.0%}", d["reason"],
        )  # fmt: skip
    return table


@app.command()
@tls_options
def status(
    request_id: Annotated[str, typer.Argument(help="one capacity request (default: all)")] = "",
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """The mode, and per autoscaled request its floor, target, replicas and last decision."""
    from controlplane.cli.views import console
    from tokenfab.v1 import autoscaler_pb2, autoscaler_pb2_grpc

    async def fetch(stub: Any) -> Any:
        return await stub.GetStatus(
            autoscaler_pb2.GetAutoscalerStatusRequest(request_id=request_id), timeout=10
        )

    summary = status_summary(Client(address, tls).call(autoscaler_pb2_grpc.AutoscalerServiceStub, fetch))
    if output == "json":
        typer.echo(json.dumps(summary, indent=2))
    else:
        console().print(status_table(summary))


@app.command()
@tls_options
def history(
    request_id: Annotated[str, typer.Argument(help="one capacity request (default: all)")] = "",
    limit: Annotated[int, typer.Option(help="newest N decisions (at most 1000)")] = 20,
    action: Annotated[str, typer.Option(help="only scale_up, scale_down or hold")] = "",
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """Decisions, oldest of the newest ``--limit`` first, each with its inputs and reason."""
    from controlplane.cli.views import console
    from tokenfab.v1 import autoscaler_pb2, autoscaler_pb2_grpc

    if limit < 0:
        typer.echo("error: --limit: must not be negative", err=True)
        raise typer.Exit(1)

    async def fetch(stub: Any) -> Any:
        query = autoscaler_pb2.ListDecisionsRequest(request_id=request_id, limit=limit, action=action)
        return await stub.ListDecisions(query, timeout=10)

    response = Client(address, tls).call(autoscaler_pb2_grpc.AutoscalerServiceStub, fetch)
    decisions = [decision_summary(d) for d in reversed(response.decisions)]
    if output == "json":
        typer.echo(json.dumps(decisions, indent=2))
    else:
        console().print(history_table(decisions))


@app.command()
@tls_options
def mode(
    value: Annotated[
        str, typer.Argument(help="active | advisory (record, apply nothing) | off (kill switch)")
    ],
    reason: Annotated[str, typer.Option(help="why (recorded with the mode)")] = "",
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """Switch the autoscaler globally. Advisory and off leave every applied target where it is."""
    from controlplane.cli.views import console
    from tokenfab.v1 import autoscaler_pb2, autoscaler_pb2_grpc

    async def change(stub: Any) -> Any:
        return await stub.SetMode(
            autoscaler_pb2.SetAutoscalerModeRequest(mode=value, reason=reason), timeout=10
        )

    summary = status_summary(Client(address, tls).call(autoscaler_pb2_grpc.AutoscalerServiceStub, change))
    if output == "json":
        typer.echo(json.dumps(summary, indent=2))
    else:
        console().print(status_table(summary))
