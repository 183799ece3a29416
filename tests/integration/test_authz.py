"""Who may call what, against the real control plane and executor servers over real mTLS: the
matrix generated from the policy table, denial messages, audit entries and refusal metrics."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from controlplane.embedded.etcd import free_port
from tests.integration.authz_matrix import (
    CONTROL_PLANE_SERVICES,
    EXECUTOR_SERVICES,
    callers,
    executor_server,
    methods,
    run_matrix,
    secure_channel,
    summary,
)
from tests.integration.conftest import ControlPlaneFactory, Deployment, dial, metric_value, wait_for
from tokenfab.v1 import audit_pb2, audit_pb2_grpc, fleet_pb2, fleet_pb2_grpc

TENANTS = "tenants:\n  - {name: tenant-a, token: token-a}\n  - {name: tenant-b, token: token-b}\n"


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS)
    return path


async def test_every_rpc_by_every_kind_of_caller_matches_the_policy_table(
    control_plane: ControlPlaneFactory, deployment: Deployment, tenants_file: Path
) -> None:
    plane = await control_plane(tenants_file=tenants_file)
    tokens = {"tenant-a": "token-a", "tenant-b": "token-b", "admin": deployment.admin_token,
              "viewer": deployment.viewer_token}  # fmt: skip
    who = callers(deployment, tokens)
    outcomes = await run_matrix(plane.config.address, who, CONTROL_PLANE_SERVICES, dial=secure_channel)
    port = free_port()
    executor = await executor_server(deployment, port)
    try:
        outcomes += await run_matrix(f"127.0.0.1:{port}", who, EXECUTOR_SERVICES, dial=secure_channel)
    finally:
        await executor.stop(0.1)
    result = summary(outcomes)
    assert result["unexpected_allows"] == []
    assert result["unexpected_denies"] == []
    assert result["cases"] == len(who) * (
        len(methods(CONTROL_PLANE_SERVICES)) + len(methods(EXECUTOR_SERVICES))
    )
    assert result["principals"] == 11 and result["methods"] >= 29
    # both answers occur for every caller with a handshake: the matrix is not all-allow or all-deny
    for caller in who[2:]:
        seen = {o.allowed for o in outcomes if o.caller == caller.name}
        assert seen == {True, False}, caller.name
    denials = sum(
        s.value for m in plane.metrics.authz_denials.collect() for s in m.samples if s.name.endswith("_total")
    )
    refusals = sum(
        s.value
        for m in plane.metrics.authn_failures.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )
    assert denials > 0 and refusals > 0


async def test_refusals_name_the_principal_and_the_method_and_are_audited(
    control_plane: ControlPlaneFactory, deployment: Deployment, tenants_file: Path
) -> None:
    plane = await control_plane(tenants_file=tenants_file)
    async with dial(plane, "token-a") as channel:
        fleet = fleet_pb2_grpc.FleetServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fleet.Drain(fleet_pb2.DrainRequest(node_id="n1", reason="mine now"), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "tenant/tenant-a" in (info.value.details() or "")
        assert "FleetService/Drain" in (info.value.details() or "")
    async with dial(plane, "viewer") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fleet_pb2_grpc.FleetServiceStub(channel).Cordon(
                fleet_pb2.CordonRequest(node_id="n1"), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "operator/watcher (viewer)" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the audit log is the admins'
            await audit_pb2_grpc.AuditServiceStub(channel).ListAudit(audit_pb2.ListAuditRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with dial(plane, "admin") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:  # allowed, but no such node
            await fleet_pb2_grpc.FleetServiceStub(channel).Cordon(
                fleet_pb2.CordonRequest(node_id="n1"), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        entries = (
            await audit_pb2_grpc.AuditServiceStub(channel).ListAudit(audit_pb2.ListAuditRequest(), timeout=5)
        ).entries
    rows = [(e.principal, e.method, e.target, e.result) for e in entries]
    assert ("tenant/tenant-a", "FleetService/Drain", "n1", "PERMISSION_DENIED") in rows
    assert ("operator/watcher (viewer)", "FleetService/Cordon", "n1", "PERMISSION_DENIED") in rows
    assert ("operator/ops (admin)", "FleetService/Cordon", "n1", "NOT_FOUND") in rows
    assert all(e.peer.startswith("ipv4:127.0.0.1:") for e in entries)


async def test_a_revoked_operator_token_stops_working_without_a_restart(
    control_plane: ControlPlaneFactory, deployment: Deployment, tmp_path: Path
) -> None:
    operators = tmp_path / "operators.yaml"
    operators.write_text("operators:\n  - {name: temp, role: admin, token: temporary-token}\n")
    plane = await control_plane(operators_file=operators)
    async with dial(plane, "temporary-token") as channel:
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        assert not (await stub.ListNodes(fleet_pb2.ListNodesRequest(), timeout=5)).nodes
        operators.write_text("operators:\n  - {name: temp, role: viewer, token: other-token}\n")

        async def refused() -> bool:
            try:
                await stub.ListNodes(fleet_pb2.ListNodesRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                return True
            return False

        # the file is checked at most once a second
        await wait_for(refused, timeout=10, interval=0.1, what="the revoked token refused")


async def test_a_caller_hammering_a_denied_method_costs_bounded_audit_writes(
    control_plane: ControlPlaneFactory, deployment: Deployment, tenants_file: Path
) -> None:
    plane = await control_plane(tenants_file=tenants_file)
    async with dial(plane, "token-b") as channel:
        fleet = fleet_pb2_grpc.FleetServiceStub(channel)
        for _ in range(60):
            with pytest.raises(grpc.aio.AioRpcError):
                await fleet.Cordon(fleet_pb2.CordonRequest(node_id="n1"), timeout=5)
    denied = metric_value(plane.metrics.authz_denials, method="FleetService/Cordon", kind="tenant")
    assert denied == 60  # every refusal is counted
    async with dial(plane, "admin") as channel:
        entries = (
            await audit_pb2_grpc.AuditServiceStub(channel).ListAudit(
                audit_pb2.ListAuditRequest(principal="tenant/tenant-b", limit=1000), timeout=5
            )
        ).entries
    assert 1 <= len(entries) <= 20  # but only the first of a burst reach etcd
