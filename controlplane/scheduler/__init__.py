"""Placement scheduler: pure functions from snapshots to an explained plan (no I/O)."""

from controlplane.scheduler.core import SchedulerConfig, options_for, schedule
from controlplane.scheduler.reasons import ReasonCode
from controlplane.scheduler.types import Demand, NodeSlot, Option, PlacedReplica, Placement, Plan, RequestPlan

__all__ = [
    "Demand",
    "NodeSlot",
    "Option",
    "PlacedReplica",
    "Placement",
    "Plan",
    "ReasonCode",
    "RequestPlan",
    "SchedulerConfig",
    "options_for",
    "schedule",
]
