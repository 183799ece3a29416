"""The operator's logic as pure functions: CR -> capacity spec (errors name the CR's own field),
the finalizer flow, generation/observedGeneration, status mapping, and the fleet mirror."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.domain.capacity import (
    CapacityRecord,
    CapacitySpec,
    CapacityStatus,
    Condition,
    Phase,
    ReplicaStatus,
)
from controlplane.errors import InvalidArgument
from controlplane.k8s.crd import (
    FINALIZER,
    acceleratornode,
    idempotency_key,
    node_object_name,
    plan,
    spec_from_cr,
    status_from_record,
    sync_nodes,
    tenant_of,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def cr(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "tokenfab.io/v1alpha1",
        "kind": "CapacityRequest",
        "metadata": {
            "name": "search",
            "namespace": "team-a",
            "uid": "u-1",
            "generation": 1,
            "finalizers": [FINALIZER],
            "resourceVersion": "7",
        },
        "spec": {
            "model": "qwen2.5-7b-instruct",
            "outputTokensPerSecond": 20000,
            "latency": {"ttftP95Ms": 1000, "tpotP95Ms": 50},
        },
    }
    for key, value in over.items():
        obj[key] = value
    return obj


def record(
    phase: Phase = Phase.READY, *, active: bool = True, spec: CapacitySpec | None = None
) -> CapacityRecord:
    spec = spec or spec_from_cr(cr())
    status = CapacityStatus(
        phase=phase if active else Phase.CANCELLED,
        conditions=(
            Condition(
                type=phase,
                status=True,
                reason="TargetMet",
                message="2 replicas ready",
                last_transition_time=NOW,
            ),
        ),
        replicas=(
            ReplicaStatus(
                replica_id="r1",
                accelerator="H100",
                node_id="n1",
                devices=(0,),
                tensor_parallel=1,
                state="Ready",
                predicted_output_tokens_per_second=12000,
            ),
            ReplicaStatus(
                replica_id="r2",
                accelerator="BR104",
                node_id="n2",
                devices=(0,),
                tensor_parallel=1,
                state="Starting",
                predicted_output_tokens_per_second=9000,
            ),
            ReplicaStatus(
                replica_id="r0",
                accelerator="H100",
                node_id="n1",
                devices=(1,),
                tensor_parallel=1,
                state="Stopped",
                predicted_output_tokens_per_second=12000,
            ),
        ),
        predicted_output_tokens_per_second=21000,
        ready_output_tokens_per_second=12000,
        observed_generation=1,
    )
    return CapacityRecord(id="cr-1", tenant="team-a", spec=spec, status=status, created_at=NOW)


def test_camel_case_spec_maps_to_the_api() -> None:
    spec = spec_from_cr(cr(spec={
        "model": "qwen2.5-7b-instruct", "outputTokensPerSecond": 5000, "latency": {"ttftP95Ms": 800, "tpotP95Ms": 40},
        "allowedVendors": ["ascend"], "maxPricePerMillionOutputTokens": 2.5, "meanInputTokens": 600,
        "autoscaling": {"enabled": True, "maxOutputTokensPerSecond": 9000, "scaleToZero": True},
    }))  # fmt: skip
    assert spec.latency.ttft_p95_ms == 800 and spec.allowed_vendors[0].value == "ascend"
    assert spec.max_price_per_million_output_tokens == 2.5 and spec.mean_input_tokens == 600
    assert spec.autoscaling.max_output_tokens_per_second == 9000 and spec.autoscaling.scale_to_zero


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"latency": {"ttftP95Ms": -1, "tpotP95Ms": 50}}, "spec.latency.ttftP95Ms"),
        ({"outputTokensPerSecond": "lots"}, "spec.outputTokensPerSecond"),
        ({"allowedVendors": ["amd"]}, "spec.allowedVendors[0]"),
        (
            {"autoscaling": {"enabled": True, "maxOutputTokensPerSecond": 10}},
            "spec.autoscaling.maxOutputTokensPerSecond",
        ),
        ({"maxReplicas": 3}, "spec.maxReplicas"),
    ],
)
def test_a_bad_spec_names_the_cr_field(patch: dict[str, Any], field: str) -> None:
    obj = cr()
    obj["spec"] = {**obj["spec"], **patch}
    with pytest.raises(InvalidArgument) as err:
        spec_from_cr(obj)
    assert err.value.field == field


def test_finalizer_first_then_create_idempotently() -> None:
    fresh = cr()
    fresh["metadata"]["finalizers"] = []
    assert [a.kind for a in plan(fresh, None)] == ["add_finalizer"]
    (create,) = plan(cr(), None)
    assert create.kind == "create" and create.detail["idempotency_key"] == idempotency_key(cr()) == "k8s:u-1"
    assert create.detail["spec"].output_tokens_per_second == 20000


def test_delete_cancels_then_releases_the_finalizer() -> None:
    deleting = cr()
    deleting["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    assert [a.kind for a in plan(deleting, record())] == ["cancel", "remove_finalizer"]
    assert [a.kind for a in plan(deleting, record(active=False))] == ["remove_finalizer"]
    assert [a.kind for a in plan(deleting, None)] == ["remove_finalizer"]
    deleting["metadata"]["finalizers"] = []
    assert plan(deleting, record()) == []  # not ours to hold


def test_a_new_generation_updates_what_can_be_updated_and_reports_the_rest() -> None:
    changed = cr(status={"observedGeneration": 1, "requestId": "cr-1"})
    changed["metadata"]["generation"] = 2
    changed["spec"] = {**changed["spec"], "outputTokensPerSecond": 30000, "allowedVendors": ["nvidia"]}
    update, status = plan(changed, record())
    assert update.kind == "update" and update.detail == {"id": "cr-1", "output_tokens_per_second": 30000}
    assert status.kind == "write_status" and "allowedVendors" in status.detail["spec_note"]
    same = cr(status={"observedGeneration": 1, "requestId": "cr-1"})
    assert [a.kind for a in plan(same, record())] == ["write_status"]


def test_an_invalid_spec_becomes_an_invalid_status_not_a_request() -> None:
    obj = cr()
    obj["spec"]["latency"] = {"ttftP95Ms": 0, "tpotP95Ms": 50}
    (action,) = plan(obj, None)
    assert action.kind == "write_status" and action.detail["error"].startswith("spec.latency.ttftP95Ms")
    status = status_from_record(None, generation=1, now=NOW, error=action.detail["error"])
    assert status["phase"] == "Invalid"
    accepted = next(c for c in status["conditions"] if c["type"] == "SpecAccepted")
    assert accepted["status"] == "False" and accepted["reason"] == "InvalidSpec"


def test_status_follows_kubernetes_conventions() -> None:
    status = status_from_record(record(Phase.PLACING), generation=3, now=NOW)
    assert status["phase"] == "Placing" and status["requestId"] == "cr-1"
    assert status["observedGeneration"] == 3
    assert status["replicas"] == 2 and status["replicasByAccelerator"] == {"BR104": 1, "H100": 1}
    assert status["readyOutputTokensPerSecond"] == 12000
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["observedGeneration"] == 3
    assert ready["lastTransitionTime"] == "2026-11-22T12:00:00Z"
    # the transition time moves only when the status does
    later = NOW + timedelta(minutes=5)
    again = status_from_record(record(Phase.PLACING), generation=3, now=later, previous=status)
    assert (
        next(c for c in again["conditions"] if c["type"] == "Ready")["lastTransitionTime"]
        == ready["lastTransitionTime"]
    )
    flipped = status_from_record(record(Phase.READY), generation=3, now=later, previous=status)
    became = next(c for c in flipped["conditions"] if c["type"] == "Ready")
    assert became["status"] == "True" and became["lastTransitionTime"] == "2026-11-22T12:05:00Z"


def test_tenant_is_the_annotation_or_the_namespace() -> None:
    assert tenant_of(cr()) == "team-a"
    annotated = cr()
    annotated["metadata"]["annotations"] = {"tokenfab.io/tenant": "search"}
    assert tenant_of(annotated) == "search"


def node(node_id: str, state: str = "ready", **over: Any) -> dict[str, Any]:
    base = {"id": node_id, "cluster": "c1", "region": "r1", "vendor": "ascend", "accelerator": "910B3",
            "device_count": 8, "memory_gib": 64.0, "state": state, "state_reason": "", "cordoned": False,
            "unhealthy_devices": [3], "lease_provider": "cloud-x", "lease_expires_at": "2026-12-01T00:00:00Z",
            "preemptible": True, "last_heartbeat": "2026-11-22T12:00:00Z"}  # fmt: skip
    return {**base, **over}


def test_the_fleet_mirror_creates_updates_and_deletes_only_its_own() -> None:
    manifest = acceleratornode(node("Node_A.1"))
    assert manifest["metadata"]["name"] == node_object_name("Node_A.1") == "node-a.1"
    assert manifest["spec"]["leaseEnd"] == "2026-12-01T00:00:00Z" and manifest["spec"]["devices"] == 8
    assert manifest["status"] == {"state": "Ready", "reason": "", "healthyDevices": 7, "cordoned": False,
                                  "lastHeartbeat": "2026-11-22T12:00:00Z"}  # fmt: skip
    existing = [
        copy.deepcopy(manifest),
        acceleratornode(node("gone")),
        {"metadata": {"name": "hand-made", "labels": {}}, "spec": {}},
    ]
    change = sync_nodes(existing, [node("Node_A.1", state="lost"), node("new")])
    assert [m["metadata"]["name"] for m in change.create] == ["new"]
    assert [m["status"]["state"] for m in change.update] == ["Lost"]
    assert change.delete == ["gone"]  # never the object Tokenfab did not create
    assert sync_nodes([acceleratornode(node("a"))], [node("a")]) == type(change)([], [], [])


class FakeCustomObjects:
    """Records the Kubernetes writes; lists the objects it was given."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.writes: list[tuple[str, tuple[Any, ...]]] = []

    def list_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return {"items": copy.deepcopy(self.objects)}

    def list_cluster_custom_object(self, *args: Any) -> dict[str, Any]:
        return {"items": []}

    def patch_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        self.writes.append(("patch", args))
        return {}

    def patch_namespaced_custom_object_status(self, *args: Any) -> dict[str, Any]:
        self.writes.append(("status", args))
        return {}


