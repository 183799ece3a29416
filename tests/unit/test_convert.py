"""Wire -> domain conversion names the wire field that was wrong."""

from __future__ import annotations

import pytest

from controlplane.api.convert import registration_from_pb, telemetry_from_pb
from controlplane.errors import InvalidArgument
from tokenfab.v1 import agent_pb2, types_pb2

GiB = 1024**3


def request(**over: object) -> agent_pb2.RegisterRequest:
    req = agent_pb2.RegisterRequest(
        node_id="n1", cluster="c", vendor=types_pb2.VENDOR_METAX,
        devices=[types_pb2.Device(uuid="u0", index=0, model="C500", memory_bytes=64 * GiB)],
    )  # fmt: skip
    for key, value in over.items():
        setattr(req, key, value)
    return req


def field_of(req: agent_pb2.RegisterRequest) -> str:
    with pytest.raises(InvalidArgument) as info:
        registration_from_pb(req)
    return info.value.field


def test_round_trip() -> None:
    node = registration_from_pb(request())
    assert node.vendor.value == "metax"
    assert node.devices[0].memory_gib == 64


def test_bad_wire_fields() -> None:
    assert field_of(request(vendor=types_pb2.VENDOR_UNSPECIFIED)) == "vendor"
    assert field_of(request(vendor=42)) == "vendor"
    assert field_of(request(node_id="")) == "node_id"
    req = request()
    req.lease.provider = "p"  # lease present, times missing
    assert field_of(req) == "lease.start_time"
    req = request()
    req.devices[0].health = 9
    assert field_of(req) == "devices[0].health"


def test_telemetry_errors() -> None:
    with pytest.raises(InvalidArgument) as info:
        telemetry_from_pb([types_pb2.DeviceTelemetry(index=0, utilization_percent=250)])
    assert info.value.field == "devices[0].utilization_percent"
    with pytest.raises(InvalidArgument) as info:
        telemetry_from_pb([types_pb2.DeviceTelemetry(index=0), types_pb2.DeviceTelemetry(index=0)])
    assert info.value.field == "devices[1].index"
