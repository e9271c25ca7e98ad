"""``seqlab schedule --cron EXPR | --interval SECONDS [run options]``: run the same
comparison as ``seqlab run`` again and again, on a schedule, from this one process.

The run options are resolved exactly as ``seqlab run`` resolves them
(:func:`seqlab.cli.build_run_config`), then checked the same way before anything is
served: a bad config, an unreadable source or an unknown plugin is one line and exit 2.
The resolved config (tracking URI made absolute) becomes the parameters of a Prefect
deployment of :func:`flows.scheduled.scheduled_compare`, served with ``flow.serve``:
each scheduled run is a flow run in a subprocess of this one, one at a time.

The schedule lives in a Prefect API: ``PREFECT_API_URL`` when set (it must answer), else
a temporary server of this process (:class:`flows.server.TemporaryServer`, with
Prefect's scheduler service, which an ephemeral server lacks), in which case the
schedule and the record of its runs end with the process. Ctrl-C or SIGTERM stops
serving (the schedule is paused on a lasting server) and exits 0.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from pipeline_core.errors import ConfigError

DEFAULT_NAME = "seqlab-scheduled"
CRON_HELP = (
    "A cron expression, evaluated in UTC: minute hour day-of-month month day-of-week, "
    'e.g. "0 3 * * *" (03:00 every day).'
)


def _croniter_reason(expr: str) -> str | None:
    """croniter's own words on why ``expr`` is not a cron expression, if it has any."""
    try:
        from prefect._vendor.croniter import croniter

        croniter(expr)
    except Exception as err:  # the vendored module's errors are not public API
        return " ".join(str(err).split()).rstrip(".") or None
    return None