async def test_a_stale_leaders_operator_writes_change_nothing() -> None:
    """The operator writes the store through the election's fence: once a successor holds the
    leader key, the old term's create and cancel fail in the store and leave it as it was, and a
    new pass writes nothing to Kubernetes either."""
    from controlplane.capacity import CapacityManager, Tenant
    from controlplane.catalog import load_catalog
    from controlplane.k8s.operator import Operator
    from controlplane.store import keys
    from controlplane.store.base import Fence, Fenced
    from controlplane.store.memory import MemoryStore

    store = MemoryStore()
    created = await store.compare_and_put(keys.LEADER, b"me", expected_mod_revision=0)
    assert created is not None
    term: list[Fence | None] = [Fence(keys.LEADER, created)]
    first = cr()
    api = FakeCustomObjects([first])
    operator = Operator(
        CapacityManager(store, load_catalog()), Tenant, list, namespaces=["team-a"], api=api,
        fence=lambda: term[0],
    )  # fmt: skip

    await operator.run_once()  # leading: the request is created and its status written
    (request_kv,) = (await store.list_prefix(keys.CAPACITY_REQUESTS))[0]
    request_id = CapacityRecord.model_validate_json(request_kv.value).id
    assert [kind for kind, _ in api.writes] == ["status"]
    before, _ = await store.list_prefix(keys.ROOT + "capacity/")

    # a successor takes the leader key while this instance still believes it leads
    leader = await store.get(keys.LEADER)
    assert leader is not None
    assert await store.compare_and_delete(keys.LEADER, expected_mod_revision=leader.mod_revision)
    assert await store.compare_and_put(keys.LEADER, b"successor", expected_mod_revision=0) is not None

    another = cr(metadata={**first["metadata"], "name": "other", "uid": "u-2"})
    with pytest.raises(Fenced):
        await operator.sync(another)  # a create from the old term
    deleting = copy.deepcopy(first)
    deleting["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    deleting["status"] = {"requestId": request_id}
    with pytest.raises(Fenced):
        await operator.sync(deleting)  # a cancel from the old term
    after, _ = await store.list_prefix(keys.ROOT + "capacity/")
    assert [(kv.key, kv.mod_revision) for kv in after] == [(kv.key, kv.mod_revision) for kv in before]

    api.writes.clear()
    api.objects = [another]
    await operator.run_once()  # the store says the fence moved: no Kubernetes write either
    assert api.writes == []
    assert (await store.list_prefix(keys.ROOT + "capacity/"))[0] == after
