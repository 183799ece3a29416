"""What the live autoscaler persists in etcd: the global mode, the target it applied to each
capacity request, and its bounded decision history.

* :class:`ModeRecord` under ``/tokenfab/v1/autoscaler/mode``: ``active`` (decide and apply),
  ``advisory`` (decide and record, apply nothing: targets stay where they are) or ``off`` (the
  kill switch: no decisions at all, targets stay where they are). Missing means ``active``.
* :class:`AppliedTarget` under ``/tokenfab/v1/autoscaler/targets/<request id>``: the output
  tokens/s the reconciler sizes the request's replicas for. Never below the reserved target
  (unless the request opted into scale-to-zero and is idle).
* :class:`DecisionRecord` under ``/tokenfab/v1/autoscaler/history/<request id>/<time ns>``: one per
  change, and one per change of reason while holding; the oldest are deleted beyond the limit.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Mode(StrEnum):
    ACTIVE = "active"
    ADVISORY = "advisory"
    OFF = "off"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModeRecord(_Model):
    mode: Mode = Mode.ACTIVE
    reason: Annotated[str, Field(max_length=512)] = ""
    updated_at: datetime | None = None


class AppliedTarget(_Model):
    request_id: str
    output_tokens_per_second: Annotated[float, Field(ge=0)]
    replicas: Annotated[int, Field(ge=0)]
    decided_at: datetime
    reason: str = ""


class DecisionRecord(_Model):
    request_id: str
    at: datetime
    policy: str
    mode: Mode
    applied: bool  # false: advisory (global or per request), or nothing changed
    action: str  # scale_up | scale_down | hold
    current_replicas: int
    desired_replicas: int
    reserved_output_tokens_per_second: float
    target_output_tokens_per_second: float  # what the replicas are sized for after the decision
    reason: str
    demand_output_tokens_per_second: float | None = None
    forecast_output_tokens_per_second: float | None = None
    per_replica_output_tokens_per_second: float | None = None
    predicted_utilisation: float | None = None
    predicted_slo_ok: bool = True
    cost_per_hour: float | None = None
    accelerator: str = ""  # the type a new replica would get (the scheduler's cost choice)
    inputs: dict[str, float] = Field(default_factory=dict)
