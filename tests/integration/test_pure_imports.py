"""Importing the pure core loads no I/O client: checked in a fresh interpreter per module.

A fresh interpreter is the only honest check: in the test process every module is loaded
already, and forgetting modules from ``sys.modules`` in-process cannot prove that an import
chain does not reach the store. This is the run-time twin of the import-linter contract "The
decision core does no I/O" (pyproject.toml), which sees only explicit imports and not what a
package's ``__init__`` loads when one of its modules is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

IO_ROOTS = ("aetcd", "grpc", "grpc_health", "aiohttp", "ray")
IO_MODULES = ("controlplane.store", "controlplane.capacity.manager", "controlplane.executor.service")

PURE = [
    "controlplane.domain",
    "controlplane.catalog",
    "controlplane.scheduler",
    "controlplane.scheduler.demand",
    "controlplane.scheduler.reasons",
    "controlplane.reconcile.decide",
    "controlplane.reconcile.rules",
    "controlplane.reconcile.world",
    "controlplane.reconcile.learning",
    "controlplane.reconcile.status",
    "controlplane.reconcile.nodes",
    "controlplane.reconcile.passes",
    "controlplane.reconcile.scaling",
    "controlplane.reconcile.sizing",
    "controlplane.domain.tenants",
    "controlplane.autoscale",
    "controlplane.simulate",
]
# The node state rules: controlplane/fleet/__init__.py no longer re-exports the NodeRegistry, so
# importing them loads no store (they were strict xfails while it did).
FLEET_RULES = ["controlplane.fleet", "controlplane.fleet.states", "controlplane.fleet.types"]

PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(sys.modules)))
"""


def loaded_io(module: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    loaded: list[str] = json.loads(out)
    return [
        m
        for m in loaded
        if m.split(".")[0] in IO_ROOTS or any(m == io or m.startswith(io + ".") for io in IO_MODULES)
    ]


@pytest.mark.parametrize("module", PURE)
def test_importing_the_pure_core_loads_no_io_client(module: str) -> None:
    assert loaded_io(module) == []


@pytest.mark.parametrize("module", FLEET_RULES)
def test_fleet_state_rules_load_no_io_client(module: str) -> None:
    assert loaded_io(module) == []


def test_the_probe_sees_an_io_client_when_one_is_loaded() -> None:
    # the check above can fail: a module that reaches the store is reported
    assert "controlplane.store" in loaded_io("controlplane.capacity.manager")
    assert any(m.startswith("aetcd") for m in loaded_io("controlplane.capacity.manager"))
