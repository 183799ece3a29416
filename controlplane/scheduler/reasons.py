"""Why a request is not (fully) placed, as a closed set of codes. Purely computational.

The scheduler sets a :class:`ReasonCode` on every plan it cannot satisfy (``RequestPlan.code``)
at the place where it writes the human explanation, so that callers read the code instead of
recovering it from the text. The codes are the condition reasons a tenant sees (Kubernetes
convention: CamelCase, stable); the text next to them carries the detail.

:func:`plan_reason` is the one place that turns a plan (or its absence) into the condition
reason; :func:`code_of` reads a code back from an explanation's prefix, for text that was stored
before plans carried the code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class ReasonCode(StrEnum):
    """Why the scheduler could not place all of a request's target."""

    PRICE_CAP = "PriceCapBelowCheapestOption"  # every usable option costs more than the cap
    NO_ALLOWED_ACCELERATOR = "NoAllowedAcceleratorCanServe"  # the fleet has types, none can serve
    NO_ACCELERATOR = "NoAcceleratorInFleet"  # no accelerator type at all to consider
    FLEET_FULL = "FleetFull"  # usable types exist, their nodes have no room left


# explanation prefix -> code; the prefixes are the scheduler's (controlplane.scheduler.core)
REASON_CODES: tuple[tuple[str, ReasonCode], ...] = (
    ("price cap", ReasonCode.PRICE_CAP),
    ("no allowed accelerator", ReasonCode.NO_ALLOWED_ACCELERATOR),
    ("no accelerator", ReasonCode.NO_ACCELERATOR),
    ("fleet full", ReasonCode.FLEET_FULL),
)


class _Coded(Protocol):
    @property
    def code(self) -> ReasonCode | None: ...


def code_of(text: str) -> ReasonCode | None:
    """The code an explanation starts with, or None for text the scheduler did not write."""
    return next((code for prefix, code in REASON_CODES if text.startswith(prefix)), None)


def plan_reason(plan: _Coded | None) -> ReasonCode:
    """The condition reason for a request the plan did not fully place.

    No plan for the request this pass (it was not scheduled: in backoff, or nothing was asked)
    and a satisfied plan (which carries no code) both read as FleetFull: the only way a request
    with a plan can still be short is that the fleet did not have room when its replicas were
    counted.
    """
    if plan is None or plan.code is None:
        return ReasonCode.FLEET_FULL
    return plan.code
