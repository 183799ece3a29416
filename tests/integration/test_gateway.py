"""The gateway as a real process (``tokenfab gateway``) in front of real simulated-engine replica
processes, with the capacity requests and replica records in a real etcd, written as the
reconciler writes them. No Ray here: the replicas are the same SimulatedEngineServer a Ray actor
runs, started as plain processes so that they can be killed with SIGKILL or drained with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.domain.capacity import CapacityRecord, CapacitySpec, CapacityStatus
from controlplane.domain.nodes import Vendor
from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.store import keys
from controlplane.store.etcd import EtcdStore
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

MODEL = "qwen2.5-7b-instruct"
TOKENS = {"alpha": "alpha-secret-token", "beta": "beta-secret-token"}
REPLICA = """
import asyncio, json, signal, sys
from dataclasses import asdict
from controlplane.catalog.perf import EngineProfile
from controlplane.catalog.types import Dtype, load_catalog
from controlplane.executor.adapters import SimulatedEngineServer
from tokenfab.v1 import executor_pb2

async def main() -> None:
    model, accelerator, speed = sys.argv[1], sys.argv[2], float(sys.argv[3])
    catalog = load_catalog()
    profile = EngineProfile.of(catalog.model(model), catalog.accelerator(accelerator), 1, Dtype.BF16)
    server = SimulatedEngineServer(model, executor_pb2.SimulatedEngine(
        profile_json=json.dumps(asdict(profile)), max_batch=profile.max_batch, speed=speed))
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"endpoint": server.endpoint}), flush=True)
    await stop.wait()
    await server.stop(30.0)  # drain: in-flight calls finish, new ones get 503

asyncio.run(main())
"""


class Replica:
    def __init__(self, speed: float = 1.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", REPLICA, MODEL, "H100", str(speed)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the replica process exited before serving"
        self.endpoint: str = json.loads(line)["endpoint"]

    def generated_tokens(self) -> float:
        import urllib.request

        page = urllib.request.urlopen(self.endpoint + "/metrics", timeout=5).read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in page.splitlines()
            if line.startswith("vllm:generation_tokens_total")
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    made: list[Replica] = []
    yield made
    for r in made:
        r.stop()


class GatewayProcess:
    def __init__(self, etcd: EtcdProcess, tenants: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, "-m", "controlplane.cli.main", "gateway", "--tenants", str(tenants),
            "--listen", f"127.0.0.1:{self.port}", "--etcd", etcd.endpoint,
            "--metrics-address", f"127.0.0.1:{self.metrics_port}", "--usage-flush", "0.3",
            "--max-attempts", "3", *extra,
        ]  # fmt: skip
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as s:

            async def healthy() -> bool:
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                try:
                    async with s.get(self.url + "/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(
                healthy, timeout=60, interval=0.1, what="the gateway's /healthz",
                detail=lambda: self.log.read_text()[-2000:],
            )  # fmt: skip

    async def metric(self, name: str, **labels: str) -> float:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            page = await r.text()
        total = 0.0
        for line in page.splitlines():
            if line.startswith((name + "{", name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


def tenants_file(path: Path) -> Path:
    body = "tenants:\n" + "".join(f"  - name: {n}\n    token: {t}\n" for n, t in TOKENS.items())
    path.write_text(body)
    return path


async def gateway_for(etcd: EtcdProcess, tmp: Path, *extra: str) -> GatewayProcess:
    gw = GatewayProcess(
        etcd, tenants_file(tmp / "tenants.yaml"), tmp / f"gateway-{time.monotonic_ns()}.log", *extra
    )
    await gw.ready()
    return gw


@pytest.fixture
async def gateway(etcd: EtcdProcess, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    gw = await gateway_for(etcd, tmp_path)
    yield gw
    gw.stop()


@pytest.fixture
async def store(etcd: EtcdProcess) -> AsyncIterator[EtcdStore]:
    s = EtcdStore(etcd.host, etcd.client_port)
    await s.connect()
    yield s
    await s.close()


def _now() -> datetime:
    return datetime.now(UTC)


async def put_request(
    store: EtcdStore, request_id: str, tenant: str, *, reserved: float = 1000.0, ttft_ms: float = 2000.0
) -> None:
    spec = CapacitySpec.model_validate(
        {
            "model": MODEL,
            "output_tokens_per_second": reserved,
            "latency": {"ttft_p95_ms": ttft_ms, "tpot_p95_ms": 50},
        }
    )
    record = CapacityRecord(
        id=request_id, tenant=tenant, spec=spec, status=CapacityStatus(), created_at=_now()
    )
    await store.put(keys.capacity_request(request_id), record.model_dump_json().encode())


async def put_replica(
    store: EtcdStore, replica_id: str, request_id: str, tenant: str, endpoint: str, *,
    capacity: float = 1000.0, state: ReplicaState = ReplicaState.READY,
) -> None:  # fmt: skip
    record = ReplicaRecord(
        id=replica_id, request_id=request_id, tenant=tenant, model=MODEL, vendor=Vendor.NVIDIA,
        accelerator="H100", cluster="test", node_id=f"node-{replica_id}", devices=(0,), tensor_parallel=1,
        engine="simulated", dtype="bf16", state=state, predicted_output_tokens_per_second=capacity,
        endpoint=endpoint, created_at=_now(), updated_at=_now(),
    )  # fmt: skip
    await store.put(keys.replica(replica_id), record.model_dump_json().encode())


def auth(tenant: str = "alpha") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


async def models_of(gw: GatewayProcess, tenant: str) -> list[str]:
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/models", headers=auth(tenant)) as r:
        return [m["id"] for m in (await r.json())["data"]] if r.status == 200 else []


async def routable(gw: GatewayProcess, tenant: str, count: int) -> None:
    """Wait until the gateway routes ``count`` replicas for the tenant's model (it follows etcd)."""

    async def routed() -> bool:
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/models", headers=auth(tenant)) as r:
            data = (await r.json())["data"] if r.status == 200 else []
        return any(m["id"] == MODEL and m["replicas"] == count for m in data)

    await wait_for(routed, timeout=20, what=f"the gateway routing {count} replicas for {tenant}")


