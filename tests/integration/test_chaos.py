"""Chaos as a test: ``bench/chaos.py`` with a few iterations per fault (three real control-plane
processes, a real three-member etcd cluster, Ray, executor and agents; the fault at random
moments while requests are created and cancelled). The recorded figures use 20 iterations per
fault (docs/benchmarks.md); here the invariants must hold on every iteration: nothing
acknowledged is lost, nothing is left duplicated, and every iteration converges (within the
script's own 60 s limit per iteration).

- leader-kill: kill -9 of the leader;
- leader-pause: SIGSTOP of the leader past its lease, then SIGCONT (fenced writes);
- etcd-member: kill -9 of an etcd member;
- compaction: etcd's history compacted while every instance's member is down (followers re-list);
- agent-partition: an agent's link to its control plane goes silent for seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(420)


@pytest.mark.parametrize(
    ("fault", "iterations"),
    [("leader-kill", 3), ("leader-pause", 2), ("etcd-member", 2), ("compaction", 2), ("agent-partition", 2)],
)
def test_no_fault_loses_or_duplicates_anything(fault: str, iterations: int) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--fault", fault,
         "--iterations", str(iterations), "--seed", "11"],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["fault"] == fault and result["iterations"] == iterations
    assert sum(result["hit"].values()) == iterations, result  # the fault was injected every time
    assert result["lost_requests"] == 0, result
    assert result["duplicate_replicas"] == 0, result
    assert result["not_converged"] == 0, result
