"""``tokenfab simulate``: replay a trace against autoscaling policies and the oracle, on a simulated
fleet (the same runs as ``bench/autoscaler.py``, :mod:`controlplane.simulate.compare`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from controlplane.simulate.defaults import POLICY_NAMES, Defaults

_D = Defaults()


def simulate_command(
    trace: Annotated[
        Path,
        typer.Option(
            "--trace", help="Azure LLM inference 2023 CSV (TIMESTAMP, ContextTokens, GeneratedTokens)."
        ),
    ],
    policy: Annotated[
        str, typer.Option("--policy", help=f"Comma-separated, or all: {', '.join(POLICY_NAMES)}.")
    ] = "tokenfab",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    plot_dir: Annotated[
        Path | None,
        typer.Option("--plot", help="Directory: one PNG per policy (demand, replicas, attainment)."),
    ] = None,
    warmup_until: Annotated[
        str | None,
        typer.Option(
            "--warmup-until",
            help="Score only from this time (86400, 24h, 1d); without it the trace plays twice, "
            "the second pass scored.",
        ),
    ] = None,
    oracle: Annotated[
        bool, typer.Option(help="Also run the clairvoyant oracle and report vs_oracle.")
    ] = True,
    model: Annotated[str, typer.Option(help="Catalog model served.")] = _D.model,
    fleet: Annotated[
        str, typer.Option(help="TYPE:NODESxDEVICES[,...]; TYPE:autoxDEVICES sizes from the trace.")
    ] = _D.fleet,
    ttft: Annotated[float, typer.Option("--ttft", help="TTFT target per request, seconds.")] = _D.ttft_s,
    ttft_prompt_rate: Annotated[
        float,
        typer.Option(help="Length-aware TTFT: the target is --ttft + prompt tokens / this rate (0: off)."),
    ] = 0.0,
    tpot: Annotated[float, typer.Option("--tpot", help="TPOT target per request, seconds.")] = _D.tpot_s,
    cold_start: Annotated[
        float, typer.Option(help="Seconds from asking for a replica to Ready.")
    ] = _D.cold_start_s,
) -> None:
    """Replay a request trace against autoscaling policies (discrete-event, simulated clock)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from controlplane.catalog import load_catalog
    from controlplane.simulate.compare import Setup, compare, parse_duration
    from controlplane.simulate.trace import TraceError, load_trace

    err = Console(stderr=True)
    if output not in ("table", "json"):
        err.print(f"[red]error:[/red] --output must be table or json, got {output!r}")
        raise typer.Exit(2)
    names = list(POLICY_NAMES) if policy == "all" else [p for p in policy.split(",") if p]
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        err.print(
            f"[red]error:[/red] unknown policy {', '.join(repr(n) for n in unknown) or repr(policy)} "
            f"(known: {', '.join(POLICY_NAMES)}, or all)"
        )
        raise typer.Exit(2)
    setup = Setup(
        model=model,
        fleet=fleet,
        ttft_s=ttft,
        tpot_s=tpot,
        cold_start_s=cold_start,
        ttft_prompt_tokens_per_s=ttft_prompt_rate,
    )
    try:
        if warmup_until is not None:
            setup = replace(setup, warmup_until_s=parse_duration(warmup_until))
        base = load_trace(trace)
        with Progress(
            TextColumn("simulating {task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as progress:
            tasks: dict[str, object] = {}

            def advance(name: str, now: float, end: float) -> None:
                if name not in tasks:
                    tasks[name] = progress.add_task(f"{name} on {base.name}", total=end)
                progress.update(tasks[name], completed=min(now, end))  # type: ignore[arg-type]

            result = compare(
                base, load_catalog(), names, setup, plot_dir=plot_dir, progress=advance, oracle=oracle
            )
    except (TraceError, ValueError, KeyError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    report = result.report()
    report["trace"] = str(trace)
    if plot_dir is not None:
        report["plots"] = str(plot_dir)
    if output == "json":
        typer.echo(json.dumps(report, indent=2))
        return
    columns = (
        "slo_attainment",
        "infeasible",
        "accelerator_hours",
        "vs_oracle",
        "fleet_capped_s",
        "scaling_actions",
        "max_replicas",
    )
    table = Table(title=f"{base.name}: {report['requests']} scored requests")
    table.add_column("policy")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in report["policies"].items():
        table.add_row(name, *(str(row[c]) for c in columns))
    Console().print(table)
    if plot_dir is not None:
        Console().print(f"plots written to {plot_dir}")