async def setup_lane(
    store: EtcdStore, gw: GatewayProcess, replicas: list[Replica], tenant: str = "alpha", *,
    speeds: tuple[float, ...] = (1.0,), capacities: tuple[float, ...] = (), reserved: float = 1000.0,
    ttft_ms: float = 2000.0,
) -> list[str]:  # fmt: skip
    request_id = f"req-{tenant}"
    await put_request(store, request_id, tenant, reserved=reserved, ttft_ms=ttft_ms)
    ids = []
    for i, speed in enumerate(speeds):
        replica = Replica(speed)
        replicas.append(replica)
        replica_id = f"{request_id}-r{i}"
        cap = capacities[i] if capacities else 1000.0
        await put_replica(store, replica_id, request_id, tenant, replica.endpoint, capacity=cap)
        ids.append(replica_id)
    await routable(gw, tenant, len(speeds))
    return ids


async def post(
    session: aiohttp.ClientSession, gw: GatewayProcess, path: str, body: Any, *, tenant: str = "alpha"
) -> tuple[int, Any]:
    async with session.post(gw.url + path, json=body, headers=auth(tenant)) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text.startswith("{") else text)


async def stream(
    session: aiohttp.ClientSession, gw: GatewayProcess, path: str, body: dict[str, Any]
) -> tuple[int, list[Any]]:
    """Status and the decoded events ('[DONE]' as a string) of a streamed call."""
    events: list[Any] = []
    async with session.post(gw.url + path, json={**body, "stream": True}, headers=auth()) as r:
        if r.status != 200:
            return r.status, [await r.text()]
        async for line in r.content:
            line = line.strip()
            if line.startswith(b"data: "):
                data = line[6:].decode()
                events.append(data if data == "[DONE]" else json.loads(data))
    return r.status, events


