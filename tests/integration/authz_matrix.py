"""The authorization matrix, generated from the policy table: every RPC x every kind of caller
against real servers with real mTLS. Shared by tests/integration/test_authz.py and bench/authz.py.

A call counts as *denied* when it ends with UNAUTHENTICATED or PERMISSION_DENIED, or cannot even
complete the TLS handshake (UNAVAILABLE); anything else (OK, NOT_FOUND, INVALID_ARGUMENT, a
deadline on a watch that has nothing to say yet, ...) got past authorization: *allowed*. The
requests are minimal messages naming objects that do not exist, so allowed calls change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from controlplane.security import POLICY, Kind, Principal, Role
from controlplane.security.policy import allowed
from tokenfab.tls import ClientTLS
from tokenfab.v1 import agent_pb2, audit_pb2, autoscaler_pb2, capacity_pb2, executor_pb2, fleet_pb2, types_pb2

CONTROL_PLANE_SERVICES = [agent_pb2, audit_pb2, autoscaler_pb2, capacity_pb2, fleet_pb2, health_pb2]
EXECUTOR_SERVICES = [executor_pb2, health_pb2]
NODE_X, NODE_Y = "node-x", "node-y"
NODE_SCOPED = {"/tokenfab.v1.AgentService/Connect"} | {m for m, r in POLICY.items() if r.node_field}
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE}


@dataclass(frozen=True)
class Caller:
    """One kind of caller: the principal it should be, and how it connects."""

    name: str
    principal: Principal | None  # None: refused at the handshake (no or a foreign certificate)
    tls: ClientTLS
    token: str | None = None


def methods(modules: list[Any]) -> list[MethodDescriptor]:
    found = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            found += list(service.methods)
    return found


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def expected_allowed(method: str, caller: Caller) -> bool:
    principal = caller.principal
    if principal is None:
        return False  # no handshake, no call (not even health)
    rule = POLICY.get(method)
    if rule is None or not allowed(rule, principal):
        return False
    if method in NODE_SCOPED and principal.kind is Kind.NODE:
        return principal.name == NODE_Y  # every request names node Y
    return True


def request_for(method: MethodDescriptor) -> Any:
    """A minimal request naming node Y and objects that do not exist."""
    cls = message_factory.GetMessageClass(method.input_type)
    message = cls()
    if method.input_type.full_name == "tokenfab.v1.RegisterRequest":
        message.node_id, message.cluster, message.vendor = NODE_Y, "c", types_pb2.VENDOR_NVIDIA
        message.devices.add(uuid=f"{NODE_Y}-0", index=0, model="H100", memory_bytes=80 * 1024**3)
        return message
    for field in ("node_id", "id", "request_id", "replica_id"):
        if field in cls.DESCRIPTOR.fields_by_name:
            setattr(message, field, NODE_Y if field == "node_id" else "cr-does-not-exist")
    return message


async def call(
    channel: grpc.aio.Channel, method: MethodDescriptor, metadata: tuple[Any, ...]
) -> grpc.StatusCode:
    request = request_for(method)
    response_cls = message_factory.GetMessageClass(method.output_type)
    kwargs = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": response_cls.FromString,
    }
    try:
        if method.client_streaming and method.server_streaming:
            stream = channel.stream_stream(path(method), **kwargs)(metadata=metadata, timeout=3)
            if method.name == "Connect":
                await stream.write(
                    agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(node_id=NODE_Y, seq=1))
                )
            else:
                await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            await stream.read()
            stream.cancel()
        elif method.server_streaming:
            stream = channel.unary_stream(path(method), **kwargs)(request, metadata=metadata, timeout=1.5)
            await stream.read()
            stream.cancel()
        else:
            await channel.unary_unary(path(method), **kwargs)(request, metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@dataclass
class Outcome:
    method: str
    caller: str
    expected: bool
    code: str

    @property
    def allowed(self) -> bool:
        return self.code not in {c.name for c in DENIED}


async def run_matrix(
    address: str,
    callers: list[Caller],
    modules: list[Any],
    *,
    dial: Callable[[str, ClientTLS], grpc.aio.Channel],
) -> list[Outcome]:
    outcomes = []
    for caller in callers:
        async with dial(address, caller.tls) as channel:
            metadata = (("authorization", f"Bearer {caller.token}"),) if caller.token else ()
            for method in methods(modules):
                code = await call(channel, method, metadata)
                outcomes.append(
                    Outcome(path(method), caller.name, expected_allowed(path(method), caller), code.name)
                )
    return outcomes


def callers(deployment: Any, tokens: dict[str, str]) -> list[Caller]:
    """none, another CA, tenants A and B, the agent of node X (acting on node Y), the agent of
    node Y, an executor, a control-plane instance, a bare client certificate, viewer, admin."""
    ca = deployment.ca.cert_file
    client = deployment.tls()
    return [
        Caller("none", None, ClientTLS(ca)),
        Caller("other-ca", None, deployment.tls(Kind.NODE, NODE_X, rogue=True)),
        Caller("tenant-a", Principal(Kind.TENANT, "tenant-a"), client, tokens["tenant-a"]),
        Caller("tenant-b", Principal(Kind.TENANT, "tenant-b"), client, tokens["tenant-b"]),
        Caller("node-x-as-y", Principal(Kind.NODE, NODE_X), deployment.tls(Kind.NODE, NODE_X)),
        Caller("node-y", Principal(Kind.NODE, NODE_Y), deployment.tls(Kind.NODE, NODE_Y)),
        Caller("executor", Principal(Kind.EXECUTOR, "c"), deployment.tls(Kind.EXECUTOR, "c")),
        Caller(
            "controlplane", Principal(Kind.CONTROLPLANE, "other"), deployment.tls(Kind.CONTROLPLANE, "other")
        ),
        Caller("client-cert", Principal(Kind.CLIENT, "tests"), client),
        Caller("viewer", Principal(Kind.OPERATOR, "watcher", Role.VIEWER), client, tokens["viewer"]),
        Caller("admin", Principal(Kind.OPERATOR, "ops", Role.ADMIN), client, tokens["admin"]),
    ]


def secure_channel(address: str, tls: ClientTLS) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(address, tls.credentials(), options=tls.channel_options())


async def executor_server(deployment: Any, port: int) -> grpc.aio.Server:
    """The executor's real server (interceptor chain, mTLS) over an empty cluster backend."""
    from controlplane.executor.service import executor_server as build
    from tokenfab.tls import ServerTLS

    issued = deployment.issue(Kind.EXECUTOR, "matrix")
    server, health = build(EmptyCluster())
    server.add_secure_port(
        f"127.0.0.1:{port}", ServerTLS(issued.cert, issued.key, deployment.ca.cert_file).credentials()
    )
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    return server


class EmptyCluster:
    """A cluster with no Ray nodes and no replicas: what the executor's API answers for one. The
    real Ray backend is exercised by rayworld/test_ray_replicas.py; here only who may call matters."""

    cluster = "matrix"

    async def inventory(self) -> executor_pb2.InventoryResponse:
        return executor_pb2.InventoryResponse(cluster=self.cluster)

    async def start(self, launch: executor_pb2.ReplicaLaunch) -> executor_pb2.ReplicaObservation:
        return executor_pb2.ReplicaObservation(
            replica_id=launch.replica_id, state="failed", message="no nodes"
        )

    async def stop(self, replica_id: str, drain_s: float) -> bool:
        return False

    async def observe(self) -> list[executor_pb2.ReplicaObservation]:
        return []


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    return {
        "methods": len({o.method for o in outcomes}),
        "principals": len({o.caller for o in outcomes}),
        "cases": len(outcomes),
        "unexpected_allows": [
            f"{o.caller} {o.method} {o.code}" for o in outcomes if o.allowed and not o.expected
        ],
        "unexpected_denies": [
            f"{o.caller} {o.method} {o.code}" for o in outcomes if o.expected and not o.allowed
        ],
    }
