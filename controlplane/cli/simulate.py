"""``tokenfab simulate``: replay a trace against a policy on a simulated fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from controlplane.simulate.run import POLICY_NAMES, Defaults

_D = Defaults()


def simulate_command(
    trace: Annotated[
        Path,
        typer.Option(
            "--trace", help="Azure LLM inference 2023 CSV (TIMESTAMP, ContextTokens, GeneratedTokens)."
        ),
    ],
    policy: Annotated[str, typer.Option("--policy", help=f"One of: {', '.join(POLICY_NAMES)}.")] = "tokenfab",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    plot_file: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of demand, capacity and replicas.")
    ] = None,
    model: Annotated[str, typer.Option(help="Catalog model served.")] = _D.model,
    fleet: Annotated[str, typer.Option(help="TYPE:NODESxDEVICES[,...], e.g. 910C:8x8.")] = _D.fleet,
    ttft: Annotated[float, typer.Option("--ttft", help="TTFT target per request, seconds.")] = _D.ttft_s,
    tpot: Annotated[float, typer.Option("--tpot", help="TPOT target per request, seconds.")] = _D.tpot_s,
    cold_start: Annotated[
        float, typer.Option(help="Seconds from asking for a replica to Ready.")
    ] = _D.cold_start_s,
    time_scale: Annotated[float, typer.Option(help="Stretch time: 0.5 replays twice as fast.")] = 1.0,
    loops: Annotated[int, typer.Option(help="Replay the trace this many times back to back.")] = 1,
    warmup: Annotated[
        bool, typer.Option(help="Replay once unscored first, so every policy starts warm.")
    ] = True,
) -> None:
    """Replay a request trace against an autoscaling policy (discrete-event, simulated clock)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from controlplane.catalog import load_catalog
    from controlplane.simulate.run import make_policy, scenario_for
    from controlplane.simulate.sim import Simulator
    from controlplane.simulate.trace import TraceError, load_trace

    err = Console(stderr=True)
    if output not in ("table", "json"):
        err.print(f"[red]error:[/red] --output must be table or json, got {output!r}")
        raise typer.Exit(2)
    catalog = load_catalog()
    try:
        base = load_trace(trace)
        replay = base.replay(time_scale=time_scale, loops=loops)
        scenario = scenario_for(
            replay, catalog, model=model, fleet=fleet, ttft_s=ttft, tpot_s=tpot, cold_start_s=cold_start
        )
        simulator = Simulator(scenario, catalog)
        chosen = make_policy(policy, simulator, replay)
    except (TraceError, ValueError, KeyError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    scored_from = 0.0
    if warmup:
        scored_from = replay.duration_s + 1.0
        replay = replay.replay(loops=2)
    with Progress(
        TextColumn("simulating {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task(f"{policy} on {base.name}", total=replay.duration_s)
        result = simulator.run(
            replay,
            chosen,
            progress=lambda now, end: progress.update(task, completed=min(now, end)),
            scored_from=scored_from,
        )
    summary = result.summary()
    summary["trace"] = str(trace)
    summary["slo"] = {
        "ttft_s": ttft,
        "tpot_s": tpot,
        "model": model,
        "fleet": fleet,
        "cold_start_s": cold_start,
    }
    if plot_file is not None:
        from controlplane.simulate.plot import plot

        plot(
            result,
            plot_file,
            slo=f"{model} on {fleet}; SLO per request TTFT <= {ttft:g}s and TPOT <= {tpot * 1000:g}ms",
        )
        summary["plot"] = str(plot_file)
    if output == "json":
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{policy} on {base.name}", show_header=False)
    for key in (
        "requests",
        "slo_attainment",
        "ttft_attainment",
        "tpot_attainment",
        "accelerator_hours",
        "cost",
        "scaling_actions",
        "max_replicas",
        "simulated_s_per_wall_s",
    ):
        table.add_row(key, str(summary[key]))
    Console().print(table)
    if plot_file is not None:
        Console().print(f"plot written to {plot_file}")