async def test_plain_and_streamed_calls(
    gateway: GatewayProcess, store: EtcdStore, replicas: list[Replica], etcd: EtcdProcess
) -> None:
    await setup_lane(store, gateway, replicas)
    async with aiohttp.ClientSession() as s:
        status, body = await post(
            s, gateway, "/v1/completions", {"model": MODEL, "prompt": "hello " * 40, "max_tokens": 8}
        )
        assert status == 200, body
        assert body["usage"]["completion_tokens"] == 8
        status, body = await post(
            s, gateway, "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )  # fmt: skip
        assert status == 200, body
        assert body["object"] == "chat.completion"
        status, events = await stream(
            s, gateway, "/v1/completions", {"model": MODEL, "prompt": "x" * 100, "max_tokens": 12}
        )
        assert status == 200
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert not any(isinstance(e, dict) and "usage" in e and not e["choices"] for e in events)  # not asked
        status, events = await stream(
            s, gateway, "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6,
             "stream_options": {"include_usage": True}},
        )  # fmt: skip
        assert status == 200
        usage = [e["usage"] for e in events if isinstance(e, dict) and e.get("usage")]
        assert [(u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) for u in usage] == [(2, 6, 8)]
    # metering: Prometheus at once, etcd hourly buckets after a flush
    # (a stream is metered once its last event is sent: poll, the client may read [DONE] first)

    async def completion_tokens() -> bool:
        return await gateway.metric("tokenfab_gateway_tokens_total", tenant="alpha", kind="completion") == 30

    await wait_for(completion_tokens, timeout=10, what="30 completion tokens in the gateway's metrics")
    rows: list[tuple[Any, ...]] = []

    async def flushed() -> bool:  # the hourly bucket reaches etcd at the next flush (0.3 s)
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "controlplane.cli.main", "usage", "--etcd", etcd.endpoint,
             "--tenant", "alpha", "--since", "24h", "-o", "json"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        rows[:] = [
            (r["tenant"], r["request_id"], r["requests"], r["completion_tokens"])
            for r in json.loads(out.stdout)
        ]
        return rows == [("alpha", "req-alpha", 4, 30)]

    await wait_for(flushed, timeout=15, interval=0.3, what="the usage bucket in etcd", detail=lambda: rows)
    assert rows == [("alpha", "req-alpha", 4, 30)]


async def test_missing_and_bad_tokens_get_401(
    gateway: GatewayProcess, store: EtcdStore, replicas: list[Replica]
) -> None:
    await setup_lane(store, gateway, replicas, "alpha")
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
            async with s.post(gateway.url + "/v1/completions", json=body, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == "Bearer"
                assert (await r.json())["error"]["code"] == "invalid_api_key"
        async with s.get(gateway.url + "/v1/models") as r:
            assert r.status == 401
        status, _ = await post(s, gateway, "/v1/completions", body)
        assert status == 200  # the same call with alpha's token


async def test_a_tenant_never_reaches_another_tenants_replicas(
    etcd: EtcdProcess, tmp_path: Path, store: EtcdStore, replicas: list[Replica]
) -> None:
    gw = await gateway_for(etcd, tmp_path, "--cold-start-wait", "0.5")
    try:
        await setup_lane(store, gw, replicas, "alpha")
        await put_request(store, "req-beta", "beta")  # beta holds the same model, with no replica yet
        await routable(gw, "beta", 0)
        async with aiohttp.ClientSession() as s:
            status, answer = await post(
                s, gw, "/v1/completions", {"model": MODEL, "prompt": "hi"}, tenant="beta"
            )
        assert status == 503, answer  # beta waits for its own replicas, never alpha's
        assert answer["error"]["code"] == "no_replica"
        assert replicas[0].generated_tokens() == 0
    finally:
        gw.stop()


async def test_other_tenants_model_is_not_found(
    gateway: GatewayProcess, store: EtcdStore, replicas: list[Replica]
) -> None:
    await setup_lane(store, gateway, replicas, "alpha")
    async with aiohttp.ClientSession() as s:
        status, answer = await post(
            s, gateway, "/v1/completions", {"model": MODEL, "prompt": "hi"}, tenant="beta"
        )
    assert status == 404
    assert answer["error"]["code"] == "model_not_found"
    assert await models_of(gateway, "beta") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "hi"}, "model"),
        ({"model": MODEL}, "prompt"),
        ({"model": MODEL, "prompt": 5}, "prompt"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": "many"}, "max_tokens"),
        ({"model": MODEL, "prompt": "hi", "stream": "yes"}, "stream"),
        ({"model": MODEL, "prompt": "hi", "n": 3}, "n"),
    ],
)
async def test_malformed_body_names_the_field(
    gateway: GatewayProcess, store: EtcdStore, body: dict[str, Any], field: str
) -> None:
    await put_request(store, "req-alpha", "alpha")
    async with aiohttp.ClientSession() as s:
        status, answer = await post(s, gateway, "/v1/completions", body)
    assert status == 400
    assert answer["error"]["param"] == field
    assert answer["error"]["message"].startswith(field + ":")


