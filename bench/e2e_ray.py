"""Time to N Ready replicas through the control plane vs the same N actors created directly with Ray.

    python bench/e2e_ray.py --replicas 8 --rounds 3

One local Ray cluster (a head plus ceil(N / 8) simulated 8 x H100 nodes, each a real agent process
with its raylet), one executor process, a real etcd and the control plane in this process.

* control_plane_s: from the Create call for a capacity request sized to exactly N replicas (Qwen2.5-7B,
  TP 1) until its phase is Ready (every replica's engine answered its health check and the
  reconciler persisted it). Includes planning, etcd writes, the executor's gRPC hop, placement,
  actor start and the reconciler noticing readiness.
* raw_ray_s: a Ray driver in a child process creates the same N actors (same class, same
  resources, node label selectors and environment, same simulated engine) with Ray's API and
  waits until each reports ready: the floor any orchestration on Ray pays.

Rounds alternate (raw, then control plane) and each ends with every actor stopped; medians and
the ratio of medians are reported. The simulated engine's load delay is 0, so the comparison is
orchestration alone. Prints one JSON object; no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from controlplane.api.server import ControlPlane  # noqa: E402
from controlplane.capacity.validation import workload_of  # noqa: E402
from controlplane.catalog import load_catalog  # noqa: E402
from controlplane.config import ControlPlaneConfig  # noqa: E402
from controlplane.domain.capacity import CapacitySpec  # noqa: E402
from controlplane.domain.nodes import Vendor  # noqa: E402
from controlplane.embedded.etcd import EtcdProcess, free_port  # noqa: E402
from controlplane.embedded.ray import ExecutorProcess, RayHead  # noqa: E402
from controlplane.executor.service import RemoteExecutor  # noqa: E402
from controlplane.metrics import ControlPlaneMetrics  # noqa: E402
from controlplane.scheduler import Demand, SchedulerConfig, options_for  # noqa: E402
from tokenfab.logs import configure  # noqa: E402
from tokenfab.v1 import capacity_pb2, capacity_pb2_grpc  # noqa: E402

MODEL = "qwen2.5-7b-instruct"
TOKEN = (("authorization", "Bearer bench-token"),)

RAW_DRIVER = r"""
import json, sys, time
import ray
from controlplane.executor.ray_driver import RayExecutor
from tokenfab.v1 import executor_pb2

address, launches_file = sys.argv[1], sys.argv[2]
launches = [executor_pb2.ReplicaLaunch.FromString(bytes.fromhex(h)) for h in json.load(open(launches_file))]
executor = RayExecutor("bench", address, namespace="raw-bench")
executor.connect()
start = time.perf_counter()
handles = [executor._create(launch) for launch in launches]
for handle in handles:
    handle.boot.remote()
pending = set(range(len(handles)))
while pending:
    for i in list(pending):
        seen = executor_pb2.ReplicaObservation.FromString(ray.get(handles[i].observe.remote()))
        if seen.state == "ready":
            pending.discard(i)
        elif seen.state == "failed":
            raise SystemExit(f"actor failed: {seen.message}")
    time.sleep(0.05)
elapsed = time.perf_counter() - start
for launch, handle in zip(launches, handles):
    executor._kill(launch.replica_id, handle)
