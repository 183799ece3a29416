"""The security core without a network: the policy table covers every method, identities parse,
token files reload, the local CA's certificates carry the identities the interceptor reads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from controlplane.errors import Unauthenticated
from controlplane.security import (
    LOCAL,
    POLICY,
    Access,
    Authenticator,
    Kind,
    LocalCA,
    OperatorDirectory,
    Principal,
    Reloading,
    Role,
    TenantDirectory,
    TokenFileError,
    identity_of_pem,
    spiffe_uri,
    token_digest,
)
from controlplane.security.authn import is_loopback_peer
from controlplane.security.policy import allowed, grants
from controlplane.security.principals import principal_from_uri
from tokenfab.v1 import agent_pb2, audit_pb2, autoscaler_pb2, capacity_pb2, executor_pb2, fleet_pb2

SERVED = [agent_pb2, audit_pb2, autoscaler_pb2, capacity_pb2, executor_pb2, fleet_pb2, health_pb2]


def served_methods() -> list[str]:
    methods = []
    for module in SERVED:
        for service in module.DESCRIPTOR.services_by_name.values():
            methods += [f"/{service.full_name}/{m.name}" for m in service.methods]
    reflection = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
    methods += [f"/{reflection.full_name}/{m.name}" for m in reflection.methods]
    return methods


def test_every_served_method_has_a_policy_entry() -> None:
    missing = [m for m in served_methods() if m not in POLICY]
    assert not missing, f"methods without an authorization policy (denied to everyone): {missing}"
    assert len(served_methods()) >= 30


def test_only_infrastructure_is_public_and_every_write_is_audited() -> None:
    public = sorted(m for m, r in POLICY.items() if Access.PUBLIC in r.allow)
    assert public == [m for m in public if m.startswith("/grpc.health.v1.Health/")] and public
    for method in ("Cordon", "Drain", "RevokeLease", "ExtendLease", "Uncordon"):
        assert POLICY[f"/tokenfab.v1.FleetService/{method}"].mutates
        assert POLICY[f"/tokenfab.v1.FleetService/{method}"].allow == {Access.ADMIN}
    assert POLICY["/tokenfab.v1.AgentService/Register"].node_field == "node_id"
    for method, rule in POLICY.items():
        if method.startswith("/tokenfab.v1.ExecutorService/"):
            assert rule.allow == {Access.CONTROLPLANE}, method


@pytest.mark.parametrize(
    ("principal", "access", "expected"),
    [
        (Principal(Kind.OPERATOR, "a", Role.ADMIN), Access.ADMIN, True),
        (Principal(Kind.OPERATOR, "v", Role.VIEWER), Access.ADMIN, False),
        (Principal(Kind.OPERATOR, "v", Role.VIEWER), Access.VIEWER, True),
        (Principal(Kind.TENANT, "t"), Access.VIEWER, False),
        (Principal(Kind.TENANT, "t"), Access.TENANT, True),
        (Principal(Kind.NODE, "n"), Access.ADMIN, False),
        (Principal(Kind.NODE, "n"), Access.NODE, True),
        (Principal(Kind.EXECUTOR, "c"), Access.NODE, False),
        (Principal(Kind.EXECUTOR, "c"), Access.CONTROLPLANE, False),
        (Principal(Kind.CONTROLPLANE, "i"), Access.CONTROLPLANE, True),
        (Principal(Kind.CLIENT, "cli"), Access.VIEWER, False),
        (Principal(Kind.CLIENT, "cli"), Access.AUTHENTICATED, True),
        (LOCAL, Access.ADMIN, True),
        (LOCAL, Access.TENANT, False),
    ],
)
def test_grants(principal: Principal, access: Access, expected: bool) -> None:
    assert grants(access, principal) is expected


def test_nobody_is_allowed_only_public_methods() -> None:
    for method, rule in POLICY.items():
        assert allowed(rule, None) is (Access.PUBLIC in rule.allow), method


def test_workload_uris() -> None:
    assert spiffe_uri(Kind.NODE, "gpu-1") == "spiffe://tokenfab/node/gpu-1"
    assert principal_from_uri("spiffe://tokenfab/node/gpu-1") == Principal(Kind.NODE, "gpu-1")
    for bad in (
        "spiffe://other/node/x", "spiffe://tokenfab/operator/x", "spiffe://tokenfab/node/",
        "spiffe://tokenfab/node/../etc", "https://tokenfab/node/x", "spiffe://tokenfab/tenant/x",
    ):  # fmt: skip
        assert principal_from_uri(bad) is None, bad
    with pytest.raises(ValueError, match="kind"):
        spiffe_uri(Kind.OPERATOR, "x")


def test_local_ca_certificates_carry_their_identity(tmp_path: Path) -> None:
    ca = LocalCA.open(tmp_path / "pki")
    issued = ca.issue(Kind.EXECUTOR, "cluster-a")
    assert identity_of_pem(issued.cert.read_bytes()) == Principal(Kind.EXECUTOR, "cluster-a")
    assert os.stat(issued.key).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "pki" / "ca.key").st_mode & 0o777 == 0o600
    again = LocalCA.open(tmp_path / "pki")  # reopened: same CA, the certificate is reused
    assert again.issue(Kind.EXECUTOR, "cluster-a").cert.read_bytes() == issued.cert.read_bytes()
    with pytest.raises(Unauthenticated, match="URI SAN"):
        identity_of_pem(ca.cert_file.read_bytes())  # the CA itself names no workload


def test_tokens_are_matched_by_digest_and_files_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "operators.yaml"
    path.write_text(
        "operators:\n"
        f"  - {{name: alice, role: admin, token_sha256: {token_digest('alice-secret')}}}\n"
        "  - {name: bob, role: viewer, token: bob-secret}\n"
    )
    ops = OperatorDirectory.load(path)
    found = ops.find("alice-secret")
    assert found is not None and found.role is Role.ADMIN
    assert ops.find("bob-secret") is not None and ops.find("nobody") is None
    for text, field in (
        ("operators:\n  - {name: c, role: root, token: x}\n", "role"),
        ("operators:\n  - {name: c, role: admin}\n", "token"),
        ("operators:\n  - {name: c, role: admin, token_sha256: abc}\n", "token_sha256"),
        (
            "operators:\n  - {name: c, role: admin, token: x}\n  - {name: d, role: viewer, token: x}\n",
            "share",
        ),
        ("people: []\n", "operators"),
    ):
        path.write_text(text)
        with pytest.raises(TokenFileError, match=field):
            OperatorDirectory.load(path)


def test_a_changed_file_revokes_a_token_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  - {name: a, token: token-a, max_priority: 5}\n")
    source = Reloading(path, TenantDirectory.load, check_s=0.0)
    authn = Authenticator(tenants=source)
    source.load()
    assert authn.from_token("token-a") == Principal(Kind.TENANT, "a")
    tenant = source.get().tenant("a")
    assert tenant is not None and tenant.max_priority == 5
    time.sleep(0.01)
    path.write_text("tenants:\n  - {name: a, token: token-a2}\n")  # rotated
    with pytest.raises(Unauthenticated, match="unknown token"):
        authn.from_token("token-a")
    assert authn.from_token("token-a2") == Principal(Kind.TENANT, "a")
    path.write_text("tenants: [oops")  # a broken file keeps the last good directory
    assert authn.from_token("token-a2") == Principal(Kind.TENANT, "a")


def test_authentication_order() -> None:
    authn = Authenticator(insecure_local_admin=True)
    plaintext = {"transport_security_type": [b"insecure"]}
    assert authn.authenticate([], plaintext, "ipv4:127.0.0.1:5000") is LOCAL
    assert authn.authenticate([], plaintext, "ipv4:10.0.0.7:5000") is None  # never from afar
    assert authn.authenticate([], {"transport_security_type": [b"ssl"]}, "ipv4:127.0.0.1:1") is None
    with pytest.raises(Unauthenticated, match="unknown token"):  # a token is never ignored
        authn.authenticate([("authorization", "Bearer x")], plaintext, "ipv4:127.0.0.1:5000")
    assert not Authenticator().authenticate([], plaintext, "ipv4:127.0.0.1:5000")
    assert is_loopback_peer("ipv6:[::1]:80") and not is_loopback_peer("ipv4:128.0.0.1:1")


def test_plaintext_beyond_loopback_needs_insecure(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from controlplane.config import ControlPlaneConfig, is_loopback
    from controlplane.errors import InvalidArgument
    from controlplane.executor.service import check_listen
    from tokenfab.tls import ServerTLS

    for address in ("0.0.0.0:50051", "10.1.2.3:50051", "[::]:50051"):
        assert not is_loopback(address)
        with pytest.raises(ValidationError, match=r"address: .* not a loopback address"):
            ControlPlaneConfig(address=address)
        assert ControlPlaneConfig(address=address, insecure=True).insecure
        with pytest.raises(InvalidArgument, match="listen"):
            check_listen(address, None, insecure=False)
        check_listen(address, None, insecure=True)
    for address in ("127.0.0.1:1", "localhost:1", "[::1]:1"):
        assert is_loopback(address)
        ControlPlaneConfig(address=address)
    pem = tmp_path / "x.pem"
    with pytest.raises(InvalidArgument, match="tls_client_ca"):  # an executor admits only control planes
        check_listen("0.0.0.0:1", ServerTLS(pem, pem), insecure=False)


async def test_the_audit_log_is_append_only_and_bounded() -> None:
    from datetime import UTC, datetime

    from controlplane.security import AuditEntry, AuditLog
    from controlplane.store.memory import MemoryStore

    store = MemoryStore()
    audit = AuditLog(store, max_entries=100, trim_every=10)
    for i in range(250):
        await audit.append(
            AuditEntry(at=datetime.now(UTC), principal="tenant/a", method="CapacityService/Create",
                       target=f"k{i}", result="OK", reason="x" * 2000)
        )  # fmt: skip
    entries = await audit.list(limit=0)
    assert 100 <= len(entries) <= 110  # trimmed every 10 appends to the newest 100
    assert entries[-1].target == "k249" and int(entries[0].target[1:]) >= 140
    assert all(len(e.reason) <= 512 for e in entries)  # bounded text
    assert audit.failures == 0
    await store.put("/tokenfab/v1/audit/99999999999999999999-000000", b"not json")
    assert len(await audit.list(limit=0)) == len(entries)  # an unreadable entry is skipped
