"""Demand as the gateway sees it: what tenants offer a capacity request, before admission.

The replicas' own metrics show only what they served; calls queued in the gateway, refused with
429 or waiting for a first replica (scale from zero) never reach them. Each gateway instance
therefore publishes one :class:`GatewayDemand` per capacity request every few seconds under
``/tokenfab/v1/gateway/demand/<request id>/<instance>``, on an etcd lease (an instance that dies
stops counting within the lease's TTL). The autoscaler sums the instances (:func:`combine`) and
uses the offered rates and the queue alongside the engines' served rates.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class GatewayDemand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    instance: str = ""
    at: datetime
    window_s: float = Field(gt=0)
    offered_requests_per_second: float = Field(ge=0)  # arrivals, admitted or not
    offered_input_tokens_per_second: float = Field(ge=0)  # prompt tokens of those arrivals
    offered_output_tokens_per_second: float = Field(ge=0)  # arrivals x mean completion (max_tokens cap)
    served_output_tokens_per_second: float = Field(ge=0, default=0.0)
    rejected_per_second: float = Field(ge=0, default=0.0)  # 429 and 503 answers
    queued: int = Field(ge=0, default=0)  # calls waiting for admission or for a first replica
    oldest_wait_s: float = Field(ge=0, default=0.0)


def combine(records: Iterable[GatewayDemand]) -> dict[str, GatewayDemand]:
    """One figure per request, summed over gateway instances. Purely computational."""
    out: dict[str, GatewayDemand] = {}
    for r in records:
        have = out.get(r.request_id)
        if have is None:
            out[r.request_id] = r.model_copy(update={"instance": "*"})
            continue
        out[r.request_id] = have.model_copy(
            update={
                "at": max(have.at, r.at),
                "offered_requests_per_second": have.offered_requests_per_second
                + r.offered_requests_per_second,
                "offered_input_tokens_per_second": have.offered_input_tokens_per_second
                + r.offered_input_tokens_per_second,
                "offered_output_tokens_per_second": have.offered_output_tokens_per_second
                + r.offered_output_tokens_per_second,
                "served_output_tokens_per_second": have.served_output_tokens_per_second
                + r.served_output_tokens_per_second,
                "rejected_per_second": have.rejected_per_second + r.rejected_per_second,
                "queued": have.queued + r.queued,
                "oldest_wait_s": max(have.oldest_wait_s, r.oldest_wait_s),
            }
        )
    return out
