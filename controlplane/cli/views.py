"""rich renderings of the fleet (table for ``tokenfab nodes``, live view for ``tokenfab up``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from controlplane.cli.client import humanize_until


def console() -> Console:
    """A console that does not squeeze tables to 80 columns when output goes to a pipe or file."""
    out = Console()
    if not out.is_terminal:
        out = Console(width=max(out.width, 200))
    return out


STATE_STYLE = {
    "ready": "green",
    "registering": "cyan",
    "suspect": "yellow",
    "lost": "red",
    "cordoned": "magenta",
    "draining": "magenta",
}


def nodes_table(nodes: list[dict[str, Any]], *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column, justify in (
        ("NODE", "left"),
        ("CLUSTER", "left"),
        ("VENDOR", "left"),
        ("ACCELERATOR", "left"),
        ("DEVICES", "right"),
        ("MEM/DEV", "right"),
        ("STATE", "left"),
        ("LEASE", "right"),
        ("PRICE/H", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=column in ("NODE", "CLUSTER", "LEASE"))  # type: ignore[arg-type]
    for node in nodes:
        style = STATE_STYLE.get(node["state"], "")
        devices = str(node["device_count"])
        if node["unhealthy_devices"]:
            devices += f" [red]({len(node['unhealthy_devices'])} bad)[/red]"
        memory = node["memory_gib"]
        price = node["price_per_accelerator_hour"]
        lease = humanize_until(node["lease_expires_at"])
        if node["preemptible"]:
            lease += " spot"
        table.add_row(
            node["id"],
            node["cluster"],
            node["vendor"],
            node["accelerator"],
            devices,
            f"{memory:g} GiB" if isinstance(memory, int | float) else "/".join(f"{m:g}" for m in memory),
            f"[{style}]{node['state']}[/{style}]" if style else node["state"],
            lease,
            f"{price:.2f}" if price is not None else "-",
        )
    return table


def state_counts(nodes: list[dict[str, Any]]) -> str:
    counts = Counter(n["state"] for n in nodes)
    vendors = Counter(n["vendor"] for n in nodes if n["state"] == "ready")
    parts = [f"{counts[s]} {s}" for s in STATE_STYLE if counts[s]]
    ready_by_vendor = ", ".join(f"{v}: {c}" for v, c in sorted(vendors.items()))
    return f"{len(nodes)} nodes: {', '.join(parts) or 'none'}" + (
        f"  (ready by vendor: {ready_by_vendor})" if ready_by_vendor else ""
    )
