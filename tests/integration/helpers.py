"""Small builders for wire messages used by several integration tests."""

from __future__ import annotations

from tokenfab.v1 import agent_pb2, types_pb2

GiB = 1024**3


def register_request(node_id: str = "fz-1", devices: int = 2, **over: object) -> agent_pb2.RegisterRequest:
    req = agent_pb2.RegisterRequest(
        node_id=node_id,
        cluster="test",
        vendor=types_pb2.VENDOR_NVIDIA,
        agent_version="test",
        devices=[
            types_pb2.Device(uuid=f"{node_id}-gpu{i}", index=i, model="H100", memory_bytes=80 * GiB)
            for i in range(devices)
        ],
    )
    for key, value in over.items():
        if isinstance(value, dict):
            getattr(req, key).update(value)
        else:
            setattr(req, key, value)
    return req


def beat(node_id: str, seq: int = 1, devices: int = 2) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(
        heartbeat=agent_pb2.Heartbeat(
            node_id=node_id, seq=seq, devices=[types_pb2.DeviceTelemetry(index=i) for i in range(devices)]
        )
    )
