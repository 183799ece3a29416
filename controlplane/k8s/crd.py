"""CapacityRequest and AcceleratorNode objects <-> Tokenfab's domain, and the operator's decisions.

Pure: dictionaries in (as the Kubernetes API returns them), dictionaries and actions out; the
operator (:mod:`controlplane.k8s.operator`) does the I/O. Field names in the CRs are the gRPC
API's in camelCase (``outputTokensPerSecond`` for ``output_tokens_per_second``).

The finalizer flow for one CapacityRequest, decided by :func:`plan`:

1. Being deleted with our finalizer: cancel the Tokenfab request (if it is still active), then
   remove the finalizer; Kubernetes deletes the object.
2. No finalizer yet: add it first (before anything exists in Tokenfab that a delete could leak).
3. An invalid spec: no Tokenfab request; status phase ``Invalid`` with the field and why.
4. No Tokenfab request yet: create it, idempotent on the object's UID (a retry after a crash
   between create and status write finds the same request).
5. The spec changed (``metadata.generation`` > ``status.observedGeneration``): update what the
   API can update in place (output and input tokens/s); a change to anything else is reported
   in a condition, not silently ignored.
6. Always: the status from the Tokenfab request, written only when it differs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from controlplane.domain.capacity import CapacityRecord, CapacitySpec, Phase
from controlplane.domain.nodes import validation_message
from controlplane.errors import InvalidArgument

GROUP = "tokenfab.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = "tokenfab.io/capacity-request"
TENANT_ANNOTATION = "tokenfab.io/tenant"
UPDATABLE = ("output_tokens_per_second", "input_tokens_per_second")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _camel_path(path: str) -> str:
    """``spec.latency.ttft_p95_ms`` -> ``spec.latency.ttftP95Ms`` (indices kept)."""
    return ".".join(re.sub(r"^[a-z0-9_]+", lambda m: _camel(m.group(0)), part) for part in path.split("."))


def _snake_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_snake(str(k)): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def spec_from_cr(obj: Mapping[str, Any]) -> CapacitySpec:
    """The CR's spec as a :class:`CapacitySpec`; InvalidArgument names the CR field (camelCase)."""
    raw = obj.get("spec")
    if not isinstance(raw, dict):
        raise InvalidArgument("spec", "is required")
    try:
        return CapacitySpec.model_validate(_snake_keys(raw))
    except ValidationError as exc:
        where, message = validation_message(exc, prefix="spec.")
        raise InvalidArgument(_camel_path(where), message) from None


def cr_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def idempotency_key(obj: Mapping[str, Any]) -> str:
    """Stable per object (its UID): a retried create returns the same Tokenfab request."""
    return "k8s:" + str(obj.get("metadata", {}).get("uid", ""))


def tenant_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return str((meta.get("annotations") or {}).get(TENANT_ANNOTATION) or meta.get("namespace", ""))


# -- status ----------------------------------------------------------------------------------------


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def status_from_record(
    record: CapacityRecord | None,
    *,
    generation: int,
    now: datetime,
    previous: Mapping[str, Any] | None = None,
    error: str = "",
    spec_note: str = "",
) -> dict[str, Any]:
    """The CR status: phase, Kubernetes-style conditions (``Ready`` True/False, plus
    ``SpecAccepted``), tokens/s, replicas by accelerator, observedGeneration.

    ``lastTransitionTime`` of a condition moves only when its status does."""
    before = {c.get("type"): c for c in (previous or {}).get("conditions", []) if isinstance(c, dict)}

    def condition(kind: str, status: bool, reason: str, message: str) -> dict[str, Any]:
        value = "True" if status else "False"
        old = before.get(kind)
        since = old["lastTransitionTime"] if old and old.get("status") == value else _ts(now)
        return {
            "type": kind, "status": value, "reason": reason, "message": message[:32768],
            "lastTransitionTime": since, "observedGeneration": generation,
        }  # fmt: skip

    if error:
        return {
            "phase": "Invalid",
            "observedGeneration": generation,
            "conditions": [
                condition("SpecAccepted", False, "InvalidSpec", error),
                condition("Ready", False, "InvalidSpec", "no capacity was requested: fix the spec"),
            ],
        }
    if record is None:
        return {
            "phase": "Pending",
            "observedGeneration": generation,
            "conditions": [condition("Ready", False, "Creating", "the capacity request is being created")],
        }
    st = record.status
    first = st.conditions[0] if st.conditions else None
    live = [r for r in st.replicas if r.state in ("Pending", "Starting", "Ready")]
    by_type = Counter(f"{r.accelerator}" for r in live)
    ready = st.phase is Phase.READY
    conditions = [
        condition(
            "Ready",
            ready,
            first.reason if first else st.phase.value,
            first.message if first else st.phase.value,
        ),
        condition(
            "SpecAccepted",
            not spec_note,
            "Accepted" if not spec_note else "UpdateNotSupported",
            spec_note or "the spec is what Tokenfab serves",
        ),
    ]
    return {
        "requestId": record.id,
        "phase": st.phase.value,
        "readyOutputTokensPerSecond": st.ready_output_tokens_per_second,
        "predictedOutputTokensPerSecond": st.predicted_output_tokens_per_second,
        "targetOutputTokensPerSecond": st.target_output_tokens_per_second
        or record.spec.output_tokens_per_second,
        "replicas": len(live),
        "replicasByAccelerator": dict(sorted(by_type.items())),
        "observedGeneration": generation,
        "conditions": conditions,
    }