print(json.dumps({"raw_ray_s": elapsed}))
"""


def fleet_file(path: Path, nodes: int) -> None:
    lines = ["nodes:"]
    for i in range(nodes):
        lines.append(
            f"  - {{id: bench-h100-{i}, cluster: bench, region: r1, vendor: nvidia, model: H100, devices: 8, "
            f"memory_gib: 80, numa_nodes: 1}}"
        )
    path.write_text("\n".join(lines) + "\n")


def per_replica_tps() -> float:
    catalog = load_catalog()
    spec = CapacitySpec.model_validate(
        {
            "model": MODEL,
            "output_tokens_per_second": 1000,
            "latency": {"ttft_p95_ms": 1000, "tpot_p95_ms": 50},
        }
    )
    demand = Demand("x", MODEL, 1000.0, workload=workload_of(spec), allowed_accelerators=frozenset({"H100"}))
    option = next(
        o for o in options_for(demand, catalog, {"H100": 8}, SchedulerConfig()) if o.feasible and o.tp == 1
    )
    return option.output_tokens_per_s


async def control_plane_round(stub: capacity_pb2_grpc.CapacityServiceStub, replicas: int, tps: float,
                              executor: RemoteExecutor, key: str) -> float:  # fmt: skip
    spec = capacity_pb2.CapacitySpec(
        model=MODEL, output_tokens_per_second=round((replicas - 0.5) * tps, 1),
        allowed_accelerators=["H100"], latency=capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
    )  # fmt: skip
    start = time.perf_counter()
    created = await stub.Create(
        capacity_pb2.CreateCapacityRequest(spec=spec, idempotency_key=key), metadata=TOKEN
    )
    while True:
        got = await stub.Get(capacity_pb2.GetCapacityRequest(id=created.id), metadata=TOKEN)
        if got.status.phase == "Ready":
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - start
    if len(got.status.replicas) != replicas:
        raise SystemExit(f"expected {replicas} replicas, got {len(got.status.replicas)}")
    await stub.Cancel(capacity_pb2.CancelCapacityRequest(id=created.id), metadata=TOKEN)
    while any(o.request_id == created.id for o in await executor.observe()):
        await asyncio.sleep(0.2)
    return elapsed


def raw_launches(replicas: int, nodes: int, work: Path) -> Path:
    from controlplane.domain.replicas import ReplicaRecord
    from controlplane.reconcile.launch import EngineSettings, build_launch

    catalog = load_catalog()
    now = __import__("datetime").datetime.now(__import__("datetime").UTC)
    launches = []
    for i in range(replicas):
        record = ReplicaRecord(
            id=f"raw-{i}", request_id="raw", tenant="bench", model=MODEL, vendor=Vendor.NVIDIA, accelerator="H100",
            cluster="bench", node_id=f"bench-h100-{i // 8 % nodes}", devices=(i % 8,), tensor_parallel=1,
            engine="simulated", dtype="bf16", predicted_output_tokens_per_second=0.0, created_at=now, updated_at=now,
        )  # fmt: skip
        launches.append(
            build_launch(record, catalog, EngineSettings(sim_start_delay_s=0.0)).SerializeToString().hex()
        )
    path = work / "launches.json"
    path.write_text(json.dumps(launches))
    return path


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure(fmt="json", level="warning")
    nodes = math.ceil(args.replicas / 8)
    work = Path(tempfile.mkdtemp(prefix="tfb-"))
    fleet = work / "fleet.yaml"
    fleet_file(fleet, nodes)
    tenants = work / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: bench, token: bench-token}\n")
    etcd = EtcdProcess(work / "etcd", log_file=work / "etcd.log")
    head = RayHead(work / "h", log_file=work / "head.log")
    executor = ExecutorProcess("bench", "", log_file=work / "executor.log", insecure_local_admin=True)
    agents: list[subprocess.Popen[bytes]] = []
    plane: ControlPlane | None = None
    result: dict[str, object] = {"replicas": args.replicas, "rounds": args.rounds, "nodes": nodes}
    try:
        await etcd.start()
        await asyncio.to_thread(head.start)
        executor.ray_address = head.address
        executor.spawn()
        await executor.wait_ready()
        address = f"127.0.0.1:{free_port()}"
        config = ControlPlaneConfig(
            address=address, etcd_endpoint=etcd.endpoint, tenants_file=tenants,
            executors={"bench": executor.address}, sim_start_delay_s=0.0,
            insecure_local_admin=True,  # plaintext loopback: the agents and this bench are the admin
        )  # fmt: skip
        plane = ControlPlane(config, metrics=ControlPlaneMetrics())
        await plane.start()
        for i in range(nodes):
            node = f"bench-h100-{i}"
            log = (work / f"agent-{node}.log").open("ab")
            agents.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "controlplane.cli.main",
                        "agent",
                        "--backend",
                        "simulated",
                        "--node",
                        node,
                        "--fleet",
                        str(fleet),
                        "--address",
                        address,
                        "--ray-address",
                        head.address,
                        "--ray-temp-dir",
                        str(work / node),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        client = RemoteExecutor("bench", executor.address)
        while len([n for n in (await client.inventory()).nodes if n.alive and n.node_id]) < nodes:
            await asyncio.sleep(0.5)
        assert plane.registry is not None
        while sum(v.state.value == "ready" for v in plane.registry.nodes()) < nodes:
            await asyncio.sleep(0.2)
        launches = raw_launches(args.replicas, nodes, work)
        tps = per_replica_tps()
        raw, cp = [], []
        async with grpc.aio.insecure_channel(address) as channel:
            stub = capacity_pb2_grpc.CapacityServiceStub(channel)
            for round_ in range(args.rounds):
                done = await asyncio.to_thread(
                    subprocess.run, [sys.executable, "-c", RAW_DRIVER, head.address, str(launches)],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                )  # fmt: skip
                raw.append(json.loads(done.stdout.strip().splitlines()[-1])["raw_ray_s"])
                cp.append(await control_plane_round(stub, args.replicas, tps, client, f"bench-{round_}"))
        await client.close()
        result.update(
            control_plane_s=round(statistics.median(cp), 3),
            raw_ray_s=round(statistics.median(raw), 3),
            ratio=round(statistics.median(cp) / statistics.median(raw), 3),
            control_plane_rounds_s=[round(x, 3) for x in cp],
            raw_ray_rounds_s=[round(x, 3) for x in raw],
            reconcile_interval_s=config.reconcile_interval_s,
        )
    finally:
        for proc in agents:
            proc.terminate()
        for proc in agents:
            proc.wait()
        if plane is not None:
            await plane.stop()
        executor.stop()
        head.stop(5.0)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
