"""Lease notices and fencing with real parts: a real agent process polls a metadata endpoint served
over loopback HTTP, a real control plane on real etcd turns the notice into an earlier lease end;
the agent stops the local processes of replicas recorded as failed on its node (FENCE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiohttp import web

from agents.lease import MetadataNotices
from controlplane.api.server import ControlPlane
from controlplane.domain.nodes import Vendor
from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.fleet.events import EventLog
from controlplane.store import keys
from tests.integration.conftest import AgentProcess, ControlPlaneFactory, metric_value, state_of, wait_for


class _Metadata:
    """A cloud metadata endpoint on loopback: 404 until a notice is set (as EC2 answers)."""

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.polls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.polls += 1
                if outer.body is None or self.path != "/latest/meta-data/spot/instance-action":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/latest/meta-data/spot/instance-action"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata() -> Iterator[_Metadata]:
    endpoint = _Metadata()
    yield endpoint
    endpoint.close()


async def _leased_node_polling(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess], metadata: _Metadata
) -> tuple[ControlPlane, AgentProcess, Callable[[], str]]:
    """A control plane and the leased t-metax-0 (a 3-day lease from now), Ready, its agent
    polling the metadata endpoint every 0.2 s."""
    plane = await control_plane()
    agent = agents(
        "t-metax-0", plane.config.address,
        ["--sim-epoch", f"{time.time():.3f}", "--lease-notice-url", metadata.url, "--lease-notice-interval", "0.2"],
    )  # fmt: skip
    seen = lambda: f"agent log:\n{agent.output()}"  # noqa: E731
    await wait_for(lambda: state_of(plane, "t-metax-0") == "ready", what="Ready", detail=seen)
    return plane, agent, seen


async def test_a_preemption_notice_ends_the_lease_early(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess], metadata: _Metadata
) -> None:
    plane, _agent, seen = await _leased_node_polling(control_plane, agents, metadata)
    assert plane.registry is not None
    await wait_for(lambda: metadata.polls >= 3, what="the agent polling the endpoint", detail=seen)
    before = plane.registry.get("t-metax-0").record.lease_end
    assert before is not None and before > datetime.now(UTC) + timedelta(days=2)  # the 3-day lease

    notice_end = (datetime.now(UTC) + timedelta(seconds=120)).replace(microsecond=0)
    metadata.body = json.dumps(
        {"action": "terminate", "time": notice_end.strftime("%Y-%m-%dT%H:%M:%SZ")}
    ).encode()

    def lease_end() -> datetime | None:
        assert plane.registry is not None
        return plane.registry.get("t-metax-0").record.lease_end

    await wait_for(lambda: lease_end() == notice_end, what="the lease end moved to the notice", detail=seen)
    events = await EventLog(plane.store).list(node_id="t-metax-0")
    notices = [e for e in events if e.kind == "preemption_notice"]
    assert len(notices) == 1, events
    assert "terminate" in notices[0].message and metadata.url in notices[0].message
    assert metric_value(plane.metrics.failover_events, kind="preemption_notice") == 1

    # the agent keeps polling and sees the same notice: nothing new is recorded
    polls = metadata.polls
    await wait_for(lambda: metadata.polls >= polls + 5, what="more polls", detail=seen)
    events = await EventLog(plane.store).list(node_id="t-metax-0")
    assert len([e for e in events if e.kind == "preemption_notice"]) == 1
    assert lease_end() == notice_end


async def test_a_garbled_notice_is_not_a_notice(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess], metadata: _Metadata
) -> None:
    plane, agent, seen = await _leased_node_polling(control_plane, agents, metadata)
    assert plane.registry is not None
    before = plane.registry.get("t-metax-0").record.lease_end
    metadata.body = b'{"action": "terminate", "time": "soon"}'
    polls = metadata.polls
    await wait_for(lambda: metadata.polls >= polls + 5, what="polls of the garbled notice", detail=seen)
    await wait_for(
        lambda: "lease.notice_unreadable" in agent.output(40), what="the agent logging it", detail=seen
    )
    assert "time: not an ISO 8601 time" in agent.output(40)
    assert plane.registry.get("t-metax-0").record.lease_end == before
    assert state_of(plane, "t-metax-0") == "ready"


def _replica(rid: str, node: str, state: ReplicaState) -> ReplicaRecord:
    at = datetime.now(UTC)
    return ReplicaRecord(
        id=rid, request_id="cr-fence", tenant="t", model="qwen2.5-7b-instruct", vendor=Vendor.NVIDIA,
        accelerator="H100", cluster="test-a", node_id=node, devices=(0,), tensor_parallel=1,
        engine="simulated", dtype="bf16", state=state, predicted_output_tokens_per_second=1000,
        created_at=at, updated_at=at,
    )  # fmt: skip


def _replica_process(node: str, replica_id: str, generation: int = 1) -> subprocess.Popen[bytes]:
    """A process standing where a replica's engine runs: it carries the replica's environment."""
    env = {
        **os.environ,
        "TOKENFAB_NODE_ID": node,
        "TOKENFAB_REPLICA_ID": replica_id,
        "TOKENFAB_GENERATION": str(generation),
    }
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], env=env, start_new_session=True
    )


async def test_the_agent_stops_processes_of_fenced_replicas(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess]
) -> None:
    plane = await control_plane()
    node = "t-nvidia-0"
    store = plane.store
    failed = _replica("r-replaced", node, ReplicaState.FAILED)
    live = _replica("r-serving", node, ReplicaState.READY)
    elsewhere = _replica("r-replaced", "t-ascend-0", ReplicaState.FAILED)  # same id, other node
    await store.put(keys.replica(failed.id), failed.model_dump_json().encode())
    await store.put(keys.replica(live.id), live.model_dump_json().encode())
    procs = {
        "replaced": _replica_process(node, failed.id),
        "serving": _replica_process(node, live.id),
        "other-node": _replica_process(elsewhere.node_id, elsewhere.id),
    }
    try:
        agent = agents(node, plane.config.address)
        seen = lambda: f"agent log:\n{agent.output(20)}"  # noqa: E731
        await wait_for(lambda: state_of(plane, node) == "ready", what="Ready", detail=seen)
        # the stream binds -> FENCE [r-replaced] -> SIGTERM to its process
        await wait_for(
            lambda: procs["replaced"].poll() is not None, what="the fenced process stopped", detail=seen
        )
        assert procs["replaced"].returncode == -signal.SIGTERM
        assert procs["serving"].poll() is None
        assert procs["other-node"].poll() is None  # same replica id, another node's process

        # the serving replica fails later (its record moves): a new FENCE stops it too
        gone = live.moved(ReplicaState.FAILED, "actor died", datetime.now(UTC))
        await store.put(keys.replica(gone.id), gone.model_dump_json().encode())
        await wait_for(lambda: procs["serving"].poll() is not None, what="the second fence", detail=seen)
        assert procs["other-node"].poll() is None
        assert metric_value(plane.metrics.fence_commands) >= 2
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


# -- polling a metadata endpoint safely (real HTTP on loopback, aiohttp servers) ---------------

NOTICE_PATH = "/latest/meta-data/spot/instance-action"
NOTICE_BODY = '{"action": "terminate", "time": "2026-11-22T08:02:00Z"}'


class _Endpoint:
    """An aiohttp server on 127.0.0.1 that records every request it gets."""

    def __init__(self, routes: list[Any]) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.app = web.Application(middlewares=[self._record])
        self.app.add_routes(routes)
        self.runner = web.AppRunner(self.app)
        self.port = 0

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.method, request.path, dict(request.headers)))
        response: web.StreamResponse = await handler(request)
        return response

    async def __aenter__(self) -> _Endpoint:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]  # (host, port) of the one bound socket
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def url(self, path: str = NOTICE_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def test_imdsv2_session_tokens_are_fetched_and_sent() -> None:
    """An endpoint that, like EC2 with IMDSv2 required, answers 401 without a session token."""
    issued: list[str] = []

    async def token(request: web.Request) -> web.Response:
        if not request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "").isdigit():
            return web.Response(status=400)
        issued.append(f"token-{len(issued)}")
        return web.Response(text=issued[-1])

    async def notice(request: web.Request) -> web.Response:
        if not issued or request.headers.get("X-aws-ec2-metadata-token") != issued[-1]:
            return web.Response(status=401)
        return web.Response(text=NOTICE_BODY, content_type="application/json")

    async with _Endpoint([web.put("/latest/api/token", token), web.get(NOTICE_PATH, notice)]) as imds:
        source = MetadataNotices(imds.url(), timeout_s=5)
        for _ in range(3):
            found = await source.poll()
            assert found is not None and found.end == datetime(2026, 11, 22, 8, 2, tzinfo=UTC)
        assert source.token_fetches == 1 and source.errors == 0  # one token for every poll
        gets = [headers for method, path, headers in imds.seen if method == "GET"]
        assert gets[0].get("X-aws-ec2-metadata-token") is None  # the first plain GET got its 401
        assert all(h.get("X-aws-ec2-metadata-token") == "token-0" for h in gets[1:])


async def test_redirects_elsewhere_are_refused_and_headers_stay_with_the_endpoint() -> None:
    async def elsewhere(request: web.Request) -> web.Response:
        return web.Response(text=NOTICE_BODY)

    async with _Endpoint([web.get(NOTICE_PATH, elsewhere)]) as other:

        async def away(request: web.Request) -> web.Response:
            raise web.HTTPFound(other.url())  # same host, another port: another origin

        async def moved(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(NOTICE_PATH)  # same origin

        async def final(request: web.Request) -> web.Response:
            return web.Response(text=NOTICE_BODY)

        routes = [web.get("/away", away), web.get("/moved", moved), web.get(NOTICE_PATH, final)]
        async with _Endpoint(routes) as first:
            secret = {"X-Tenant-Secret": "s3cret"}
            refused = MetadataNotices(first.url("/away"), headers=secret, timeout_s=5)
            assert await refused.poll() is None and refused.errors == 1
            assert other.seen == [], "the redirect to another origin was not followed"

            followed = MetadataNotices(first.url("/moved"), headers=secret, timeout_s=5)
            assert await followed.poll() is not None and followed.errors == 0
            by_path = {path: headers for _, path, headers in first.seen}
            assert by_path["/moved"].get("X-Tenant-Secret") == "s3cret"
            assert "X-Tenant-Secret" not in by_path[NOTICE_PATH], "a custom header crossed a redirect"


async def test_one_deadline_covers_the_whole_poll_of_a_trickling_endpoint() -> None:
    """A byte every 0.2 s never trips a per-read timeout; the poll's own deadline ends it."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the poll hangs up at its deadline
            for _ in range(300):  # 60 s of body, one byte at a time
                await response.write(b" ")
                await asyncio.sleep(0.2)  # the trickle's pace, not a wait for anything
        return response

    async with _Endpoint([web.get(NOTICE_PATH, trickle)]) as slow:
        source = MetadataNotices(slow.url(), timeout_s=1.0)
        assert await asyncio.wait_for(source.poll(), 30) is None  # 30 s: a hang guard, not a timing check
        assert source.errors == 1
