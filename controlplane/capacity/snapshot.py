"""The fleet as the scheduler sees it: registry views -> NodeSlots. Purely computational."""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.domain.nodes import DeviceHealth, NodeState
from controlplane.fleet.types import NodeView
from controlplane.scheduler.types import NodeSlot


def node_slots(views: Iterable[NodeView]) -> list[NodeSlot]:
    slots = []
    for view in views:
        record = view.record
        reg = record.registration
        healthy = tuple(
            (d.index, d.numa_node)
            for d in reg.devices
            if record.device_health.get(d.index, (d.health, ""))[0] is not DeviceHealth.UNHEALTHY
        )
        ready = record.state is NodeState.READY
        slots.append(
            NodeSlot(
                node_id=reg.node_id,
                cluster=reg.cluster,
                region=reg.region,
                vendor=reg.vendor,
                accelerator=reg.devices[0].model,
                devices=healthy,
                schedulable=ready,
                unschedulable_reason="" if ready else record.state.value,
                lease_end=record.lease_end,
                price_per_accelerator_hour=reg.lease.price_per_accelerator_hour if reg.lease else None,
                state=record.state.value,
            )
        )
    return slots