async def test_chat_messages_are_checked(gateway: GatewayProcess, store: EtcdStore) -> None:
    async with aiohttp.ClientSession() as s:
        status, answer = await post(
            s,
            gateway,
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
        )
        assert (status, answer["error"]["param"]) == (400, "messages[0].role")
        async with s.post(gateway.url + "/v1/chat/completions", data=b"{not json", headers=auth()) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == "body"


async def test_over_the_reservation_gets_429(
    etcd: EtcdProcess, tmp_path: Path, store: EtcdStore, replicas: list[Replica]
) -> None:
    gw = await gateway_for(etcd, tmp_path, "--burst", "1", "--spare-horizon", "0.5")
    try:
        # 20 tokens/s reserved, a TTFT budget of 1 s; the replica's recorded capacity is small,
        # so a long call fills the spare horizon and the next one has neither reservation nor room
        await setup_lane(store, gw, replicas, reserved=20, ttft_ms=1000, capacities=(100.0,))
        async with aiohttp.ClientSession() as s:
            first = asyncio.create_task(
                post(s, gw, "/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 400})
            )

            async def first_in_flight() -> bool:
                return await gw.metric("tokenfab_gateway_replica_outstanding_tokens") > 0

            await wait_for(first_in_flight, timeout=10, what="the first call in flight on the replica")
            async with s.post(
                gw.url + "/v1/completions",
                json={"model": MODEL, "prompt": "b", "max_tokens": 400},
                headers=auth(),
            ) as r:
                assert r.status == 429
                assert int(r.headers["Retry-After"]) >= 1
                assert (await r.json())["error"]["code"] == "rate_limit_exceeded"
            status, _ = await first
            assert status == 200  # the guaranteed call was served
        assert await gw.metric("tokenfab_gateway_rejections_total", tenant="alpha", reason="rate") == 1
    finally:
        gw.stop()


async def test_routing_weights_follow_capacity(
    etcd: EtcdProcess, tmp_path: Path, store: EtcdStore, replicas: list[Replica]
) -> None:
    gw = await gateway_for(etcd, tmp_path, "--policy", "least_load")
    try:
        # one replica predicted (and running) three times as fast as the other
        await setup_lane(store, gw, replicas, speeds=(3.0, 1.0), capacities=(3000.0, 1000.0))
        sem = asyncio.Semaphore(24)

        async def one(session: aiohttp.ClientSession, i: int) -> int:
            async with sem:
                status, _ = await post(
                    session, gw, "/v1/completions", {"model": MODEL, "prompt": f"{i} " * 50, "max_tokens": 64}
                )
                return status

        async with aiohttp.ClientSession() as s:
            statuses = await asyncio.gather(*(one(s, i) for i in range(160)))
        assert set(statuses) == {200}
        fast, slow = replicas[0].generated_tokens(), replicas[1].generated_tokens()
        assert fast + slow == 160 * 64
        assert fast > 1.8 * slow, (fast, slow)
    finally:
        gw.stop()


async def test_kill_9_under_load_fails_no_call_before_its_first_token(
    gateway: GatewayProcess, store: EtcdStore, replicas: list[Replica]
) -> None:
    await setup_lane(store, gateway, replicas, speeds=(1.0, 1.0, 1.0), reserved=50_000)
    results: list[tuple[str, bool, bool]] = []  # (kind, ok, started streaming)

    async def plain(session: aiohttp.ClientSession, i: int) -> None:
        status, _ = await post(
            session, gateway, "/v1/completions", {"model": MODEL, "prompt": f"p{i} " * 30, "max_tokens": 150}
        )
        results.append(("plain", status == 200, False))

    async def streamed(session: aiohttp.ClientSession, i: int) -> None:
        status, events = await stream(
            session, gateway, "/v1/completions", {"model": MODEL, "prompt": f"s{i} " * 30, "max_tokens": 150}
        )
        started = status == 200 and any(isinstance(e, dict) and e.get("choices") for e in events)
        ok = status == 200 and events[-1:] == ["[DONE]"]
        if started and not ok:
            assert events[-1]["error"]["code"] == "stream_cut"  # the client sees the cut
        results.append(("stream", ok, started))

    async with aiohttp.ClientSession() as s:
        tasks = []
        for i in range(60):
            tasks.append(asyncio.create_task((plain if i % 2 else streamed)(s, i)))
            if i == 30:
                os.kill(replicas[0].proc.pid, signal.SIGKILL)  # mid-load: calls in flight and arriving
            await asyncio.sleep(0.03)  # paced arrivals (a load shape), not a wait for anything
        await asyncio.gather(*tasks)
    failed_before_first_token = [r for r in results if not r[1] and not r[2]]
    assert failed_before_first_token == []
    assert len(results) == 60
    assert await gateway.metric("tokenfab_gateway_retries_total") >= 1  # the dead replica was tried


async def test_drain_finishes_in_flight_calls(
    gateway: GatewayProcess, store: EtcdStore, replicas: list[Replica]
) -> None:
    ids = await setup_lane(store, gateway, replicas, speeds=(1.0, 1.0), reserved=50_000)
    async with aiohttp.ClientSession() as s:
        calls = [
            asyncio.create_task(
                post(
                    s,
                    gateway,
                    "/v1/completions",
                    {"model": MODEL, "prompt": f"d{i} " * 20, "max_tokens": 200},
                )
            )
            for i in range(20)
        ]

        async def in_flight() -> bool:  # all 20 admitted, some of them on the replica to drain
            admitted = await gateway.metric("tokenfab_gateway_admitted_total", tenant="alpha")
            return (
                admitted >= 20
                and await gateway.metric("tokenfab_gateway_replica_outstanding_tokens", replica=ids[0]) > 0
            )

        await wait_for(in_flight, timeout=10, what="calls in flight on the replica to drain")
        # the reconciler's drain: the record goes Draining, then the executor stops the engine
        # with a drain period (SIGTERM here: the replica stops accepting and finishes its calls)
        await put_replica(
            store, ids[0], "req-alpha", "alpha", replicas[0].endpoint, state=ReplicaState.DRAINING
        )
        await routable(gateway, "alpha", 1)
        replicas[0].proc.send_signal(signal.SIGTERM)
        later = [
            asyncio.create_task(
                post(s, gateway, "/v1/completions", {"model": MODEL, "prompt": "late", "max_tokens": 20})
            )
            for _ in range(10)
        ]
        results = await asyncio.gather(*calls, *later)
    assert [status for status, _ in results] == [200] * 30
    assert replicas[0].proc.wait(timeout=30) == 0


async def test_scale_from_zero_waits_for_the_first_replica(
    gateway: GatewayProcess, store: EtcdStore, replicas: list[Replica]
) -> None:
    await put_request(store, "req-alpha", "alpha")
    await routable(gateway, "alpha", 0)  # the request is known, with no replica
    async with aiohttp.ClientSession() as s:
        call = asyncio.create_task(
            post(s, gateway, "/v1/completions", {"model": MODEL, "prompt": "wake", "max_tokens": 4})
        )
        await asyncio.sleep(1.0)  # deliberately fixed: shows the call does NOT finish without a replica
        assert not call.done()  # queued: no replica yet
        assert await gateway.metric("tokenfab_gateway_queue_length", tenant="alpha") == 1
        replica = Replica()
        replicas.append(replica)
        await put_replica(store, "req-alpha-r0", "req-alpha", "alpha", replica.endpoint)
        status, _ = await call
    assert status == 200


async def test_a_queued_call_whose_caller_hangs_up_leaves_the_queue(
    gateway: GatewayProcess, store: EtcdStore, replicas: list[Replica]
) -> None:
    await put_request(store, "req-alpha", "alpha")
    await routable(gateway, "alpha", 0)  # no replica: a call queues (up to cold_start_wait_s, 60 s)

    async def queued() -> float:
        return await gateway.metric("tokenfab_gateway_queue_length", tenant="alpha")

    async def queue_empty() -> bool:
        return await queued() == 0

    async with aiohttp.ClientSession() as s:
        call = asyncio.create_task(
            post(s, gateway, "/v1/completions", {"model": MODEL, "prompt": "bye", "max_tokens": 4})
        )
        await wait_for(queued, timeout=10, what="the call queued")
        call.cancel()  # the caller hangs up
        with contextlib.suppress(asyncio.CancelledError):
            await call
    await wait_for(queue_empty, timeout=10, what="the abandoned call leaving the queue (not at 60 s)")
    replica = Replica()
    replicas.append(replica)
    await put_replica(store, "req-alpha-r0", "req-alpha", "alpha", replica.endpoint)
    async with aiohttp.ClientSession() as s:
        status, body = await post(
            s, gateway, "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 4}
        )
    assert status == 200, body
    assert replica.generated_tokens() == 4  # the next caller's tokens only: the abandoned call never ran


@pytest.mark.parametrize("streamed", [True, False])
async def test_a_caller_hanging_up_before_its_answer_frees_the_replica(
    gateway: GatewayProcess, store: EtcdStore, streamed: bool
) -> None:
    """The call is cancelled where it waits (the replica's first token, or its whole answer): the
    replica's connection is closed, its load released, and the prompt it was given metered."""
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the call; never answered
        while await reader.read(65536):  # until the gateway closes the connection
            pass
        hung_up.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        await put_request(store, "req-alpha", "alpha")
        await put_replica(store, "r-silent", "req-alpha", "alpha", url)
        await routable(gateway, "alpha", 1)

        async def load() -> float:
            return await gateway.metric("tokenfab_gateway_replica_outstanding_tokens", replica="r-silent")

        async def released() -> bool:
            return await load() == 0

        body = {"model": MODEL, "prompt": "never mind", "max_tokens": 8}
        async with aiohttp.ClientSession() as s:
            call = asyncio.create_task(
                stream(s, gateway, "/v1/completions", body)
                if streamed
                else post(s, gateway, "/v1/completions", body)
            )
            await wait_for(load, timeout=10, what="the call's load on the replica")
            call.cancel()  # the caller hangs up
            with contextlib.suppress(asyncio.CancelledError):
                await call
        await wait_for(hung_up.is_set, timeout=10, what="the gateway closing the replica's connection")
        await wait_for(released, timeout=10, what="the replica's load released")
        assert await gateway.metric("tokenfab_gateway_responses_total", tenant="alpha", code="499") == 1
        metered = await gateway.metric("tokenfab_gateway_tokens_total", request="req-alpha", kind="prompt")
        assert metered > 0  # the prompt the replica was given, as an estimate
    finally:
        server.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=64),
        st.dictionaries(
            st.sampled_from(
                ["model", "prompt", "messages", "max_tokens", "stream", "n", "user", "stream_options"]
            ),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-5, 10**7),
                st.text(max_size=20),
                st.lists(st.integers(-3, 5), max_size=3),
            ),
            max_size=6,
        ).map(lambda d: json.dumps(d).encode()),
    ),
    path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]),
)
def test_fuzz_bodies_never_break_the_gateway(fuzz_gateway: str, body: bytes, path: str) -> None:
    import urllib.error
    import urllib.request

    call = urllib.request.Request(fuzz_gateway + path, data=body, headers=auth(), method="POST")
    try:
        with urllib.request.urlopen(call, timeout=60) as reply:
            status, answer = reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, json.loads(exc.read())
    assert status in (200, 400, 404, 429), (status, answer)
    if status == 400:
        assert answer["error"]["message"].startswith(answer["error"]["param"] + ":")
    if status == 200:
        assert answer["usage"]["completion_tokens"] >= 1


