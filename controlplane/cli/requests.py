"""``tokenfab request ...``: capacity requests through the CapacityService.

Credentials: ``--token`` or ``TOKENFAB_TOKEN``; without either, the CLI looks for the embedded
demo's token in ``<state dir>/demo-token`` (``tokenfab up`` writes it), and for the demo's CA and
CLI certificate in ``<state dir>/pki`` (see :mod:`controlplane.cli.client`), so the demo works
with no setup.
"""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

import typer

from controlplane.cli.client import DEFAULT_ADDRESS, Client, TokenOpt

app = typer.Typer(help="Reserve token capacity: create, inspect, update and cancel capacity requests.")

AddressOpt = Annotated[
    str, typer.Option("--address", envvar="TOKENFAB_ADDRESS", help="control plane host:port")
]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="table or json")]


def _summary(request: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    data: dict[str, Any] = MessageToDict(request, preserving_proto_field_name=True)
    status = data.get("status", {})
    return {
        "id": request.id,
        "tenant": request.tenant,
        "model": request.spec.model,
        "endpoint": request.endpoint,  # the gateway's base URL: send `model` there with your token
        "target_output_tokens_per_second": request.spec.output_tokens_per_second,
        "phase": request.status.phase,
        "predicted_output_tokens_per_second": request.status.predicted_output_tokens_per_second,
        "ready_output_tokens_per_second": request.status.ready_output_tokens_per_second,
        "autoscaled_target_output_tokens_per_second": request.status.target_output_tokens_per_second,
        "replicas": [
            {
                "id": r.replica_id,
                "accelerator": r.accelerator,
                "node": r.node_id,
                "devices": list(r.devices),
                "tensor_parallel": r.tensor_parallel,
                "state": r.state,
                "predicted_output_tokens_per_second": r.predicted_output_tokens_per_second,
            }
            for r in request.status.replicas
        ],
        "conditions": status.get("conditions", []),
        "generation": request.generation,
        "spec": data.get("spec", {}),
    }


def _call(address: str, token: str | None, fn: Any) -> Any:
    """``fn(stub)`` on the CapacityService as the tenant whose token is ``--token``/``TOKENFAB_TOKEN``
    or the demo's (required: no token is an error before anything is sent)."""
    from tokenfab.v1 import capacity_pb2_grpc

    client = Client(address, token=token, token_file="demo-token", require_token=True)
    return client.call(capacity_pb2_grpc.CapacityServiceStub, fn)


def _show(requests: list[Any], output: str) -> None:
    summaries = [_summary(r) for r in requests]
    if output == "json":
        typer.echo(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
        return
    from rich.table import Table

    from controlplane.cli.views import console, target_text

    table = Table()
    for column in ("ID", "MODEL", "TARGET-TPS", "PREDICTED-TPS", "REPLICAS", "PHASE", "REASON"):
        table.add_column(column)
    for s in summaries:
        reason = s["conditions"][0].get("message", "") if s["conditions"] else ""
        kinds = ", ".join(sorted({f"{r['accelerator']} tp{r['tensor_parallel']}" for r in s["replicas"]}))
        table.add_row(
            s["id"], s["model"], target_text(s),
            f"{s['predicted_output_tokens_per_second']:g}", f"{len(s['replicas'])} {kinds}".strip(),
            s["phase"], reason[:60],
        )  # fmt: skip
    console().print(table)


@app.command()
def create(
    model: Annotated[str, typer.Option(help="catalog model, e.g. qwen2.5-7b-instruct")],
    output_tokens_per_second: Annotated[float, typer.Option(help="generated tokens/s to sustain")],
    ttft_p95_ms: Annotated[float, typer.Option(help="time to first token, p95")] = 1000.0,
    tpot_p95_ms: Annotated[float, typer.Option(help="time per output token, p95")] = 50.0,
    input_tokens_per_second: Annotated[float, typer.Option()] = 0.0,
    vendor: Annotated[list[str] | None, typer.Option(help="allowed vendor (repeatable)")] = None,
    accelerator: Annotated[
        list[str] | None, typer.Option(help="allowed accelerator type (repeatable)")
    ] = None,
    max_price: Annotated[float | None, typer.Option(help="max price per million output tokens")] = None,
    priority: Annotated[int, typer.Option()] = 0,
    max_unavailable_percent: Annotated[
        float,
        typer.Option(help="share of the target planned moves may take down before replacements serve"),
    ] = 0.0,
    idempotency_key: Annotated[str, typer.Option(help="same key: same request")] = "",
    autoscale: Annotated[bool, typer.Option(help="scale on demand above the target (the floor)")] = False,
    max_output_tokens_per_second: Annotated[
        float | None, typer.Option(help="autoscaling ceiling, output tokens/s")
    ] = None,
    max_spend_per_hour: Annotated[float | None, typer.Option(help="autoscaling budget per hour")] = None,
    scale_to_zero: Annotated[
        bool, typer.Option(help="autoscaling may give back the floor when idle")
    ] = False,
    advisory: Annotated[bool, typer.Option(help="autoscaling records decisions, applies none")] = False,
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    token: TokenOpt = None,
) -> None:
    """Create a capacity request."""
    from tokenfab.v1 import capacity_pb2

    spec = capacity_pb2.CapacitySpec(
        model=model,
        output_tokens_per_second=output_tokens_per_second,
        input_tokens_per_second=input_tokens_per_second,
        latency=capacity_pb2.LatencyClass(ttft_p95_ms=ttft_p95_ms, tpot_p95_ms=tpot_p95_ms),
        allowed_vendors=vendor or [],
        allowed_accelerators=accelerator or [],
        priority=priority,
        max_unavailable_percent=max_unavailable_percent,
    )
    if max_price is not None:
        spec.max_price_per_million_output_tokens = max_price
    if autoscale or advisory or scale_to_zero or max_output_tokens_per_second or max_spend_per_hour:
        spec.autoscaling.CopyFrom(
            capacity_pb2.AutoscalingSpec(
                enabled=autoscale, scale_to_zero=scale_to_zero, advisory=advisory,
                max_output_tokens_per_second=max_output_tokens_per_second,
                max_spend_per_hour=max_spend_per_hour,
            )
        )  # fmt: skip
    request = capacity_pb2.CreateCapacityRequest(spec=spec, idempotency_key=idempotency_key)
    _show([_call(address, token, lambda stub: stub.Create(request, timeout=30))], output)


@app.command()
def get(
    request_id: Annotated[str, typer.Argument(help="request id")],
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    token: TokenOpt = None,
) -> None:
    """Show one capacity request."""
    from tokenfab.v1 import capacity_pb2

    message = capacity_pb2.GetCapacityRequest(id=request_id)
    _show([_call(address, token, lambda stub: stub.Get(message, timeout=10))], output)


@app.command("list")
def list_requests(
    all_: Annotated[bool, typer.Option("--all", help="include cancelled requests")] = False,
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    token: TokenOpt = None,
) -> None:
    """List your capacity requests."""
    from tokenfab.v1 import capacity_pb2

    message = capacity_pb2.ListCapacityRequests(include_cancelled=all_)
    response = _call(address, token, lambda stub: stub.List(message, timeout=10))
    if output == "json":
        typer.echo(json.dumps([_summary(r) for r in response.requests], indent=2))
    else:
        _show(list(response.requests), output)


@app.command()
def update(
    request_id: Annotated[str, typer.Argument(help="request id")],
    output_tokens_per_second: Annotated[float, typer.Option()] = 0.0,
    input_tokens_per_second: Annotated[float, typer.Option()] = 0.0,
    expected_generation: Annotated[int, typer.Option(help="fail if the request moved on")] = 0,
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    token: TokenOpt = None,
) -> None:
    """Change a request's targets."""
    from tokenfab.v1 import capacity_pb2

    message = capacity_pb2.UpdateCapacityRequest(
        id=request_id,
        output_tokens_per_second=output_tokens_per_second,
        input_tokens_per_second=input_tokens_per_second,
        expected_generation=expected_generation,
    )
    _show([_call(address, token, lambda stub: stub.Update(message, timeout=30))], output)


@app.command()
def cancel(
    request_id: Annotated[str, typer.Argument(help="request id")],
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    token: TokenOpt = None,
) -> None:
    """Cancel a capacity request."""
    from tokenfab.v1 import capacity_pb2

    message = capacity_pb2.CancelCapacityRequest(id=request_id)
    _show([_call(address, token, lambda stub: stub.Cancel(message, timeout=10))], output)


@app.command()
def watch(address: AddressOpt = DEFAULT_ADDRESS, token: TokenOpt = None) -> None:
    """Print your requests as they change (one JSON object per line) until Ctrl-C."""
    from tokenfab.v1 import capacity_pb2

    async def follow(stub: Any) -> None:
        async for event in stub.Watch(capacity_pb2.WatchCapacityRequests()):
            kind = capacity_pb2.CapacityEvent.Kind.Name(event.kind).removeprefix("KIND_").lower()
            typer.echo(json.dumps({"event": kind, **_summary(event.request)}))

    with contextlib.suppress(KeyboardInterrupt):
        _call(address, token, follow)


def replica_summary(replica: Any) -> dict[str, Any]:
    """One replica as the CLI prints it (``-o json`` keys)."""
    return {
        "id": replica.id,
        "request": replica.request_id,
        "model": replica.model,
        "vendor": replica.vendor,
        "accelerator": replica.accelerator,
        "cluster": replica.cluster,
        "node": replica.node_id,
        "devices": list(replica.devices),
        "tensor_parallel": replica.tensor_parallel,
        "engine": replica.engine,
        "state": replica.state,
        "reason": replica.reason,
        "actor_id": replica.actor_id,
        "endpoint": replica.endpoint,
        "generation": replica.generation,
        "predicted_output_tokens_per_second": replica.predicted_output_tokens_per_second,
        "output_tokens_per_second": round(replica.output_tokens_per_second, 1),
        "input_tokens_per_second": round(replica.input_tokens_per_second, 1),
        "running": replica.running,
        "waiting": replica.waiting,
        "kv_cache_usage": round(replica.kv_cache_usage, 3),
        "ttft_p95_s": round(replica.ttft_p95_s, 4),
        "tpot_p95_s": round(replica.tpot_p95_s, 4),
    }


def replicas_command(
    request_id: Annotated[str, typer.Option("--request", help="only this request's replicas")] = "",
    all_: Annotated[bool, typer.Option("--all", help="include Stopped and Failed replicas")] = False,
    output: OutputOpt = "table",
    address: AddressOpt = DEFAULT_ADDRESS,
    token: TokenOpt = None,
) -> None:
    """List your replicas: placement, state and live tokens/s."""
    from tokenfab.v1 import capacity_pb2

    message = capacity_pb2.ListReplicasRequest(request_id=request_id, include_stopped=all_)
    response = _call(address, token, lambda stub: stub.ListReplicas(message, timeout=10))
    summaries = [replica_summary(r) for r in response.replicas]
    if output == "json":
        typer.echo(json.dumps(summaries, indent=2))
        return
    from controlplane.cli.views import console, replicas_table

    console().print(replicas_table(summaries))
