"""A capacity request, as the API returns it, names the gateway's base URL to call it at."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from controlplane.api.capacity_service import CapacityServicer
from tests.unit.test_gateway_routing import request


def test_requests_carry_the_gateway_endpoint_and_model() -> None:
    servicer = CapacityServicer(manager=None, tenants=lambda: None, gateway_url="http://127.0.0.1:8080/v1")  # type: ignore[arg-type]
    pb = servicer.to_pb(request("a1", "alpha", "qwen2.5-7b-instruct"))
    shown: dict[str, Any] = MessageToDict(pb, preserving_proto_field_name=True)
    assert shown["endpoint"] == "http://127.0.0.1:8080/v1"
    assert shown["spec"]["model"] == "qwen2.5-7b-instruct"
    without = CapacityServicer(manager=None, tenants=lambda: None).to_pb(request("a1", "alpha"))  # type: ignore[arg-type]
    assert without.endpoint == ""
