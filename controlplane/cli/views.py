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


REPLICA_STYLE = {
    "Ready": "green",
    "Starting": "cyan",
    "Pending": "cyan",
    "Draining": "magenta",
    "Failed": "red",
}
PHASE_STYLE = {
    "Ready": "green",
    "Placing": "cyan",
    "Pending": "yellow",
    "Degraded": "yellow",
    "Unsatisfiable": "red",
}


def _styled(value: str, styles: dict[str, str]) -> str:
    style = styles.get(value, "")
    return f"[{style}]{value}[/{style}]" if style else value


def replicas_table(replicas: list[dict[str, Any]], *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column, justify in (
        ("REPLICA", "left"), ("MODEL", "left"), ("VENDOR", "left"), ("ACCELERATOR", "left"),
        ("NODE", "left"), ("DEVICES", "left"), ("STATE", "left"), ("PRED TOK/S", "right"),
        ("OUT TOK/S", "right"), ("RUN/WAIT", "right"), ("KV", "right"), ("TPOT p95", "right"),
    ):  # fmt: skip
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in replicas:
        ready = r["state"] == "Ready"
        table.add_row(
            r["id"], r["model"], r["vendor"], r["accelerator"], r["node"],
            ",".join(str(d) for d in r["devices"]), _styled(r["state"], REPLICA_STYLE),
            f"{r['predicted_output_tokens_per_second']:,.0f}",
            f"{r['output_tokens_per_second']:,.0f}" if ready else "-",
            f"{r['running']}/{r['waiting']}" if ready else "-",
            f"{r['kv_cache_usage']:.0%}" if ready else "-",
            f"{r['tpot_p95_s'] * 1000:.0f} ms" if ready and r["tpot_p95_s"] else "-",
        )  # fmt: skip
    return table


def target_text(summary: dict[str, Any]) -> str:
    """``5,000`` or, autoscaled away from the reserved target, ``5,000 -> 7,100``."""
    reserved = summary["target_output_tokens_per_second"]
    scaled = summary.get("autoscaled_target_output_tokens_per_second") or reserved
    return f"{reserved:,.0f}" + (f" -> {scaled:,.0f}" if abs(scaled - reserved) >= 0.5 else "")


def requests_table(requests: list[dict[str, Any]], *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("REQUEST", "MODEL", "TARGET TOK/S", "READY TOK/S", "REPLICAS", "PHASE", "REASON"):
        table.add_column(column, no_wrap=column != "REASON")
    for s in requests:
        reason = s["conditions"][0].get("message", "") if s["conditions"] else ""
        kinds = ", ".join(sorted({r["accelerator"] for r in s["replicas"]}))
        table.add_row(
            s["id"], s["model"], target_text(s), f"{s['ready_output_tokens_per_second']:,.0f}",
            f"{len(s['replicas'])} ({kinds})",
            _styled(s["phase"], PHASE_STYLE), reason[:70],
        )  # fmt: skip
    return table
