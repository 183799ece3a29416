"""Failover and fleet events: what happened, when, to which node, request and replica, and why.

Stored under ``/tokenfab/v1/events/<20-digit time ns>-<seq>`` (bounded: the oldest are deleted),
read by ``tokenfab events``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class EventRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    kind: str
    message: str
    node_id: str = ""
    request_id: str = ""
    replica_id: str = ""
