"""``seqlab runs``: recent comparisons and sweeps, their status and best model or
trial; ``--close`` ends a stale one (left RUNNING by a killed process) as KILLED.

A comparison can also be continued instead: ``seqlab run --resume RUN_ID``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from pipeline_core.runs import Comparison
    from pipeline_core.tracking import Tracker


def _tracker(tracking_uri: str | None) -> tuple[str, Tracker | None]:
    """The resolved URI, and a Tracker (None for a SQLite store that does not exist:
    listing it must not create it)."""
    from seqlab.cli import bound_network, probe_tracking, quiet_services

    quiet_services()
    bound_network()
    from pipeline_core.runs import store_missing
    from pipeline_core.tracking import get_tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if store_missing(uri):
        return uri, None
    probe_tracking(uri)
    return uri, get_tracker(uri)


def _figure(row: Comparison) -> str:
    """The best figure with its metric's name: a sweep's is a validation figure, a
    comparison's a test one, and one column holds both."""
    if row.best_value is None:
        return "-"
    return f"{row.best_metric or '?'} {row.best_value:.4f}"


def _best(row: Comparison) -> str:
    if row.kind == "sweep":
        return "-" if row.best_trial is None else f"trial {row.best_trial}"
    return row.best_model or "-"


def runs_command(
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlruns.db)."
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="How many comparisons and sweeps, newest first.")
    ] = 20,
    close: Annotated[
        str | None,
        typer.Option(
            "--close",
            metavar="RUN_ID",
            help="Mark a stale comparison or sweep (its process is gone) and its running "
            "models or trials KILLED.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Recent comparisons and sweeps: parent run, kind, start, status, models (trials)
    finished, best model (trial) and its figure, experiment.

    A RUNNING one whose process is gone is shown as stale; close it with
    ``--close RUN_ID``, or continue a comparison with ``seqlab run --resume RUN_ID``."""
    from pipeline_core.errors import ConfigError
    from pipeline_core.runs import close_run, list_comparisons

    uri, tracker = _tracker(tracking_uri)
    if close is not None:
        if tracker is None:
            raise ConfigError(f"--close: no MLflow run with id {close!r} in {uri} (no store)")
        kind, closed = close_run(tracker, close)
        if as_json:
            print(json.dumps({"closed": close, "kind": kind, "model_runs_closed": closed}))
            return
        if kind == "sweep":  # a sweep cannot be resumed
            print(f"closed sweep {close}: it and {len(closed)} running trial run(s) are KILLED")
            return
        print(
            f"closed comparison {close}: it and {len(closed)} running model run(s) are "
            f"KILLED; `seqlab run --resume {close}` would continue it"
        )
        return
    rows = list_comparisons(tracker, limit) if tracker is not None else []
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    if not rows:
        print(f"no comparisons recorded in {uri}, and no sweeps")
        return
    print(f"recent comparisons and sweeps in {uri} (newest first)")
    print(format_table(rows))


COLUMNS = ("parent run", "kind", "started", "status", "models", "best", "best figure", "experiment")


def format_table(rows: list[Comparison]) -> str:
    """Plain aligned columns (like ``ps``): whole run ids to copy, no wrapping."""
    cells = [
        (
            row.run_id,
            row.kind,
            row.start_time[:16].replace("T", " "),
            row.status,
            f"{row.models_finished}/{row.models_total}",
            _best(row),
            _figure(row),
            row.experiment,
        )
        for row in rows
    ]
    widths = [max(len(str(c[i])) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [COLUMNS, *cells]
    ]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add ``seqlab runs`` to ``app``."""
    app.command("runs")(runs_command)
