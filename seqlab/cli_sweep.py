"""``seqlab sweep``: Optuna over the search space a config's ``sweep:`` section declares
(:mod:`pipeline_core.sweep_space`), one MLflow child run per trial under a sweep parent,
trials chosen by their validation figure only (:mod:`flows.sweep`).

Everything a user can get wrong (no config, ``--trials`` below 1, a path that names
nothing, a range the config refuses) is one ``error:`` line before any run is recorded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from pipeline_core.sweep_record import SweepResult


def print_trials(result: SweepResult) -> None:
    """The trials as a table (number, values, figure, state), then the best one."""
    from rich.console import Console
    from rich.table import Table

    from pipeline_core.sweep_record import format_value

    paths = list(result.outcomes[0].values) if result.outcomes else []
    table = Table(title=f"sweep — {result.experiment}")
    leaves = [p.rsplit(".", 1)[-1] for p in paths]  # lr, hidden_size: unless two clash
    names = leaves if len(set(leaves)) == len(leaves) else paths
    for heading in ["trial", *names, result.metric, "epochs", "state"]:
        table.add_column(heading, justify="left" if heading == "state" else "right")
    best = result.best
    for o in result.outcomes:
        figure = f"{o.value:.4f}" if o.value is not None else "-"
        state = o.state.lower() + (f": {o.error[:50]}" if o.error else "")
        mark = " *" if best is not None and o.number == best.number else ""
        table.add_row(
            f"{o.number}{mark}",
            *(format_value(o.values.get(p)) for p in paths),
            figure,
            str(o.epochs),
            state,
        )
    console = Console()
    console.print(table)
    if best is not None:
        values = ", ".join(f"{k}={format_value(v)}" for k, v in best.values.items())
        console.print(
            f"best: trial {best.number}, {result.metric} {best.value:.4f} ({values}); "
            f"chosen on the validation split, the test split was not scored",
            soft_wrap=True,
        )
    console.print(f"MLflow parent run: {result.parent_run_id}")
    console.print(f"tracking URI: {result.tracking_uri}")


def sweep_command(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML run config with a sweep: section.")
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="Trials Optuna runs.")] = None,
    runner: Annotated[
        str | None, typer.Option("--runner", help="sequential (default) or dask.")
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(
            "--dask-address", help="A Dask scheduler on this host (default: a LocalCluster)."
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlruns.db)."
        ),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any config key, e.g. --set train.epochs=4 (repeatable)."),
    ] = None,
) -> None:
    """Search the config's sweep space with Optuna: trials pruned on their per-epoch
    validation figure, the best chosen on the validation split; print every trial."""
    from pipeline_core.errors import ConfigError
    from seqlab.cli import (
        bound_network,
        build_run_config,
        console_warnings,
        preflight,
        probe_tracking,
        quiet_services,
    )

    if config is None:
        raise ConfigError("--config: give the YAML config whose sweep: section names the space")
    if trials is None or trials < 1:
        raise ConfigError(f"--trials: give how many trials, at least 1 (got {trials})")
    quiet_services()
    bound_network()
    flags = {"execution.runner": runner, "execution.dask_address": dask_address}
    run_config = build_run_config(
        config, None, None, None, None, None, tracking_uri, None, None, sets, flags
    )
    from pipeline_core.sweep_space import check_sweep

    check_sweep(run_config)  # paths, ranges and the one model: before anything starts
    probe_tracking(run_config.tracking.tracking_uri)
    console_warnings()
    preflight(run_config)
    from flows.console import hide_user_error_tracebacks
    from flows.runners import check_execution
    from flows.server import prefect_api
    from flows.sweep import check_runner, run_sweep
    from pipeline_core.interrupt import handle_signals

    check_runner(run_config)  # threads, a scheduler on another host: refused here
    check_execution(run_config)
    hide_user_error_tracebacks()
    with handle_signals(), prefect_api():
        result = run_sweep(run_config, trials)
    print_trials(result)
    if result.best is None:
        print("error: no trial completed (the table says why)", file=sys.stderr)
        raise SystemExit(1)


def register(app: typer.Typer) -> None:
    """Add ``seqlab sweep`` to ``app``."""
    app.command("sweep")(sweep_command)
