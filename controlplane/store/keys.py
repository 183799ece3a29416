"""Key layout of everything Tokenfab keeps in etcd.

All keys live under one versioned root so that several Tokenfab installations (or a future
``v2`` layout) can share an etcd cluster without touching each other::

    /tokenfab/v1/nodes/<node_id>        NodeRecord (pydantic JSON): registration, state, cordon,
                                        per-device health. Written on registration and on state
                                        or health changes, never per heartbeat.

    /tokenfab/v1/capacity/requests/<id>
                                        CapacityRecord (pydantic JSON): spec, status, estimate
    /tokenfab/v1/capacity/idempotency/<tenant>/<sha256 of the key>
                                        the request id; created in one transaction with the
                                        request, so one key never yields two requests
    /tokenfab/v1/capacity/admission/<tenant>/<20-digit n>
                                        the request id admitted n-th under the tenant's quota,
                                        created with it (one txn): concurrent creates serialise
    /tokenfab/v1/audit/<20-digit time ns>-<6-digit seq>
                                        AuditEntry: mutating and refused calls (append-only,
                                        bounded; controlplane.security.audit)

    /tokenfab/v1/replicas/<replica id>  ReplicaRecord (pydantic JSON): placement, state, reason;
                                        written by the reconciler before it acts
    /tokenfab/v1/calibration            performance-model correction factors per
                                        "<model>|<accelerator>" (JSON), written when one moves

    /tokenfab/v1/autoscaler/mode        ModeRecord: active | advisory | off (the kill switch)
    /tokenfab/v1/autoscaler/targets/<request id>
                                        AppliedTarget: the output tokens/s the replicas are sized for
    /tokenfab/v1/autoscaler/history/<request id>/<20-digit time ns>
                                        DecisionRecord, bounded per request (oldest deleted)

    /tokenfab/v1/leader                 the leading control-plane instance (JSON: identity, since),
                                        attached to its etcd lease
    /tokenfab/v1/presence/<node_id>     the control-plane instance holding the node's agent stream,
                                        on that instance's etcd lease (gone when it dies)
    /tokenfab/v1/events/<20-digit time ns>-<6-digit seq>
                                        EventRecord: failover steps and node changes (bounded)
    /tokenfab/v1/gateway/demand/<request id>/<instance>
                                        GatewayDemand: offered calls and tokens/s, queue, refusals
                                        as one gateway instance sees them (on its etcd lease)
    /tokenfab/v1/usage/<tenant>/<YYYYMMDDHH>/<request id>
                                        UsageRecord: tokens the gateway served in that UTC hour
                                        (added to with compare-and-swap; billing reads them)

Keep this docstring the single map of the keyspace.
"""

from __future__ import annotations

ROOT = "/tokenfab/v1/"
NODES = ROOT + "nodes/"
CAPACITY_REQUESTS = ROOT + "capacity/requests/"
CAPACITY_IDEMPOTENCY = ROOT + "capacity/idempotency/"
REPLICAS = ROOT + "replicas/"
CALIBRATION = ROOT + "calibration"
LEADER = ROOT + "leader"
EVENTS = ROOT + "events/"
PRESENCE = ROOT + "presence/"


def node(node_id: str) -> str:
    return NODES + node_id


def node_id_of(key: str) -> str:
    if not key.startswith(NODES):
        raise ValueError(f"key {key!r} is not a node key")
    return key[len(NODES) :]


def capacity_request(request_id: str) -> str:
    return CAPACITY_REQUESTS + request_id


def capacity_idempotency(tenant: str, digest: str) -> str:
    return f"{CAPACITY_IDEMPOTENCY}{tenant}/{digest}"


def replica(replica_id: str) -> str:
    return REPLICAS + replica_id


AUTOSCALER_MODE = ROOT + "autoscaler/mode"
AUTOSCALER_TARGETS = ROOT + "autoscaler/targets/"
AUTOSCALER_HISTORY = ROOT + "autoscaler/history/"
AUTOSCALER_STATE = ROOT + "autoscaler/state/"  # the policy's memory per request (smoother, windows)


def autoscaler_target(request_id: str) -> str:
    return AUTOSCALER_TARGETS + request_id


def autoscaler_history(request_id: str) -> str:
    """The prefix of one request's decisions (keys sort by time)."""
    return f"{AUTOSCALER_HISTORY}{request_id}/"


def autoscaler_decision(request_id: str, at_ns: int) -> str:
    return f"{autoscaler_history(request_id)}{at_ns:020d}"


def event(at_ns: int, seq: int) -> str:
    return f"{EVENTS}{at_ns:020d}-{seq:06d}"


def presence(node_id: str) -> str:
    return PRESENCE + node_id


def autoscaler_state(request_id: str) -> str:
    return AUTOSCALER_STATE + request_id


GATEWAY_DEMAND = ROOT + "gateway/demand/"


def gateway_demand(request_id: str, instance: str) -> str:
    for name, part in (("request_id", request_id), ("instance", instance)):
        if not part or "/" in part:
            raise ValueError(f"{name}: {part!r} cannot be part of a key")
    return f"{GATEWAY_DEMAND}{request_id}/{instance}"


USAGE = ROOT + "usage/"


def usage(tenant: str, hour: str, request_id: str) -> str:
    """One tenant's usage of one request in one UTC hour (``YYYYMMDDHH``)."""
    for name, part in (("tenant", tenant), ("hour", hour), ("request_id", request_id)):
        if not part or "/" in part:
            raise ValueError(f"{name}: {part!r} cannot be part of a key")
    return f"{USAGE}{tenant}/{hour}/{request_id}"
