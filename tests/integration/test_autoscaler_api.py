"""AutoscalerService against the real server (real etcd, real gRPC over loopback): modes, status,
history, and bad input naming the field, fuzzed with hypothesis; and the CLI against it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.domain.autoscaling import DecisionRecord, Mode, ModeRecord
from controlplane.embedded.etcd import EtcdProcess
from controlplane.store import keys
from controlplane.store.etcd import EtcdStore
from tests.integration.conftest import ControlPlaneFactory, cli_credentials, dial
from tokenfab.v1 import autoscaler_pb2, autoscaler_pb2_grpc

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


def decision(request_id: str, at: datetime, action: str) -> DecisionRecord:
    return DecisionRecord(
        request_id=request_id, at=at, policy="tokenfab", mode=Mode.ACTIVE, applied=action != "hold",
        action=action, current_replicas=2, desired_replicas=3 if action == "scale_up" else 2,
        reserved_output_tokens_per_second=1000, target_output_tokens_per_second=1500,
        reason=f"{action} because of the test", demand_output_tokens_per_second=1400.0,
        inputs={"waiting": 3.0},
    )  # fmt: skip


async def seed_history(etcd: EtcdProcess) -> datetime:
    store = EtcdStore(etcd.host, etcd.client_port)
    await store.connect()
    start = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    try:
        for i, action in enumerate(["hold", "scale_up", "hold", "scale_down"]):
            at = start + timedelta(seconds=10 * i)
            record = decision("cr-seeded", at, action)
            await store.put(keys.autoscaler_decision("cr-seeded", int(at.timestamp() * 1e9)),
                            record.model_dump_json().encode())  # fmt: skip
    finally:
        await store.close()
    return start


async def test_modes_history_and_bad_input(control_plane: ControlPlaneFactory, etcd: EtcdProcess) -> None:
    plane = await control_plane()
    start = await seed_history(etcd)
    async with dial(plane) as channel:  # an admin
        stub = autoscaler_pb2_grpc.AutoscalerServiceStub(channel)
        status = await stub.GetStatus(autoscaler_pb2.GetAutoscalerStatusRequest())
        assert status.mode == "active" and not status.requests  # no autoscaled request

        listed = await stub.ListDecisions(autoscaler_pb2.ListDecisionsRequest(request_id="cr-seeded"))
        assert [d.action for d in listed.decisions] == [
            "scale_down",
            "hold",
            "scale_up",
            "hold",
        ]  # newest first
        assert listed.decisions[0].at.ToDatetime(tzinfo=UTC) == start + timedelta(seconds=30)
        ups = await stub.ListDecisions(autoscaler_pb2.ListDecisionsRequest(action="scale_up", limit=5))
        assert [d.desired_replicas for d in ups.decisions] == [3] and ups.decisions[0].inputs["waiting"] == 3
        assert ups.decisions[0].HasField("demand_output_tokens_per_second")
        assert not ups.decisions[0].HasField("forecast_output_tokens_per_second")  # unknown stays unset

        changed = await stub.SetMode(
            autoscaler_pb2.SetAutoscalerModeRequest(mode="off", reason="incident 42")
        )
        assert changed.mode == "off" and changed.mode_reason == "incident 42"
        assert (await stub.GetStatus(autoscaler_pb2.GetAutoscalerStatusRequest())).mode == "off"

        bad = [
            (stub.SetMode, autoscaler_pb2.SetAutoscalerModeRequest(mode="Active"), "mode"),
            (stub.SetMode, autoscaler_pb2.SetAutoscalerModeRequest(mode="off", reason="x" * 600), "reason"),
            (stub.ListDecisions, autoscaler_pb2.ListDecisionsRequest(limit=5000), "limit"),
            (stub.ListDecisions, autoscaler_pb2.ListDecisionsRequest(action="up"), "action"),
            (stub.ListDecisions, autoscaler_pb2.ListDecisionsRequest(request_id="a/b"), "request_id"),
        ]
        for method, message, field in bad:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(message)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (err.value.details() or "").startswith(f"{field}:"), err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetStatus(autoscaler_pb2.GetAutoscalerStatusRequest(request_id="cr-nope"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # a rejected change changed nothing
        assert (await stub.GetStatus(autoscaler_pb2.GetAutoscalerStatusRequest())).mode == "off"

    # the CLI, as an operator types it
    cli = [sys.executable, "-m", "controlplane.cli.main", "autoscaler"]
    flags, env = cli_credentials(plane)
    address = ["--address", plane.config.address, *flags]

    def tokenfab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args, *address], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
        )

    shown = await asyncio.to_thread(tokenfab, "history", "cr-seeded", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert [r["action"] for r in rows] == ["hold", "scale_up", "hold", "scale_down"]  # oldest first
    assert rows[1]["reason"] == "scale_up because of the test" and rows[1]["inputs"] == {"waiting": 3.0}
    switched = await asyncio.to_thread(tokenfab, "mode", "advisory", "--reason", "trial", "-o", "json")
    assert switched.returncode == 0 and json.loads(switched.stdout)["mode"] == "advisory"
    refused = await asyncio.to_thread(tokenfab, "mode", "sideways")
    assert refused.returncode == 2 and "INVALID_ARGUMENT: mode:" in refused.stderr
    table = await asyncio.to_thread(tokenfab, "status")
    assert table.returncode == 0 and "advisory" in table.stdout


async def test_fuzz_autoscaler_service(control_plane: ControlPlaneFactory, etcd: EtcdProcess) -> None:
    plane = await control_plane()
    loop = asyncio.get_running_loop()
    codes: set[grpc.StatusCode] = set()
    async with dial(plane) as channel:  # an admin
        stub = autoscaler_pb2_grpc.AutoscalerServiceStub(channel)

        async def one(mode: str, reason: str, request_id: str, limit: int, action: str) -> None:
            calls = [
                stub.SetMode(autoscaler_pb2.SetAutoscalerModeRequest(mode=mode, reason=reason), timeout=10),
                stub.ListDecisions(
                    autoscaler_pb2.ListDecisionsRequest(request_id=request_id, limit=limit, action=action),
                    timeout=10,
                ),
                stub.GetStatus(autoscaler_pb2.GetAutoscalerStatusRequest(request_id=request_id), timeout=10),
            ]
            for call in calls:
                try:
                    await call
                    codes.add(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() in ALLOWED, (exc.code(), exc.details())
                    codes.add(exc.code())

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            mode=st.one_of(st.sampled_from(["active", "advisory", "off"]), st.text(max_size=20)),
            reason=st.text(max_size=700),
            request_id=st.one_of(st.just(""), st.text(max_size=200)),
            limit=st.integers(0, 2**32 - 1),
            action=st.one_of(st.sampled_from(["", "scale_up", "hold"]), st.text(max_size=12)),
        )
        def run(mode: str, reason: str, request_id: str, limit: int, action: str) -> None:
            asyncio.run_coroutine_threadsafe(one(mode, reason, request_id, limit, action), loop).result(
                timeout=60
            )

        await asyncio.to_thread(run)
    store = EtcdStore(etcd.host, etcd.client_port)
    await store.connect()
    try:
        kv = await store.get(keys.AUTOSCALER_MODE)
        assert kv is not None
        ModeRecord.model_validate_json(kv.value)  # what is stored is always a valid mode
    finally:
        await store.close()
    assert grpc.StatusCode.INVALID_ARGUMENT in codes and grpc.StatusCode.OK in codes