def same_status(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    return dict(a or {}) == dict(b)


# -- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # add_finalizer | remove_finalizer | create | update | cancel | write_status
    detail: dict[str, Any] = field(default_factory=dict)


def spec_changes(old: CapacitySpec, new: CapacitySpec) -> tuple[dict[str, float], list[str]]:
    """What an in-place update can carry, and the fields that changed but cannot be updated."""
    updatable = {f: getattr(new, f) for f in UPDATABLE if getattr(old, f) != getattr(new, f)}
    dumped_old, dumped_new = old.model_dump(), new.model_dump()
    fixed = sorted(
        _camel(k) for k in dumped_new if k not in UPDATABLE and dumped_old.get(k) != dumped_new.get(k)
    )
    return updatable, fixed


def plan(obj: Mapping[str, Any], record: CapacityRecord | None) -> list[Action]:
    """What to do for one CapacityRequest object, given its Tokenfab request (None: none yet)."""
    meta = obj.get("metadata", {})
    finalizers = list(meta.get("finalizers") or [])
    if meta.get("deletionTimestamp"):
        if FINALIZER not in finalizers:
            return []
        cancel = [Action("cancel", {"id": record.id})] if record is not None and record.active else []
        return [*cancel, Action("remove_finalizer")]
    if FINALIZER not in finalizers:
        return [Action("add_finalizer")]
    try:
        spec = spec_from_cr(obj)
    except InvalidArgument as exc:
        return [Action("write_status", {"error": exc.message})]
    if record is None:
        return [Action("create", {"spec": spec, "idempotency_key": idempotency_key(obj)})]
    generation = int(meta.get("generation", 1))
    observed = int((obj.get("status") or {}).get("observedGeneration", 0))
    actions: list[Action] = []
    note = ""
    if generation > observed:
        updatable, fixed = spec_changes(record.spec, spec)
        if updatable:
            actions.append(Action("update", {"id": record.id, **updatable}))
        if fixed:
            note = (
                f"changed {', '.join(fixed)}: only outputTokensPerSecond and inputTokensPerSecond update "
                "in place; delete and re-create the CapacityRequest to change the rest"
            )
    else:
        previous = [
            c for c in (obj.get("status") or {}).get("conditions", []) if c.get("type") == "SpecAccepted"
        ]
        if previous and previous[0].get("status") == "False":
            note = str(previous[0].get("message", ""))
    return [*actions, Action("write_status", {"spec_note": note})]


# -- the fleet mirror ------------------------------------------------------------------------------


def node_object_name(node_id: str) -> str:
    """A DNS-1123 name for a node id (lower case, [-.a-z0-9], at most 253)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", node_id.lower()).strip("-.")
    return (name or "node")[:253]


def acceleratornode(summary: Mapping[str, Any]) -> dict[str, Any]:
    """An AcceleratorNode manifest from a node summary (the shape of ``tokenfab nodes -o json``)."""
    memory = summary.get("memory_gib")
    spec: dict[str, Any] = {
        "nodeId": summary["id"],
        "cluster": summary.get("cluster", ""),
        "region": summary.get("region", ""),
        "vendor": summary["vendor"],
        "accelerator": summary["accelerator"],
        "devices": int(summary["device_count"]),
        "preemptible": bool(summary.get("preemptible", False)),
    }
    if isinstance(memory, int | float):
        spec["memoryBytesPerDevice"] = int(memory * 1024**3)
    if summary.get("lease_expires_at"):
        spec["leaseEnd"] = summary["lease_expires_at"]
        spec["leaseProvider"] = summary.get("lease_provider") or ""
    status: dict[str, Any] = {
        "state": str(summary["state"]).capitalize(),
        "reason": summary.get("state_reason", ""),
        "healthyDevices": int(summary["device_count"]) - len(summary.get("unhealthy_devices") or []),
        "cordoned": bool(summary.get("cordoned", False)),
    }
    if summary.get("last_heartbeat"):
        status["lastHeartbeat"] = summary["last_heartbeat"]
    return {
        "apiVersion": API_VERSION,
        "kind": "AcceleratorNode",
        "metadata": {
            "name": node_object_name(summary["id"]),
            "labels": {"tokenfab.io/vendor": summary["vendor"], "app.kubernetes.io/managed-by": "tokenfab"},
        },
        "spec": spec,
        "status": status,
    }


@dataclass(frozen=True, slots=True)
class NodeSync:
    create: list[dict[str, Any]]
    update: list[dict[str, Any]]  # spec or status differs
    delete: list[str]  # names of mirrored nodes the fleet no longer has


def sync_nodes(existing: Sequence[Mapping[str, Any]], fleet: Sequence[Mapping[str, Any]]) -> NodeSync:
    """Keep AcceleratorNode objects in step with the fleet; only objects Tokenfab manages are deleted."""
    have = {o["metadata"]["name"]: o for o in existing}
    want = {m["metadata"]["name"]: m for m in (acceleratornode(s) for s in fleet)}
    create = [m for name, m in want.items() if name not in have]
    update = [
        m
        for name, m in want.items()
        if name in have and (have[name].get("spec") != m["spec"] or have[name].get("status") != m["status"])
    ]
    managed = {
        name
        for name, o in have.items()
        if (o.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/managed-by") == "tokenfab"
    }
    return NodeSync(create, update, sorted(managed - set(want)))
