"""Shared pytest configuration: the ``--run-slow`` switch, the fixture paths, the tiers and the
parallel schedule of `make test`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

# As in the `tokenfab` command (controlplane/cli/__init__.py, which says why): tests fork etcd, Ray
# and agents with a preexec_fn while gRPC threads run, and gRPC's fork handlers then crash the
# half-made child now and then (seen: etcd "exited with -11 during start" under `make test`).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
assert "grpc" not in sys.modules, "gRPC was imported before its fork support was switched off"

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


# A test's tier is the folder it lives in: tests/unit is pure (make test-unit), everything else uses real
# processes or engines. The marker follows the path so that `-m unit` / `-m "not integration"` select
# the same tests as the folders do (a module-level pytestmark in a conftest would have no effect).
TIERS = {"unit": "unit", "integration": "integration", "helm": "integration"}


# `make test` runs in parallel (pytest-xdist, `--dist loadscope`, the scheduler below). A unit of work
# goes to one worker whole: a module, so that its module-scoped fixtures start once, or a package
# whose tests share one world (SHARED_WORLDS), so that the world starts once per run. Units go out in
# this order, the long ones first, so that none of them runs alone at the end; of the three longest,
# the Ray world last: its drain test restarts a raylet, which queued behind `up`'s ten at the start
# gate when the Ray world went first (measured, docs/benchmarks.md "Test suite").
SHARED_WORLDS = ("integration/rayworld",)  # its conftest's package-scoped ray_world
LONGEST_FIRST = (
    "integration/test_up_cli.py",
    "integration/test_chaos.py",
    "integration/rayworld",
    "integration/test_gateway.py",
    "integration/test_up_quarantine.py",
    "integration/test_fleet_lifecycle.py",
    "integration/test_embedded_children.py",
    "helm/test_chart.py",
    "integration/test_election.py",
    "integration/test_etcd_cluster.py",
)


def work_unit(nodeid: str) -> str:
    """The unit of work of a test: its shared world's package, or its module (a path under tests/)."""
    path = nodeid.split("::", 1)[0].removeprefix("tests/")
    for world in SHARED_WORLDS:
        if path.startswith(f"{world}/"):
            return world
    return path


@pytest.hookimpl(optionalhook=True)  # `pytest -p no:xdist` still works
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with our units of work. (pytest-xdist's own ``xdist_group`` marks do
    nothing under pytest 9.2: xdist 3.8 renames ``item._nodeid``, which pytest no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnits(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnits(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        parts = Path(str(item.path)).relative_to(tests_dir).parts
        tier = TIERS.get(parts[0]) if len(parts) > 1 else None
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))  # stable: order within kept
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
