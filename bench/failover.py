"""Failover figures with real processes: a lease revoked with notice, a leader killed, a node cut off.

    python bench/failover.py [--notice 45] [--lost-after 10]

Processes: a real etcd, one local Ray cluster (head, executor process), three simulated 2 x H100
nodes (real agent processes with their raylets: two owned, one leased and cheaper, so the
request lands there first) and two control-plane processes (``tokenfab controlplane``) sharing
the etcd, leader elected; agents and this script talk to the second one (any instance serves),
so killing the first, the leader, leaves the fleet's heartbeats alone. One capacity request (Qwen2.5-7B, 5,000 output tokens/s: one replica).

1. planned_capacity_gap_s: ``RevokeLease`` on the leased node with ``--notice`` seconds; from then
   until 5 s after the lease end, the Ready tokens/s are sampled every 0.1 s; the gap is the time
   they were below the target (target 0).
2. leader_failover_s: kill -9 of the leading control plane until the other holds the leader key
   (it acts on its next reconcile pass); replicas_restarted: replica actors whose actor id changed
   across the change (target 0).
3. detection_s: SIGSTOP of the agent of the node serving the request (a partition: no
   heartbeats, the raylet keeps running) until the fleet marks the node Suspect (3 missed 1 s
   heartbeats), where the reconciler starts a replacement; replacement_issued_s: from Suspect
   until the replacement replica exists in etcd; lost_s: until the node is declared Lost
   (``--lost-after``, default 10 s).

Prints one JSON object; no assertions. Figures belong in docs/benchmarks.md with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from bench.procs import ControlPlaneProc, stop_agents  # noqa: E402
from controlplane.embedded.etcd import EtcdProcess  # noqa: E402
from controlplane.embedded.ray import ExecutorProcess, RayHead  # noqa: E402
from controlplane.executor.service import RemoteExecutor  # noqa: E402
from controlplane.store import keys  # noqa: E402
from controlplane.store.etcd import EtcdStore  # noqa: E402
from tokenfab.logs import configure  # noqa: E402
from tokenfab.v1 import capacity_pb2, capacity_pb2_grpc, fleet_pb2, fleet_pb2_grpc, types_pb2  # noqa: E402

TOKEN = (("authorization", "Bearer bench-token"),)
NODES = ("fo-owned-0", "fo-owned-1", "fo-leased-0")
TARGET = 5000.0


def fleet_yaml(path: Path) -> None:
    path.write_text(
        "nodes:\n"
        "  - {id: fo-owned-0, cluster: bench, region: r1, vendor: nvidia, model: H100, devices: 2, memory_gib: 80}\n"
        "  - {id: fo-owned-1, cluster: bench, region: r1, vendor: nvidia, model: H100, devices: 2, memory_gib: 80}\n"
        "  - {id: fo-leased-0, cluster: bench, region: r1, vendor: nvidia, model: H100, devices: 2, memory_gib: 80,\n"
        "     lease: {provider: bench-cloud, lease_id: fo-1, ends_in: 12h, price_per_accelerator_hour: 1.0}}\n"
    )


async def leader(store: EtcdStore) -> str:
    kv = await store.get(keys.LEADER)
    return json.loads(kv.value)["identity"] if kv is not None else ""


async def ready_tps(stub: Any, request_id: str) -> float:
    got = await stub.Get(capacity_pb2.GetCapacityRequest(id=request_id), metadata=TOKEN, timeout=5)
    return float(got.status.ready_output_tokens_per_second)


async def live(stub: Any, request_id: str) -> list[Any]:
    query = capacity_pb2.ListReplicasRequest(request_id=request_id)
    return list((await stub.ListReplicas(query, metadata=TOKEN, timeout=5)).replicas)


async def wait(predicate: Any, within_s: float, what: str, step: float = 0.05) -> float:
    deadline = time.monotonic() + within_s
    while True:
        if await predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(step)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notice", type=float, default=45.0, help="lease revocation notice, s")
    parser.add_argument(
        "--lost-after", type=float, default=10.0, help="control plane --lost-after (default: its default)"
    )
    args = parser.parse_args()
    configure(fmt="json", level="warning")
    work = Path(tempfile.mkdtemp(prefix="tff-"))
    fleet = work / "fleet.yaml"
    fleet_yaml(fleet)
    tenants = work / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: bench, token: bench-token}\n")
    etcd = EtcdProcess(work / "etcd", log_file=work / "etcd.log")
    head = RayHead(work / "h", log_file=work / "head.log")
    executor = ExecutorProcess("bench", "", log_file=work / "executor.log", insecure_local_admin=True)
    agents: dict[str, subprocess.Popen[bytes]] = {}
    planes: list[ControlPlaneProc] = []
    result: dict[str, Any] = {"notice_s": args.notice, "lost_after_s": args.lost_after, "heartbeat_interval_s": 1.0,
                              "leader_ttl_s": 5, "target_output_tokens_per_s": TARGET}  # fmt: skip
    store: EtcdStore | None = None
    try:
        await etcd.start()
        await asyncio.to_thread(head.start)
        executor.ray_address = head.address
        executor.spawn()
        await executor.wait_ready()
        extra = ["--sim-start-delay", "2", "--lost-after", str(args.lost_after)]
        planes = [ControlPlaneProc(n, work, etcd.endpoint, executor.address, tenants, extra) for n in "ab"]
        planes[0].start()
        store = EtcdStore(etcd.host, etcd.client_port)
        await store.connect()
        await wait(lambda: _is(leader(store), "a"), 60, "control plane a to lead", 0.2)
        planes[1].start()
        epoch = f"{time.time():.3f}"
        for node in NODES:
            with (work / f"agent-{node}.log").open("ab") as out:
                agents[node] = subprocess.Popen(
                    [sys.executable, "-m", "controlplane.cli.main", "agent", "--backend", "simulated", "--node", node,
                     "--fleet", str(fleet), "--address", planes[1].address, "--sim-epoch", epoch,
                     "--ray-address", head.address, "--ray-temp-dir", str(work / node)],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        client = RemoteExecutor("bench", executor.address)

        async def all_joined() -> bool:
            return len([n for n in (await client.inventory()).nodes if n.alive and n.node_id]) >= len(NODES)

        await wait(all_joined, 120, "raylets", 0.5)
        async with grpc.aio.insecure_channel(planes[1].address) as channel:  # the instance that will survive
            stub = capacity_pb2_grpc.CapacityServiceStub(channel)
            fleet_stub = fleet_pb2_grpc.FleetServiceStub(channel)

            async def fleet_ready() -> bool:
                nodes = (await fleet_stub.ListNodes(fleet_pb2.ListNodesRequest(), timeout=5)).nodes
                return bool(sum(n.state == types_pb2.NODE_STATE_READY for n in nodes) >= len(NODES))

            await wait(fleet_ready, 60, "nodes Ready", 0.2)
            for node in ("fo-owned-0", "fo-owned-1"):  # start on the leased node
                await fleet_stub.Cordon(
                    fleet_pb2.CordonRequest(node_id=node, reason="bench: start on the lease")
                )
            spec = capacity_pb2.CapacitySpec(
                model="qwen2.5-7b-instruct", output_tokens_per_second=TARGET, allowed_accelerators=["H100"],
                latency=capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
            )  # fmt: skip
            created = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec), metadata=TOKEN)
            rid = created.id
            await wait(lambda: _ge(ready_tps(stub, rid), TARGET), 120, "the request Ready", 0.2)
            first = await live(stub, rid)
            result["initial_nodes"] = sorted({r.node_id for r in first})
            for node in ("fo-owned-0", "fo-owned-1"):
                await fleet_stub.Uncordon(fleet_pb2.UncordonRequest(node_id=node))

            # 1. planned: lease revoked with notice
            revoked_at = time.monotonic()
            await fleet_stub.RevokeLease(
                fleet_pb2.RevokeLeaseRequest(node_id="fo-leased-0", notice_s=args.notice)
            )
            below, samples, last = 0.0, 0, time.monotonic()
            while time.monotonic() < revoked_at + args.notice + 5:
                tps = await ready_tps(stub, rid)
                now = time.monotonic()
                if tps < TARGET - 1e-6:
                    below += now - last
                last = now
                samples += 1
                await asyncio.sleep(0.1)
            after = await live(stub, rid)
            result["planned_capacity_gap_s"] = round(below, 2)
            result["planned_samples"] = samples
            result["nodes_after_revoke"] = sorted({r.node_id for r in after if r.state == "Ready"})

            # 2. leader failover: kill -9 the leader, the other takes the key
            assert planes[0].proc is not None
            actors = {o.replica_id: o.actor_id for o in await client.observe()}
            killed_at = time.monotonic()
            planes[0].kill()
            took = await wait(lambda: _is(leader(store), "b"), 60, "control plane b to lead", 0.02)
            result["leader_failover_s"] = round(took - killed_at, 2)
            await asyncio.sleep(5)  # several reconcile passes of the new leader
            after_change = {o.replica_id: o.actor_id for o in await client.observe()}
            result["replicas_restarted"] = sum(1 for r, a in actors.items() if after_change.get(r, a) != a)
            result["replicas_kept"] = sum(1 for r, a in actors.items() if after_change.get(r) == a)

            # 3. unplanned: the serving node's agent is frozen (partition)
            serving = next(r.node_id for r in await live(stub, rid) if r.state == "Ready")
            old_ids = {r.id for r in await live(stub, rid)}
            os.kill(agents[serving].pid, signal.SIGSTOP)
            frozen_at = time.monotonic()

            async def in_state(state: int) -> bool:
                node = await fleet_stub.GetNode(fleet_pb2.GetNodeRequest(node_id=serving), timeout=5)
                return bool(node.state == state)

            async def replaced() -> bool:
                return any(r.id not in old_ids for r in await live(stub, rid))

            detected = await wait(
                lambda: in_state(types_pb2.NODE_STATE_SUSPECT), 120, "the node Suspect", 0.05
            )
            issued = await wait(replaced, 60, "a replacement", 0.05)
            lost_at = await wait(lambda: in_state(types_pb2.NODE_STATE_LOST), 120, "the node Lost", 0.05)
            result["detection_s"] = round(detected - frozen_at, 2)
            result["replacement_issued_s"] = round(issued - detected, 2)
            result["lost_s"] = round(lost_at - frozen_at, 2)
            result["frozen_node"] = serving
            os.kill(agents[serving].pid, signal.SIGCONT)
            await wait(lambda: _ge(ready_tps(stub, rid), TARGET), 120, "Ready again", 0.2)
            result["recovered_s"] = round(time.monotonic() - frozen_at, 2)
            await stub.Cancel(capacity_pb2.CancelCapacityRequest(id=rid), metadata=TOKEN)
        await client.close()
    finally:
        stop_agents(agents.values())
        for plane in planes:
            plane.kill()
        if store is not None:
            await store.close()
        executor.stop()
        head.stop(5.0)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


async def _is(coro: Any, value: str) -> bool:
    return bool(await coro == value)


async def _ge(coro: Any, value: float) -> bool:
    return bool(await coro >= value - 1e-6)


if __name__ == "__main__":
    asyncio.run(main())