@pytest.fixture
async def fuzz_gateway(gateway: GatewayProcess, store: EtcdStore, replicas: list[Replica]) -> str:
    await setup_lane(store, gateway, replicas)
    return gateway.url


async def test_a_replica_silent_before_its_first_token_is_given_up_for_another(
    etcd: EtcdProcess, tmp_path: Path, store: EtcdStore, replicas: list[Replica]
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # reads the call, never answers
        await asyncio.sleep(30)  # the silence under test, not a wait
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    silent_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    gw = await gateway_for(
        etcd, tmp_path, "--policy", "least_load", "--first-token-timeout", "1", "--request-timeout", "2"
    )
    try:
        good = Replica()
        replicas.append(good)
        await put_request(store, "req-alpha", "alpha")
        # the silent one looks a thousand times faster: the router tries it first every time
        await put_replica(store, "r-silent", "req-alpha", "alpha", silent_url, capacity=1e6)
        await put_replica(store, "r-good", "req-alpha", "alpha", good.endpoint, capacity=1e3)
        await routable(gw, "alpha", 2)
        async with aiohttp.ClientSession() as s:
            status, _ = await post(s, gw, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 4})
            assert status == 200
            status, events = await stream(
                s, gw, "/v1/completions", {"model": MODEL, "prompt": "y", "max_tokens": 4}
            )
            assert status == 200
            assert events[-1] == "[DONE]"
        assert await gw.metric("tokenfab_gateway_retries_total", cause="TimeoutError") >= 1
    finally:
        gw.stop()
        server.close()


