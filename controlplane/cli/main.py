"""``tokenfab``: run the control plane or an agent, look at the fleet, cordon nodes, run it all locally.

Clients find the control plane at ``--address`` or ``TOKENFAB_ADDRESS`` (default 127.0.0.1:50051);
TLS material comes from ``--tls-ca/--tls-cert/--tls-key`` or ``TOKENFAB_TLS_CA/_CERT/_KEY`` (the one
option group, :func:`controlplane.cli.client.tls_options`); every call goes through
:class:`controlplane.cli.client.Client`.
Heavy imports happen inside the commands so that ``tokenfab agent`` starts quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from controlplane.cli import autoscaler as autoscaler_commands
from controlplane.cli import failover as failover_commands
from controlplane.cli import gateway as gateway_commands
from controlplane.cli import requests as request_commands
from controlplane.cli.client import (
    DEFAULT_ADDRESS,
    NO_TLS_FLAGS,
    AddressOpt,
    Client,
    TLSFlags,
    fail,
    tls_options,
)
from controlplane.cli.discover import discover_command
from controlplane.cli.simulate import simulate_command

app = typer.Typer(
    name="tokenfab",
    help="Tokenfab: the control plane for LLM token supply on heterogeneous accelerator fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


app.add_typer(request_commands.app, name="request")
app.add_typer(autoscaler_commands.app, name="autoscaler")
app.add_typer(failover_commands.lease_app, name="lease")
app.command("drain")(failover_commands.drain_command)
app.command("events")(failover_commands.events_command)
app.command("audit")(failover_commands.audit_command)
app.command("preempt")(failover_commands.preempt_command)
app.command("replicas")(request_commands.replicas_command)
app.command("simulate")(simulate_command)
app.command("gateway")(gateway_commands.gateway_command)
app.command("usage")(gateway_commands.usage_command)


class Output(StrEnum):
    table = "table"
    json = "json"


class LogFormat(StrEnum):
    json = "json"
    console = "console"


@app.command()
@tls_options
def nodes(
    output: Annotated[Output, typer.Option("-o", "--output", help="table or json")] = Output.table,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="keep the table updated")] = False,
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """List the fleet's nodes."""
    from controlplane.api.convert import node_summary
    from controlplane.cli.views import console, nodes_table, state_counts
    from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc

    client = Client(address, tls)

    async def fetch(stub: Any) -> list[dict[str, Any]]:
        response = await stub.ListNodes(fleet_pb2.ListNodesRequest(), timeout=10)
        return [node_summary(n) for n in response.nodes]

    if not watch:
        summaries = client.call(fleet_pb2_grpc.FleetServiceStub, fetch)
        if output is Output.json:
            typer.echo(json.dumps(summaries, indent=2))
        else:
            out = console()
            out.print(nodes_table(summaries))
            out.print(state_counts(summaries))
        return

    from rich.console import Group
    from rich.live import Live

    async def live(stub: Any) -> None:
        with Live(refresh_per_second=4) as view:
            while True:
                summaries = await fetch(stub)
                view.update(Group(nodes_table(summaries), state_counts(summaries)))
                await asyncio.sleep(1)

    with contextlib.suppress(KeyboardInterrupt):
        client.call(fleet_pb2_grpc.FleetServiceStub, live)


def _change(action: str, node: str, reason: str, client: Client) -> None:
    from controlplane.api.convert import node_summary
    from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc

    async def call(stub: Any) -> Any:
        if action == "cordon":
            return await stub.Cordon(fleet_pb2.CordonRequest(node_id=node, reason=reason), timeout=10)
        return await stub.Uncordon(fleet_pb2.UncordonRequest(node_id=node), timeout=10)

    summary = node_summary(client.call(fleet_pb2_grpc.FleetServiceStub, call))
    typer.echo(f"node/{summary['id']} {action}ed (state {summary['state']})")


