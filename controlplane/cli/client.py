"""Client helpers for CLI commands that talk to a running control plane."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from tokenfab.tls import ClientTLS, client_channel
from tokenfab.v1 import types_pb2

DEFAULT_ADDRESS = "127.0.0.1:50051"
GiB = 1024**3


def client_tls(
    ca: Path | None, cert: Path | None, key: Path | None, server_name: str | None
) -> ClientTLS | None:
    if ca is None:
        if cert is not None or key is not None:
            raise ValueError("--tls-cert/--tls-key need --tls-ca (the CA that signed the control plane)")
        return None
    return ClientTLS(ca, cert, key, server_name)


def channel(address: str, tls: ClientTLS | None) -> grpc.aio.Channel:
    return client_channel(address, tls)


def _enum(value: int, enum: Any, prefix: str) -> str:
    name: str = enum.Name(value)
    return name.removeprefix(prefix).lower()


def node_summary(node: types_pb2.Node) -> dict[str, Any]:
    """The JSON shape of ``tokenfab nodes -o json`` (stable keys; add, never rename)."""
    models = list(dict.fromkeys(d.model for d in node.devices))
    memory = sorted({round(d.memory_bytes / GiB, 1) for d in node.devices})
    unhealthy = [d.index for d in node.devices if d.health == types_pb2.DEVICE_HEALTH_UNHEALTHY]
    lease_end = (
        node.lease.end_time.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        if node.HasField("lease")
        else None
    )
    last_beat = (
        node.last_heartbeat.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        if node.HasField("last_heartbeat")
        else None
    )
    return {
        "id": node.node_id,
        "cluster": node.cluster,
        "region": node.region,
        "vendor": _enum(node.vendor, types_pb2.Vendor, "VENDOR_"),
        "accelerator": "+".join(models),
        "device_count": len(node.devices),
        "memory_gib": memory[0] if len(memory) == 1 else memory,
        "state": _enum(node.state, types_pb2.NodeState, "NODE_STATE_"),
        "state_reason": node.state_reason,
        "cordoned": node.cordoned,
        "unhealthy_devices": unhealthy,
        "leased": node.HasField("lease"),
        "lease_provider": node.lease.provider if node.HasField("lease") else None,
        "lease_expires_at": lease_end,
        "price_per_accelerator_hour": node.lease.price_per_accelerator_hour
        if node.HasField("lease")
        else None,
        "preemptible": node.lease.preemptible if node.HasField("lease") else False,
        "last_heartbeat": last_beat,
        "agent_version": node.agent_version,
    }


def humanize_until(iso: str | None, now: datetime | None = None) -> str:
    if iso is None:
        return "owned"
    end = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = (end - (now or datetime.now(UTC))).total_seconds()
    if seconds <= 0:
        return "expired"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None