async def test_a_short_burst_over_the_reservation_queues_instead_of_failing(
    etcd: EtcdProcess, tmp_path: Path, store: EtcdStore, replicas: list[Replica]
) -> None:
    # 100 tokens/s reserved, a one-second bucket, no best effort: three calls of 60 tokens at
    # once are one more than the bucket holds; the others wait for it to refill, within the
    # request's 3 s TTFT target, and are served
    gw = await gateway_for(etcd, tmp_path, "--burst", "1", "--spare-horizon", "0")
    try:
        await setup_lane(store, gw, replicas, reserved=100, ttft_ms=3000)
        body = {"model": MODEL, "prompt": "burst", "max_tokens": 60}
        async with aiohttp.ClientSession() as s:
            results = await asyncio.gather(*(post(s, gw, "/v1/completions", body) for _ in range(3)))
        assert [status for status, _ in results] == [200, 200, 200]
        assert await gw.metric("tokenfab_gateway_admitted_total", cls="guaranteed") == 3
        assert await gw.metric("tokenfab_gateway_queue_wait_seconds_sum") >= 0.5  # 0.2 s + 0.8 s of refill
        assert await gw.metric("tokenfab_gateway_rejections_total") == 0
    finally:
        gw.stop()


async def test_a_call_no_replica_shape_could_serve_is_refused_naming_the_field(
    gateway: GatewayProcess, store: EtcdStore
) -> None:
    """Beyond the model's context, or a prompt no catalog shape prefills within the lane's TTFT
    target: 400 naming the field and the reason, before admission (no replica is needed)."""
    await put_request(store, "req-alpha", "alpha", ttft_ms=20)
    for _ in range(400):  # the gateway follows etcd: wait for the lane (up to ~20 s)
        if MODEL in await models_of(gateway, "alpha"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the gateway never listed the model")
    context = 32768  # qwen2.5-7b-instruct in the catalog
    async with aiohttp.ClientSession() as s:
        long = {"model": MODEL, "prompt": [11] * (context - 8), "max_tokens": 100}
        status, answer = await post(s, gateway, "/v1/completions", long)
        assert status == 400
        assert answer["error"]["param"] == "max_tokens"
        assert answer["error"]["message"].startswith("max_tokens: context: ")
        slow = {"model": MODEL, "prompt": [11] * 30_000, "max_tokens": 16}
        status, answer = await post(s, gateway, "/v1/completions", slow)
        assert (status, answer["error"]["param"]) == (400, "prompt")
        assert answer["error"]["message"].startswith("prompt: ttft: a 30000-token prompt")
    assert await gateway.metric("tokenfab_gateway_rejections_total", reason="infeasible") == 2
    assert await gateway.metric("tokenfab_gateway_arrivals_total") == 0  # refused before admission
