"""The one authorization table: every gRPC method -> who may call it, what it changes, its target.

A method that is not in :data:`POLICY` is denied to everyone (the interceptor says so), and a unit
test walks every service the servers register and fails when one of their methods has no entry.

Access levels (a principal needs one of the rule's levels)::

    public          anyone, even without credentials (health checks for probes)
    authenticated   any principal (server reflection)
    viewer          an operator with role viewer or admin; the local principal
    admin           an operator with role admin; the local principal
    tenant          a tenant; the handler scopes everything to the tenant's own objects
    node            a node agent; ``node_field`` of the request must name the agent's own node
                    (the Kubernetes NodeRestriction idea); the local principal acts for any node
    controlplane    a control-plane instance (the executor's only client); the local principal

Purely computational, no side-effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controlplane.security.principals import Kind, Principal, Role


class Access(StrEnum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    VIEWER = "viewer"
    ADMIN = "admin"
    TENANT = "tenant"
    NODE = "node"
    CONTROLPLANE = "controlplane"


@dataclass(frozen=True, slots=True)
class Rule:
    allow: frozenset[Access]
    mutates: bool = False  # audited (principal, method, target, result, reason)
    target: str = ""  # request field naming the object acted on (audit; node scoping)
    node_field: str = ""  # set: a node principal may only name its own node here


def rule(*allow: Access, mutates: bool = False, target: str = "", node_field: str = "") -> Rule:
    return Rule(frozenset(allow), mutates, target or node_field, node_field)


A = Access
_V = "/tokenfab.v1."
POLICY: dict[str, Rule] = {
    # AgentService: a node agent, as its own node only
    _V + "AgentService/Register": rule(A.NODE, mutates=True, node_field="node_id"),
    _V + "AgentService/Connect": rule(A.NODE),  # every message's node checked by the handler
    # FleetService: reads for operators; changes for admins
    _V + "FleetService/ListNodes": rule(A.VIEWER),
    _V + "FleetService/GetNode": rule(A.VIEWER),
    _V + "FleetService/WatchNodes": rule(A.VIEWER),
    _V + "FleetService/Cordon": rule(A.ADMIN, mutates=True, target="node_id"),
    _V + "FleetService/Uncordon": rule(A.ADMIN, mutates=True, target="node_id"),
    _V + "FleetService/Drain": rule(A.ADMIN, mutates=True, target="node_id"),
    _V + "FleetService/RevokeLease": rule(A.ADMIN, mutates=True, target="node_id"),
    _V + "FleetService/ExtendLease": rule(A.ADMIN, mutates=True, target="node_id"),
    _V + "FleetService/ListEvents": rule(A.VIEWER, A.TENANT),  # tenants: their own requests' events
    # CapacityService: tenants own their requests; operators read everyone's
    _V + "CapacityService/Create": rule(A.TENANT, mutates=True, target="idempotency_key"),
    _V + "CapacityService/Get": rule(A.TENANT, A.VIEWER),
    _V + "CapacityService/List": rule(A.TENANT, A.VIEWER),
    _V + "CapacityService/Watch": rule(A.TENANT, A.VIEWER),
    _V + "CapacityService/Update": rule(A.TENANT, mutates=True, target="id"),
    _V + "CapacityService/Cancel": rule(A.TENANT, mutates=True, target="id"),
    _V + "CapacityService/ListReplicas": rule(A.TENANT, A.VIEWER),
    # AutoscalerService: tenants see their own requests' decisions; the mode is the admins'
    _V + "AutoscalerService/GetStatus": rule(A.TENANT, A.VIEWER),
    _V + "AutoscalerService/ListDecisions": rule(A.TENANT, A.VIEWER),
    _V + "AutoscalerService/SetMode": rule(A.ADMIN, mutates=True, target="mode"),
    # AuditService: who changed what, and who was refused
    _V + "AuditService/ListAudit": rule(A.ADMIN),
    # ExecutorService: control-plane instances only
    _V + "ExecutorService/Inventory": rule(A.CONTROLPLANE),
    _V + "ExecutorService/StartReplica": rule(A.CONTROLPLANE, mutates=True, target="launch.replica_id"),
    _V + "ExecutorService/StopReplica": rule(A.CONTROLPLANE, mutates=True, target="replica_id"),
    _V + "ExecutorService/Observe": rule(A.CONTROLPLANE),
    # infrastructure
    "/grpc.health.v1.Health/Check": rule(A.PUBLIC),
    "/grpc.health.v1.Health/Watch": rule(A.PUBLIC),
    "/grpc.health.v1.Health/List": rule(A.PUBLIC),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": rule(A.AUTHENTICATED),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": rule(A.AUTHENTICATED),
}


def grants(access: Access, principal: Principal) -> bool:
    """Whether ``principal`` holds ``access`` (before any resource scoping)."""
    kind, role = principal.kind, principal.role
    if access is Access.PUBLIC or access is Access.AUTHENTICATED:
        return True
    if access is Access.VIEWER:
        return kind is Kind.LOCAL or (kind is Kind.OPERATOR and role in (Role.VIEWER, Role.ADMIN))
    if access is Access.ADMIN:
        return kind is Kind.LOCAL or (kind is Kind.OPERATOR and role is Role.ADMIN)
    if access is Access.TENANT:
        return kind is Kind.TENANT
    if access is Access.NODE:
        return kind in (Kind.NODE, Kind.LOCAL)
    return kind in (Kind.CONTROLPLANE, Kind.LOCAL)  # Access.CONTROLPLANE


def allowed(entry: Rule, principal: Principal | None) -> bool:
    if principal is None:
        return Access.PUBLIC in entry.allow
    return any(grants(access, principal) for access in entry.allow)


def needs(entry: Rule) -> str:
    """The rule's levels in words, for a denial message."""
    return " or ".join(sorted(a.value for a in entry.allow))


def short(method: str) -> str:
    """``/tokenfab.v1.FleetService/Drain`` -> ``FleetService/Drain``."""
    service, _, name = method.lstrip("/").rpartition("/")
    return f"{service.rpartition('.')[2]}/{name}"
