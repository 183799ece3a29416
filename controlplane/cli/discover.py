"""``tokenfab agent discover``: print what this node's agent would register, then exit.

An operator runs it on a node before the node joins: it uses the same backend selection as
``tokenfab agent`` (``--backend auto`` tries NVIDIA, Ascend, MetaX, Biren in turn) and prints the
backend, the node's accelerator model and every device with its memory and health, including
devices the agent would report unhealthy and why. Nothing is sent anywhere.

Exit codes: 0 devices found (some may be unhealthy: read the health column), 2 bad options,
3 no devices (no vendor tool, or a tool that is present but printed nothing readable; the
message says which).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer


class DiscoverOutput(StrEnum):
    table = "table"
    json = "json"


def discover(*, backend: str, node: str | None, fleet: Path | None, biren_model: str) -> dict[str, Any]:
    """The report for ``backend`` (pure glue over the agent's own build and discovery)."""
    from agents.discovery.report import node_report
    from agents.main import AgentOptions, build

    options = AgentOptions(backend=backend, node_id=node, fleet=fleet, biren_model=biren_model)
    real, _identity, devices = build(options)
    return node_report(real, devices or real.discover())


def _table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['backend']}: {report['accelerator']}")
    for column in ("index", "uuid", "model", "memory MiB", "health", "reason"):
        table.add_column(column)
    for d in report["devices"]:
        table.add_row(str(d["index"]), d["uuid"], d["model"], str(d["memory_mib"]), d["health"], d["reason"])
    Console().print(table)


def discover_command(
    backend: Annotated[str, typer.Option(help="auto|nvidia|ascend|metax|biren|simulated")] = "auto",
    output: Annotated[DiscoverOutput, typer.Option("--output", "-o")] = DiscoverOutput.table,
    node: Annotated[str | None, typer.Option(help="simulated: the fleet node to become")] = None,
    fleet: Annotated[Path | None, typer.Option(help="simulated fleet YAML (default: packaged fleet)")] = None,
    biren_model: Annotated[str, typer.Option(help="model when counting /dev/biren cards")] = "BR104",
) -> None:
    """Print what this node's agent would register (backend, accelerator, devices) and exit."""
    from agents.discovery import NotPresent, ToolFailed
    from agents.discovery.simulated import FleetFileError

    try:
        report = discover(backend=backend, node=node, fleet=fleet, biren_model=biren_model)
    except (ValueError, FleetFileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (NotPresent, ToolFailed) as exc:
        typer.echo(f"error: no devices: {exc}", err=True)
        raise typer.Exit(3) from None
    if output is DiscoverOutput.json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _table(report)
