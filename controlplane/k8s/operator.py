"""The Kubernetes operator inside the control-plane pods (leader only): CapacityRequest objects ->
the capacity API, status back; the fleet -> AcceleratorNode objects.

Built on the official ``kubernetes`` client rather than kopf: the operator is two small loops
inside a process that already has its own event loop, leader election (etcd) and lifecycle;
kopf wants to own the process (its own loop, handlers, peering for its own leader election and
posting progress into annotations), which would duplicate all three. The client's calls are
blocking and run in a worker thread (``asyncio.to_thread``).

Every ``interval_s`` (and only while this instance leads) it lists the CapacityRequests of its
namespaces and applies :func:`controlplane.k8s.crd.plan` to each: finalizer first, then create /
update / cancel through the :class:`~controlplane.capacity.manager.CapacityManager` (the same
validation, quotas and idempotency as the gRPC API; the tenant is the ``tokenfab.io/tenant``
annotation or the namespace, and must exist in the tenants file), then the status subresource.

A 409 Conflict (someone else wrote first) is left for the next pass, which starts from a fresh
read. Listing instead of watching keeps it simple and self-healing; at a few hundred objects
every few seconds the API server does not notice.

Fencing (issue 12): a pass can outlast this instance's leadership (a paused process, a slow API
server), so the operator's store writes (create, update, cancel: the manager's idempotency keys,
admission tickets and records) go through a :class:`~controlplane.store.fenced.FencedStore` on
the election's term, like the reconciler's: a write from a stale leader fails in the same etcd
transaction and changes nothing, and the pass ends there. Writes to the Kubernetes API cannot
join an etcd transaction; each pass starts only after the store confirms the fence still holds,
and status patches and finalizer removals carry the object's resourceVersion (a stale one is a
409).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from controlplane.capacity.manager import CapacityManager
from controlplane.capacity.tenants import Tenant
from controlplane.domain.capacity import CapacityRecord
from controlplane.errors import NotFound, TokenfabError
from controlplane.k8s.crd import (
    FINALIZER,
    GROUP,
    VERSION,
    Action,
    cr_key,
    plan,
    same_status,
    status_from_record,
    sync_nodes,
    tenant_of,
)
from controlplane.store.base import Fence, Fenced
from controlplane.store.fenced import FencedStore
from tokenfab.logs import get_logger

log = get_logger("operator")
PLURAL = "capacityrequests"
NODES = "acceleratornodes"


class Operator:
    def __init__(
        self,
        manager: CapacityManager,
        tenants: Callable[[str], Tenant | None],
        fleet: Callable[[], Sequence[dict[str, Any]]],
        *,
        namespaces: Sequence[str],
        is_leader: Callable[[], bool] = lambda: True,
        interval_s: float = 3.0,
        api: Any = None,  # kubernetes.client.CustomObjectsApi; built from the in-cluster config when None
        fence: Callable[[], Fence | None] | None = None,  # the election's term: store writes fenced
    ) -> None:
        self._writes = FencedStore(manager.store, fence) if fence is not None else None
        self._manager = manager.using(self._writes) if self._writes is not None else manager
        self._tenants = tenants
        self._fleet = fleet
        self.namespaces = list(namespaces)
        self._is_leader = is_leader
        self.interval_s = interval_s
        self._api = api
        self._task: asyncio.Task[None] | None = None

    def _client(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            self._api = client.CustomObjectsApi()
        return self._api

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="k8s-operator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while True:
            if self._is_leader():
                try:
                    await self.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the API server may be away; try again next pass
                    log.warning("operator.pass_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self.interval_s)

    async def run_once(self) -> None:
        if self._writes is not None and not await self._writes.holds():
            log.warning("operator.not_leading", reason="the leader key is no longer this term's")
            return
        api = self._client()
        for namespace in self.namespaces:
            listed = await asyncio.to_thread(
                api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )
            for obj in listed.get("items", []):
                try:
                    await self.sync(obj)
                except Fenced as exc:  # another instance leads now: it owns the rest of the pass
                    log.warning("operator.fenced", object=cr_key(obj), error=str(exc))
                    return
                except Exception as exc:
                    if _status_code(exc) == 409:
                        continue  # written by someone else meanwhile: next pass reads it fresh
                    log.warning(
                        "operator.sync_failed", object=cr_key(obj), error=str(exc) or type(exc).__name__
                    )
        await self.sync_fleet()

    async def _record(self, obj: dict[str, Any], tenant: Tenant) -> CapacityRecord | None:
        request_id = (obj.get("status") or {}).get("requestId")
        if not request_id:
            return None
        try:
            return await self._manager.get(tenant, str(request_id))
        except NotFound:
            return None

    async def sync(self, obj: dict[str, Any]) -> list[Action]:
        api = self._client()
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        tenant = self._tenants(tenant_of(obj))
        if tenant is None:
            status = status_from_record(
                None, generation=int(meta.get("generation", 1)), now=datetime.now(UTC),
                previous=obj.get("status"), error=f"tenant {tenant_of(obj)!r} is not in the tenants file",
            )  # fmt: skip
            await self._write_status(obj, status)
            return []
        record = await self._record(obj, tenant)
        actions = plan(obj, record)
        for action in actions:
            if action.kind == "add_finalizer":
                patch = {"metadata": {"finalizers": [*(meta.get("finalizers") or []), FINALIZER]}}
                await asyncio.to_thread(
                    api.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, patch
                )
            elif action.kind == "remove_finalizer":
                kept = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
                patch = {"metadata": {"finalizers": kept, "resourceVersion": meta.get("resourceVersion")}}
                await asyncio.to_thread(
                    api.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, patch
                )
            elif action.kind == "cancel":
                with contextlib.suppress(NotFound):
                    await self._manager.cancel(tenant, action.detail["id"])
            elif action.kind == "create":
                try:
                    record, _ = await self._manager.create(
                        tenant, action.detail["spec"], action.detail["idempotency_key"]
                    )
                except Fenced:
                    raise  # not this request's fault: the pass ends (and no status is written)
                except TokenfabError as exc:
                    record = None
                    await self._write_status(obj, status_from_record(
                        None, generation=int(meta.get("generation", 1)), now=datetime.now(UTC),
                        previous=obj.get("status"), error=exc.message,
                    ))  # fmt: skip
                    continue
                await self._write_status(obj, status_from_record(
                    record, generation=int(meta.get("generation", 1)), now=datetime.now(UTC),
                    previous=obj.get("status"),
                ))  # fmt: skip
            elif action.kind == "update":
                detail = dict(action.detail)
                request_id = detail.pop("id")
                record = await self._manager.update(tenant, request_id, **detail)
            elif action.kind == "write_status":
                status = status_from_record(
                    record, generation=int(meta.get("generation", 1)), now=datetime.now(UTC),
                    previous=obj.get("status"), error=action.detail.get("error", ""),
                    spec_note=action.detail.get("spec_note", ""),
                )  # fmt: skip
                await self._write_status(obj, status)
        if actions and actions[0].kind != "write_status":
            log.info("operator.synced", object=cr_key(obj), actions=[a.kind for a in actions])
        return actions

    async def _write_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        if same_status(obj.get("status"), status):
            return
        meta = obj["metadata"]
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status}
        await asyncio.to_thread(
            self._client().patch_namespaced_custom_object_status,
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body,
        )  # fmt: skip

    async def sync_fleet(self) -> None:
        api = self._client()
        listed = await asyncio.to_thread(api.list_cluster_custom_object, GROUP, VERSION, NODES)
        change = sync_nodes(listed.get("items", []), list(self._fleet()))
        existing = {o["metadata"]["name"]: o for o in listed.get("items", [])}
        for manifest in change.create:
            status = manifest.pop("status")
            created = await asyncio.to_thread(
                api.create_cluster_custom_object, GROUP, VERSION, NODES, manifest
            )
            created["status"] = status
            await asyncio.to_thread(
                api.replace_cluster_custom_object_status,
                GROUP,
                VERSION,
                NODES,
                manifest["metadata"]["name"],
                created,
            )
        for manifest in change.update:
            name = manifest["metadata"]["name"]
            current = existing[name]
            body = {**current, "spec": manifest["spec"]}
            replaced = await asyncio.to_thread(
                api.replace_cluster_custom_object, GROUP, VERSION, NODES, name, body
            )
            replaced["status"] = manifest["status"]
            await asyncio.to_thread(
                api.replace_cluster_custom_object_status, GROUP, VERSION, NODES, name, replaced
            )
        for name in change.delete:
            await asyncio.to_thread(api.delete_cluster_custom_object, GROUP, VERSION, NODES, name)


def _status_code(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None