def check_cron(expr: str) -> str:
    """``expr`` if Prefect accepts it as a cron schedule, else a one-line ConfigError."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=expr)
    except ValidationError as err:
        detail = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
        reason = _croniter_reason(expr) or detail
        raise ConfigError(
            f"--cron: {expr!r} is not a valid cron expression ({reason}); give five fields, "
            'minute hour day-of-month month day-of-week, e.g. "0 3 * * *" for 03:00 UTC daily'
        ) from None
    return expr


def schedule_kwargs(cron: str | None, interval: float | None) -> dict[str, Any]:
    """``cron=`` or ``interval=`` for ``flow.serve``: exactly one of the two options."""
    if cron is not None and interval is not None:
        raise ConfigError("--cron and --interval: give one of them, not both")
    if cron is None and interval is None:
        raise ConfigError(
            'give a schedule: --cron EXPRESSION (e.g. "0 3 * * *") or --interval SECONDS'
        )
    if interval is not None:
        if not (math.isfinite(interval) and interval > 0):
            raise ConfigError(f"--interval: must be a number of seconds > 0 (got {interval})")
        return {"interval": interval}
    assert cron is not None
    return {"cron": check_cron(cron)}


def describe_schedule(when: dict[str, Any]) -> str:
    if "cron" in when:
        return f"on cron {when['cron']!r} (UTC)"
    return f"every {when['interval']:g} s"


def absolute_tracking_uri(uri: str | None) -> str:
    """The run's MLflow URI with a relative SQLite path made absolute, so that every
    scheduled run writes the store the command was started against."""
    from pipeline_core.tracking import resolve_tracking_uri

    resolved = resolve_tracking_uri(uri)
    prefix = "sqlite:///"
    if resolved.startswith(prefix):
        path = Path(resolved.removeprefix(prefix))
        if not path.is_absolute():
            return f"{prefix}{path.resolve()}"
    return resolved


@contextlib.contextmanager
def scheduling_api() -> Iterator[tuple[str, bool]]:
    """The Prefect API to serve against and whether it is a temporary one: the
    configured API once it answers, else a temporary server of this process with
    Prefect's scheduler running (:func:`flows.server.prefect_api`)."""
    from flows.server import configured_api_url, prefect_api

    temporary = not configured_api_url()
    with prefect_api(services=True) as url:
        yield url, temporary


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM stops serving the way Ctrl-C does: through the SIGINT handler of the
    moment (asyncio's, while Prefect serves: it cancels the serving task, which pauses
    the schedule and stops the runs), else as a KeyboardInterrupt (also when SIGINT is
    ignored, as for ``cmd &`` in a script). The previous handler comes back after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint):
            on_sigint(signal.SIGINT, frame)
            return
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def schedule_command(
    cron: str | None = typer.Option(None, "--cron", help=CRON_HELP),
    interval: float | None = typer.Option(
        None, "--interval", help="Seconds between runs (instead of --cron)."
    ),
    name: str = typer.Option(DEFAULT_NAME, "--name", help="The Prefect deployment's name."),
    config: Path | None = typer.Option(None, "--config", help="YAML run config."),
    data: str | None = typer.Option(
        None, "--data", help="File, directory, glob, URL, gutenberg:<id> or synthetic:<name>."
    ),
    clean: str | None = typer.Option(None, "--clean", help="Cleaning preset: none, seed, text."),
    level: str | None = typer.Option(None, "--level", help="Tokens: char or word."),
    models: str | None = typer.Option(None, "--models", help="Plugins, comma separated."),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs."),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlruns.db)."
    ),
    errors: str | None = typer.Option(
        None, "--errors", help="Undecodable bytes: strict (fail) or ignore (the tutorial's)."
    ),
    task: str | None = typer.Option(None, "--task", help="The task (default: next-token)."),
    sets: list[str] = typer.Option(
        [], "--set", help="Any config key, e.g. --set train.bptt=stateful (repeatable)."
    ),
    no_register: bool = typer.Option(
        False, "--no-register", help="Do not register the best model in MLflow's registry."
    ),
) -> None:
    """Serve the comparison of ``seqlab run`` on a cron or interval schedule, from this
    process, until Ctrl-C.

    Needs a Prefect API: $PREFECT_API_URL, else a temporary server of this process
    (the schedule then ends with it)."""
    from seqlab.cli import (
        bound_network,
        build_run_config,
        console_warnings,
        preflight,
        probe_tracking,
        quiet_services,
    )

    when = schedule_kwargs(cron, interval)
    if not name.strip():
        raise ConfigError("--name: give the deployment a name")
    quiet_services()
    bound_network()
    flags = {"registry.enabled": False if no_register else None}
    run_config = build_run_config(
        config, data, clean, level, models, epochs, tracking_uri, errors, task, sets, flags
    )
    run_config.tracking.tracking_uri = absolute_tracking_uri(run_config.tracking.tracking_uri)
    probe_tracking(run_config.tracking.tracking_uri)
    console_warnings()
    preflight(run_config)
    from pipeline_core.experiment import make_task, resolve_models

    # unknown tasks, plugins and bad configs fail before anything is served
    resolve_models(run_config.models, make_task(run_config), run_config.train)
    from prefect.types.entrypoint import EntrypointType

    from flows.scheduled import FLOW_NAME, scheduled_compare

    parameters = {"overrides": run_config.model_dump(mode="json")}
    labels = ", ".join(m.label for m in run_config.models)
    with sigterm_as_sigint(), scheduling_api() as (api_url, temporary):
        print(f"serving {FLOW_NAME}/{name} {describe_schedule(when)}: {labels} on ", end="")
        print(f"{run_config.data.source}, tracking URI {run_config.tracking.tracking_uri}")
        if temporary:
            print(
                f"Prefect API: {api_url}, a temporary server of this process (no "
                "PREFECT_API_URL): the schedule and its runs stop when this process ends"
            )
        else:
            print(f"Prefect API: {api_url}")
        print("stop with Ctrl-C", flush=True)
        scheduled_compare.serve(
            name=name,
            parameters=parameters,
            print_starting_message=False,
            pause_on_shutdown=True,
            limit=1,  # one comparison at a time: a run that overlaps the next one waits
            entrypoint_type=EntrypointType.MODULE_PATH,
            **when,
        )
    if temporary:
        print(f"stopped serving {FLOW_NAME}/{name}; its temporary Prefect server is gone")
    else:
        print(
            f"stopped serving {FLOW_NAME}/{name}; its schedule is paused on {api_url} "
            "until it is served again"
        )


def register(app: typer.Typer) -> None:
    """Add ``seqlab schedule`` to ``app``."""
    app.command("schedule")(schedule_command)