@app.command()
@tls_options
def cordon(
    node: Annotated[str, typer.Argument(help="node id")],
    reason: Annotated[str, typer.Option(help="why, recorded on the node")] = "",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """Mark a node unschedulable (running work stays)."""
    _change("cordon", node, reason, Client(address, tls))


@app.command()
@tls_options
def uncordon(
    node: Annotated[str, typer.Argument(help="node id")],
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
) -> None:
    """Make a cordoned node schedulable again."""
    _change("uncordon", node, "", Client(address, tls))


InsecureLocalAdminOpt = Annotated[
    bool,
    typer.Option(
        envvar="TOKENFAB_INSECURE_LOCAL_ADMIN",
        help="UNSAFE, for tests and a developer's own machine: a plaintext caller from loopback without "
        "credentials is the admin (so is every user on this host)",
    ),
]


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise fail(f"{option}: expected NAME=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


@app.command()
def executor(
    cluster: Annotated[str, typer.Option(help="the cluster this executor drives")] = "default",
    ray_address: Annotated[str, typer.Option(help="the cluster's Ray GCS host:port")] = "127.0.0.1:6379",
    listen: Annotated[str, typer.Option(help="host:port to serve ExecutorService on")] = "127.0.0.1:50061",
    tls_cert: Annotated[Path | None, typer.Option(envvar="TOKENFAB_SERVER_CERT")] = None,
    tls_key: Annotated[Path | None, typer.Option(envvar="TOKENFAB_SERVER_KEY")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(envvar="TOKENFAB_CLIENT_CA", help="CA of the control planes' certificates")
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(help="allow plaintext on a non-loopback --listen (anyone there can start replicas)"),
    ] = False,
    insecure_local_admin: InsecureLocalAdminOpt = False,
    catalog: Annotated[Path | None, typer.Option(help="catalog YAML overriding the packaged one")] = None,
    engines_file: Annotated[
        Path | None,
        typer.Option(help="engines YAML: templates (engine -> command) and model_paths (model -> path)"),
    ] = None,
    log_format: Annotated[LogFormat, typer.Option()] = LogFormat.json,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run one cluster's executor: its Ray driver, taking placement commands from the control plane."""
    from controlplane.catalog.types import CatalogError
    from controlplane.errors import InvalidArgument
    from controlplane.executor.expand import EngineConfig
    from controlplane.executor.service import run_executor
    from tokenfab.logs import configure
    from tokenfab.tls import ServerTLS

    configure(fmt=log_format.value, level=log_level)
    if (tls_cert is None) != (tls_key is None):
        raise fail("tls_cert and tls_key: give both or neither")
    tls = ServerTLS(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key else None
    try:
        engines = EngineConfig.load(catalog, engines_file)
    except CatalogError as exc:
        raise fail(str(exc)) from None
    try:
        run_executor(
            cluster, ray_address, listen, tls=tls, insecure=insecure,
            insecure_local_admin=insecure_local_admin, engines=engines,
        )  # fmt: skip
    except InvalidArgument as exc:
        raise fail(exc.message) from None
    except (ConnectionError, OSError, TimeoutError) as exc:
        raise fail(f"ray_address: cannot use Ray at {ray_address}: {exc}", 3) from None


@app.command()
def controlplane(
    address: Annotated[str, typer.Option(help="listen host:port")] = DEFAULT_ADDRESS,
    etcd: Annotated[
        str, typer.Option(envvar="TOKENFAB_ETCD", help="etcd host:port[,host:port...]")
    ] = "127.0.0.1:2379",
    etcd_ca: Annotated[
        Path | None, typer.Option(envvar="TOKENFAB_ETCD_CA", help="TLS to etcd: the CA of its certificate")
    ] = None,
    etcd_cert: Annotated[
        Path | None, typer.Option(envvar="TOKENFAB_ETCD_CERT", help="etcd client cert")
    ] = None,
    etcd_key: Annotated[Path | None, typer.Option(envvar="TOKENFAB_ETCD_KEY", help="etcd client key")] = None,
    heartbeat_interval: Annotated[float, typer.Option(help="seconds between agent heartbeats")] = 1.0,
    suspect_after_missed: Annotated[int, typer.Option(help="missed beats before Suspect")] = 3,
    lost_after: Annotated[float, typer.Option(help="seconds of silence before Lost")] = 10.0,
    metrics_address: Annotated[str | None, typer.Option(help="host:port for /metrics")] = None,
    tls_cert: Annotated[Path | None, typer.Option(envvar="TOKENFAB_SERVER_CERT")] = None,
    tls_key: Annotated[Path | None, typer.Option(envvar="TOKENFAB_SERVER_KEY")] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(envvar="TOKENFAB_CLIENT_CA", help="require client certs from this CA (mTLS)"),
    ] = None,
    tenants: Annotated[Path | None, typer.Option(help="tenants YAML: bearer tokens and quotas")] = None,
    operators_file: Annotated[
        Path | None, typer.Option(envvar="TOKENFAB_OPERATORS_FILE", help="operators YAML: tokens and roles")
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="allow plaintext on a non-loopback --address (no TLS: tokens in the clear)")
    ] = False,
    insecure_local_admin: InsecureLocalAdminOpt = False,
    executor_tls_ca: Annotated[
        Path | None,
        typer.Option(envvar="TOKENFAB_EXECUTOR_CA", help="mTLS to executors (this instance's --tls-cert)"),
    ] = None,
    catalog: Annotated[Path | None, typer.Option(help="catalog YAML overriding the packaged one")] = None,
    executor: Annotated[
        list[str] | None, typer.Option(help="CLUSTER=HOST:PORT of a cluster's executor (repeatable)")
    ] = None,
    reconcile_interval: Annotated[float, typer.Option(help="seconds between reconcile passes")] = 1.0,
    engine_mode: Annotated[str, typer.Option(help="simulated | real")] = "simulated",
    sim_start_delay: Annotated[float, typer.Option(help="simulated engine load time, s")] = 2.0,
    autoscale_interval: Annotated[float, typer.Option(help="seconds between autoscaler decisions")] = 5.0,
    leader_ttl: Annotated[int, typer.Option(help="seconds: the leader's etcd lease (election)")] = 5,
    identity: Annotated[
        str, typer.Option(envvar="POD_NAME", help="this instance in the leader key (default host:port:pid)")
    ] = "",
    gateway_url: Annotated[
        str, typer.Option(envvar="TOKENFAB_GATEWAY_URL", help="gateway base URL (requests' endpoint)")
    ] = "",
    operator_namespace: Annotated[
        list[str] | None,
        typer.Option(help="run the Kubernetes operator for CapacityRequests in this namespace (repeatable)"),
    ] = None,
    autoscale_down_delay: Annotated[
        float, typer.Option(help="seconds demand must stay low before a scale-down")
    ] = 300.0,
    autoscale_burst_hold: Annotated[
        float, typer.Option(help="seconds an observed burst keeps the capacity it needed")
    ] = 600.0,
    autoscale_zero_after: Annotated[
        float, typer.Option(help="seconds idle before a request that opted in scales to zero")
    ] = 300.0,
    log_format: Annotated[LogFormat, typer.Option()] = LogFormat.json,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run the control-plane server against an etcd cluster."""
    from pydantic import ValidationError

    from controlplane.api.server import ControlPlane
    from controlplane.config import ControlPlaneConfig
    from controlplane.domain.nodes import validation_message
    from controlplane.store.base import StoreUnavailable
    from tokenfab.logs import configure

    configure(fmt=log_format.value, level=log_level)
    try:
        config = ControlPlaneConfig(
            address=address,
            etcd_endpoint=etcd,
            etcd_tls_ca=etcd_ca,
            etcd_tls_cert=etcd_cert,
            etcd_tls_key=etcd_key,
            heartbeat_interval_s=heartbeat_interval,
            suspect_after_missed=suspect_after_missed,
            lost_after_s=lost_after,
            metrics_address=metrics_address,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
            tenants_file=tenants,
            operators_file=operators_file,
            insecure=insecure,
            insecure_local_admin=insecure_local_admin,
            executor_tls_ca=executor_tls_ca,
            catalog_file=catalog,
            executors=_pairs(executor or [], "executor"),
            reconcile_interval_s=reconcile_interval,
            engine_mode=engine_mode,  # type: ignore[arg-type]  # pydantic names a wrong value
            sim_start_delay_s=sim_start_delay,
            autoscale_interval_s=autoscale_interval,
            autoscale_down_delay_s=autoscale_down_delay,
            autoscale_burst_hold_s=autoscale_burst_hold,
            autoscale_zero_after_s=autoscale_zero_after,
            operator_namespaces=operator_namespace or [],
            leader_ttl_s=leader_ttl,
            identity=identity,
            gateway_url=gateway_url,
        )
    except ValidationError as exc:
        field, message = validation_message(exc)
        raise fail(f"{field}: {message}") from None

    async def serve() -> None:
        import signal

        plane = ControlPlane(config)
        await plane.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await plane.stop()

    try:
        asyncio.run(serve())
    except StoreUnavailable as exc:
        raise fail(str(exc), 3) from None
    except Exception as exc:
        from controlplane.errors import TokenfabError

        if isinstance(exc, TokenfabError | OSError | ValueError):
            raise fail(str(exc)) from None
        raise


agent_app = typer.Typer(help="Run a node agent, or check a node with `agent discover`.", add_completion=False)


@agent_app.callback(invoke_without_command=True)
@tls_options
def agent(
    ctx: typer.Context,
    backend: Annotated[str, typer.Option(help="auto|nvidia|ascend|metax|biren|simulated")] = "auto",
    node: Annotated[str | None, typer.Option(help="node id (simulated: the fleet node to become)")] = None,
    cluster: Annotated[str, typer.Option(envvar="TOKENFAB_CLUSTER")] = "default",
    region: Annotated[str, typer.Option(envvar="TOKENFAB_REGION")] = "",
    fleet: Annotated[Path | None, typer.Option(help="simulated fleet YAML (default: packaged fleet)")] = None,
    sim_epoch: Annotated[
        float | None, typer.Option(help="anchor for the fleet's relative lease times")
    ] = None,
    biren_model: Annotated[str, typer.Option(help="model when counting /dev/biren cards")] = "BR104",
    lease_provider: Annotated[str | None, typer.Option(help="leased node: provider")] = None,
    lease_id: Annotated[str | None, typer.Option(help="leased node: lease id")] = None,
    lease_end: Annotated[str | None, typer.Option(help="leased node: end time, ISO 8601 with zone")] = None,
    lease_price: Annotated[float, typer.Option(help="leased node: price per accelerator-hour")] = 0.0,
    preemptible: Annotated[bool, typer.Option(help="leased node can be preempted")] = False,
    lease_notice_url: Annotated[
        str | None,
        typer.Option(
            help="poll this http(s):// or file:// URL for preemption notices (EC2 instance-action "
            "JSON, or TRUE/FALSE), e.g. http://169.254.169.254/latest/meta-data/spot/instance-action"
        ),
    ] = None,
    lease_notice_interval: Annotated[float, typer.Option(help="seconds between notice polls")] = 5.0,
    lease_notice_flag_s: Annotated[
        float, typer.Option(help="a TRUE flag means the node goes away this many seconds later")
    ] = 30.0,
    lease_notice_header: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE header on notice polls (repeatable)")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(envvar="TOKENFAB_RAY_ADDRESS", help="join this Ray cluster (GCS host:port)")
    ] = None,
    ray_temp_dir: Annotated[Path | None, typer.Option(help="the raylet's --temp-dir")] = None,
    ray_node_ip: Annotated[
        str,
        typer.Option(
            envvar="TOKENFAB_RAY_NODE_IP",
            help="the raylet's --node-ip-address: where other Ray nodes reach it (Kubernetes: the pod IP)",
        ),
    ] = "127.0.0.1",
    address: AddressOpt = DEFAULT_ADDRESS,
    tls: TLSFlags = NO_TLS_FLAGS,
    log_format: Annotated[LogFormat, typer.Option()] = LogFormat.json,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run a node agent: discover devices, register, heartbeat."""
    if ctx.invoked_subcommand is not None:
        return  # `tokenfab agent discover` runs instead of the agent
    from agents.main import AgentOptions, run_agent
    from tokenfab.logs import configure

    configure(fmt=log_format.value, level=log_level)
    options = AgentOptions(
        backend=backend,
        node_id=node,
        cluster=cluster,
        region=region,
        fleet=fleet,
        sim_epoch=sim_epoch,
        biren_model=biren_model,
        lease_provider=lease_provider,
        lease_id=lease_id,
        lease_end=lease_end,
        lease_price=lease_price,
        preemptible=preemptible,
        lease_notice_url=lease_notice_url,
        lease_notice_interval_s=lease_notice_interval,
        lease_notice_flag_s=lease_notice_flag_s,
        lease_notice_headers=_pairs(lease_notice_header or [], "lease_notice_header"),
        address=address,
        tls=tls.resolve(),  # the agent: only what its flags name (no state-dir discovery)
        ray_address=ray_address,
        ray_temp_dir=ray_temp_dir,
        ray_node_ip=ray_node_ip,
    )
    code, message = run_agent(options)
    if code:
        raise fail(message, code)


app.add_typer(agent_app, name="agent")
agent_app.command("discover")(discover_command)


@app.command()
def up(
    headless: Annotated[bool, typer.Option(help="log lines instead of the live view")] = False,
    address: Annotated[str, typer.Option(help="control plane listen host:port")] = DEFAULT_ADDRESS,
    state_dir: Annotated[
        Path | None, typer.Option(envvar="TOKENFAB_STATE_DIR", help="default ./.tokenfab")
    ] = None,
    fleet: Annotated[Path | None, typer.Option(help="simulated fleet YAML (default: packaged fleet)")] = None,
    heartbeat_interval: Annotated[float, typer.Option()] = 1.0,
    lost_after: Annotated[float, typer.Option()] = 10.0,
    metrics_address: Annotated[str | None, typer.Option(help="host:port for /metrics")] = "127.0.0.1:9464",
    ray: Annotated[bool, typer.Option(help="start local Ray clusters and executors")] = True,
    sample: Annotated[bool, typer.Option(help="create the sample capacity request and load")] = True,
    gateway_address: Annotated[
        str, typer.Option(help="the OpenAI-compatible gateway's host:port (loopback)")
    ] = "127.0.0.1:8080",
    autoscale_down_delay: Annotated[
        float, typer.Option(help="seconds demand must stay low before a scale-down (demo: short)")
    ] = 60.0,
    autoscale_burst_hold: Annotated[
        float, typer.Option(help="seconds an observed burst keeps its capacity (demo: short)")
    ] = 120.0,
    autoscale_zero_after: Annotated[
        float, typer.Option(help="seconds idle before a request that opted in scales to zero")
    ] = 300.0,
) -> None:
    """Run everything locally: etcd, Ray per cluster, executors, the control plane, one simulated
    agent (and raylet) per fleet node, a sample capacity request and demo load."""
    from controlplane.cli.live import run_headless, run_live
    from controlplane.embedded.up import default_state_dir, run_up
    from tokenfab.logs import configure

    state = state_dir or default_state_dir()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    if headless:
        configure(fmt="json")
    else:
        configure(fmt="json", stream=(state / "logs" / "controlplane.log").open("a", buffering=1))
    overrides: dict[str, object] = {
        "heartbeat_interval_s": heartbeat_interval,
        "lost_after_s": lost_after,
        "metrics_address": metrics_address,
        "autoscale_down_delay_s": autoscale_down_delay,
        "autoscale_burst_hold_s": autoscale_burst_hold,
        "autoscale_zero_after_s": autoscale_zero_after,
    }
    try:
        code = asyncio.run(
            run_up(
                state_dir=state,
                address=address,
                fleet_file=fleet,
                config_overrides=overrides,
                on_ready=run_headless if headless else run_live,
                with_ray=ray,
                sample=sample,
                gateway_address=gateway_address,
            )
        )
    except Exception as exc:
        from agents.discovery.simulated import FleetFileError
        from controlplane.embedded.etcd import EtcdError
        from controlplane.embedded.ray import RayError

        if isinstance(exc, FleetFileError | EtcdError | RayError | OSError | ValueError):
            raise fail(str(exc)) from None
        raise
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
