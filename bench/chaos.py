"""Chaos: kill -9 the leading control plane at random moments while capacity requests are created
and cancelled; check that nothing acknowledged is lost and nothing is left duplicated.

    python bench/chaos.py --iterations 50 [--seed 7]

Processes: a real etcd, one local Ray cluster (head, executor process), two simulated 4 x H100
nodes (agent processes with raylets, talking to instance "c"), three ``tokenfab controlplane``
processes ("a", "b", "c"; leader TTL 5 s). Each iteration: a create (while fewer than three
requests are active) or a cancel, sent to a random instance, and at a random moment within 0-2 s
of it a kill -9 of whichever instance leads, restarted at once. Then the system must converge:
every acknowledged request is there with its acknowledged state (lost_requests otherwise), every
active one is Ready with no surplus replica and every cancelled one has none left
(duplicate_replicas counts surplus live replicas plus Ray actors no live replica claims), within
``--converge`` seconds (convergence_s from the kill). Prints one JSON object; no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from bench.procs import ControlPlaneProc as Plane  # noqa: E402
from bench.procs import stop_agents  # noqa: E402
from controlplane.domain.capacity import CapacityRecord  # noqa: E402
from controlplane.domain.replicas import LIVE, ReplicaRecord  # noqa: E402
from controlplane.embedded.etcd import EtcdProcess  # noqa: E402
from controlplane.embedded.ray import ExecutorProcess, RayHead  # noqa: E402
from controlplane.executor.service import RemoteExecutor  # noqa: E402
from controlplane.store import keys  # noqa: E402
from controlplane.store.etcd import EtcdStore  # noqa: E402
from tokenfab.logs import configure  # noqa: E402
from tokenfab.v1 import capacity_pb2, capacity_pb2_grpc  # noqa: E402

TOKEN = (("authorization", "Bearer bench-token"),)
NODES = ("ch-0", "ch-1")
TARGET = 3000.0  # one H100 replica of Qwen2.5-7B


async def state(
    store: EtcdStore, client: RemoteExecutor
) -> tuple[dict[str, CapacityRecord], list[ReplicaRecord], set[str]]:
    kvs, _ = await store.list_prefix(keys.CAPACITY_REQUESTS)
    requests = {r.id: r for r in (CapacityRecord.model_validate_json(kv.value) for kv in kvs)}
    kvs, _ = await store.list_prefix(keys.REPLICAS)
    replicas = [ReplicaRecord.model_validate_json(kv.value) for kv in kvs]
    actors = {o.replica_id for o in await client.observe()}
    return requests, replicas, actors


def judge(expected: dict[str, bool], requests: dict[str, CapacityRecord], replicas: list[ReplicaRecord],
          actors: set[str]) -> tuple[int, int, bool]:  # fmt: skip
    """(lost, duplicates, converged) for the acknowledged requests (id -> should be active)."""
    lost = sum(1 for rid, active in expected.items() if rid not in requests or requests[rid].active != active)
    live = [r for r in replicas if r.state in LIVE]
    surplus = 0
    converged = True
    for rid, active in expected.items():
        mine = [r for r in live if r.request_id == rid]
        if not active:
            surplus += len(mine)
            converged &= not mine
            continue
        ready = sum(r.predicted_output_tokens_per_second for r in mine if r.state.value == "Ready")
        smallest = min((r.predicted_output_tokens_per_second for r in mine), default=0.0)
        total = sum(r.predicted_output_tokens_per_second for r in mine)
        extra = 1 if mine and total - smallest >= TARGET - 1e-6 else 0
        surplus += extra
        converged &= ready >= TARGET - 1e-6 and not extra
    claimed = {r.id for r in replicas if r.state.value not in ("Stopped", "Failed")}
    orphans = len(actors - claimed)
    converged &= orphans == 0
    return lost, surplus + orphans, converged


async def leader(store: EtcdStore) -> str:
    kv = await store.get(keys.LEADER)
    return json.loads(kv.value)["identity"] if kv is not None else ""


async def operate(
    target: Plane, active: list[str], i: int, spec: Any, expected: dict[str, bool], rng: random.Random
) -> None:
    """One create or cancel; only an acknowledged call adds to what is expected."""
    try:
        async with grpc.aio.insecure_channel(target.address) as channel:
            stub = capacity_pb2_grpc.CapacityServiceStub(channel)
            if len(active) < 3 and (not active or rng.random() < 0.6):
                create = capacity_pb2.CreateCapacityRequest(spec=spec, idempotency_key=f"chaos-{i}")
                got = await stub.Create(create, metadata=TOKEN, timeout=10)
                expected[got.id] = True
            else:
                victim = rng.choice(active)
                try:
                    await stub.Cancel(
                        capacity_pb2.CancelCapacityRequest(id=victim), metadata=TOKEN, timeout=10
                    )
                except grpc.aio.AioRpcError:
                    expected.pop(victim, None)  # applied or not, unknown: no longer judged
                    raise
                expected[victim] = False
    except grpc.aio.AioRpcError:
        pass  # not acknowledged (its instance was the one killed): nothing is expected of it


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--converge", type=float, default=60.0, help="give up on an iteration after this, s")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    configure(fmt="json", level="warning")
    work = Path(tempfile.mkdtemp(prefix="tfc-"))
    fleet = work / "fleet.yaml"
    fleet.write_text("nodes:\n" + "".join(
        f"  - {{id: {n}, cluster: bench, region: r1, vendor: nvidia, model: H100, devices: 4, memory_gib: 80}}\n"
        for n in NODES
    ))  # fmt: skip
    tenants = work / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: bench, token: bench-token}\n")
    etcd = EtcdProcess(work / "etcd", log_file=work / "etcd.log")
    head = RayHead(work / "h", log_file=work / "head.log")
    executor = ExecutorProcess("bench", "", log_file=work / "executor.log")
    agents: list[subprocess.Popen[bytes]] = []
    planes: dict[str, Plane] = {}
    store: EtcdStore | None = None
    result: dict[str, Any] = {
        "iterations": args.iterations,
        "seed": args.seed,
        "instances": 3,
        "leader_ttl_s": 5,
    }
    try:
        await etcd.start()
        await asyncio.to_thread(head.start)
        executor.ray_address = head.address
        executor.spawn()
        await executor.wait_ready()
        store = EtcdStore(etcd.host, etcd.client_port)
        await store.connect()
        extra = ["--sim-start-delay", "1", "--reconcile-interval", "0.5"]
        planes = {n: Plane(n, work, etcd.endpoint, executor.address, tenants, extra) for n in "abc"}
        for plane in planes.values():
            plane.start()
        epoch = f"{time.time():.3f}"
        for node in NODES:
            with (work / f"agent-{node}.log").open("ab") as out:
                agents.append(subprocess.Popen(
                    [sys.executable, "-m", "controlplane.cli.main", "agent", "--backend", "simulated", "--node", node,
                     "--fleet", str(fleet), "--address", planes["c"].address, "--sim-epoch", epoch,
                     "--ray-address", head.address, "--ray-temp-dir", str(work / node)],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                ))  # fmt: skip
        client = RemoteExecutor("bench", executor.address)
        deadline = time.monotonic() + 120
        while len([n for n in (await client.inventory()).nodes if n.alive and n.node_id]) < len(NODES):
            if time.monotonic() > deadline:
                raise SystemExit("raylets did not join")
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # registrations reach every instance
        expected: dict[str, bool] = {}
        convergence, lost_total, dup_max, failures = [], 0, 0, 0
        spec = capacity_pb2.CapacitySpec(
            model="qwen2.5-7b-instruct", output_tokens_per_second=TARGET, allowed_accelerators=["H100"],
            latency=capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
        )  # fmt: skip
        for i in range(args.iterations):
            target = planes[rng.choice("abc")]
            active = [rid for rid, on in expected.items() if on]

            op = asyncio.create_task(operate(target, active, i, spec, expected, rng))
            await asyncio.sleep(rng.uniform(0, 2))
            victim_name = await leader(store) or "a"
            killed_at = time.monotonic()
            planes[victim_name].kill()
            planes[victim_name].start()
            await op
            done = None
            while time.monotonic() - killed_at < args.converge:
                lost, dups, converged = judge(expected, *await state(store, client))
                if converged:
                    done = time.monotonic() - killed_at
                    break
                await asyncio.sleep(0.25)
            lost, dups, _ = judge(expected, *await state(store, client))
            lost_total += lost
            dup_max = max(dup_max, dups)
            if done is None:
                failures += 1
            else:
                convergence.append(done)
            print(json.dumps({"iteration": i, "killed": victim_name, "converged_s": done and round(done, 2),
                              "lost": lost, "duplicates": dups}), file=sys.stderr, flush=True)  # fmt: skip
        await client.close()
        result.update(
            lost_requests=lost_total,
            duplicate_replicas=dup_max,
            not_converged=failures,
            max_convergence_s=round(max(convergence), 2) if convergence else None,
            median_convergence_s=round(statistics.median(convergence), 2) if convergence else None,
            requests_acknowledged=len(expected),
        )
    finally:
        stop_agents(agents)
        for plane in planes.values():
            plane.kill()
        if store is not None:
            await store.close()
        executor.stop()
        head.stop(5.0)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
