"""The ``seqlab`` command line: thin over pipeline_core and flows.

Every user error (:class:`~pipeline_core.errors.SeqlabError`) is printed as one line,
``error: ...``, on stderr with exit code 2; heavy imports (torch, prefect, mlflow) happen
inside the commands that need them, so ``seqlab plugins`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from pipeline_core.errors import ConfigError, SeqlabError
from pipeline_core.interrupt import Terminated, received_signal
from seqlab import cli_fill, cli_generate, cli_plugins, cli_runs, cli_schedule, cli_sweep

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="seqlab: n-gram baselines and recurrent networks on identical splits, one metric.",
)
data_app = typer.Typer(no_args_is_help=True, help="Look at a corpus before training on it.")
app.add_typer(data_app, name="data")
cli_plugins.register(app)
cli_runs.register(app)
cli_generate.register(app)
cli_fill.register(app)
cli_schedule.register(app)
cli_sweep.register(app)

INTERRUPTED = 130  # the exit code of Ctrl-C (128 + SIGINT); SIGTERM gives 143

QUIET_DEFAULTS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "DO_NOT_TRACK": "1",
}


def quiet_services() -> None:
    """Sensible defaults for Prefect and MLflow on a laptop; the user's env wins."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)


def bound_network() -> None:
    """Every network wait bounded by ``$SEQLAB_NETWORK_TIMEOUT`` (checked here, once)."""
    from pipeline_core.network import bound_mlflow_http, network_timeout_s

    bound_mlflow_http(network_timeout_s())


def probe_tracking(uri: str | None) -> None:
    """An http(s) tracking server must answer before anything runs (one line if not)."""
    from pipeline_core.network import probe_tracking_server
    from pipeline_core.tracking import resolve_tracking_uri

    probe_tracking_server(resolve_tracking_uri(uri))


def preflight(run_config: Any) -> None:
    """What can be refused cheaply, before any heavy import and before Prefect starts:
    a source that cannot be read (or a synthetic one too large to build) and a SQLite
    store that cannot be created or written."""
    from pipeline_core.sources import check_source
    from pipeline_core.tracking import prepare_store, resolve_tracking_uri

    check_source(run_config.data.source, run_config.data.errors)
    prepare_store(resolve_tracking_uri(run_config.tracking.tracking_uri))


class _WarningLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"warning: {' '.join(record.getMessage().split())}"


def console_warnings() -> None:
    """Warnings of the ``seqlab`` logger (e.g. how much of the text became ``<unk>``)
    as one ``warning: ...`` line each on stderr, whichever thread logs them."""
    logger = logging.getLogger("seqlab")
    if not any(getattr(h, "seqlab_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(_WarningLine())
        handler.seqlab_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def split_models(models: str) -> list[str]:
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise ConfigError("--models: give at least one plugin name, e.g. --models ngram,lstm")
    return names


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``--set train.bptt=stateful`` pairs; values are read as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected KEY=VALUE, e.g. train.bptt=stateful (got {pair!r})")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: the value {raw!r} is not valid YAML") from None
    return out


def build_run_config(
    config: Path | None,
    data: str | None,
    clean: str | None,
    level: str | None,
    models: str | None,
    epochs: int | None,
    tracking_uri: str | None,
    errors: str | None,
    task: str | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> Any:
    """The resolved config: the file, then ``--set`` pairs, then each flag given."""
    from pipeline_core.config import load_run_config, load_yaml

    overrides: dict[str, Any] = parse_sets(sets or [])
    for key, value in {
        **(flags or {}),
        "task": task,
        "data.source": data,
        "data.clean": clean,
        "data.level": level,
        "data.errors": errors,
        "train.epochs": epochs,
        "tracking.tracking_uri": tracking_uri,
    }.items():
        if value is not None:
            overrides[key] = value
    if models is not None:
        existing = {
            (m.get("name") or m.get("plugin")): m
            for m in (load_yaml(config).get("models") or [] if config else [])
            if isinstance(m, dict)
        }
        overrides["models"] = [existing.get(n, {"plugin": n}) for n in split_models(models)]
    return load_run_config(config, overrides)


#: leaderboard columns per task: (heading, table column, format)
LEADERBOARD_VIEW: dict[str, list[tuple[str, str, str]]] = {
    "next-token": [
        ("test bpc", "test_bpc", "{:.4f}"),
        ("dyn bpc", "dyn_bpc", "{:.4f}"),  # dynamic evaluation: only with train.dynamic_eval
        ("gap", "gap_bpc", "{:+.4f}"),  # shown only where the source has an oracle
        ("ppl", "test_ppl", "{:.3f}"),
        ("acc@1", "test_acc1", "{:.3f}"),
        ("val bpc", "val_bpc", "{:.4f}"),
    ],
    "fill-blank": [
        ("blank bpc", "test_bpc", "{:.4f}"),
        ("acc@1", "test_acc1", "{:.3f}"),
        ("acc@5", "test_acc5", "{:.3f}"),
        ("val bpc", "val_bpc", "{:.4f}"),
    ],
    "transduce": [
        ("test cer", "test_cer", "{:.4f}"),
        ("exact", "test_exact_match", "{:.3f}"),
        ("target bpc", "test_bpc", "{:.4f}"),
        ("val cer", "val_cer", "{:.4f}"),
    ],
    "classify": [
        ("test log-loss", "test_log_loss", "{:.4f}"),
        ("accuracy", "test_accuracy", "{:.3f}"),
        ("macro F1", "test_macro_f1", "{:.3f}"),
        ("val log-loss", "val_log_loss", "{:.4f}"),
    ],
    "regress": [
        ("test MSE", "test_mse", "{:.4f}"),
        ("MAE", "test_mae", "{:.4f}"),
        ("val MSE", "val_mse", "{:.4f}"),
    ],
}


def _cell(value: Any, fmt: str) -> str:
    return "-" if value != value else fmt.format(value)  # NaN: the figure does not apply


def print_leaderboard(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipeline_core.experiment import oracle_test_bpc

    board = result.leaderboard
    has_gap = "gap_bpc" in board and bool(board["gap_bpc"].notna().any())
    view = [
        v
        for v in LEADERBOARD_VIEW.get(result.task, LEADERBOARD_VIEW["next-token"])
        if (v[1] != "gap_bpc" or has_gap) and (v[1] != "dyn_bpc" or "dyn_bpc" in board)
    ]
    table = Table(title=f"leaderboard — {result.experiment}")
    headings = ["model", *(h for h, _, _ in view), "train s", "scoring"]
    for col in headings:
        table.add_column(col, justify="left" if col in ("model", "scoring") else "right")
    for row in result.leaderboard.itertuples():
        if row.status == "failed":
            blanks = [""] * len(view)
            table.add_row(row.model, "[red]failed[/red]", *blanks[1:], "", row.error[:60])
            continue
        cells = [_cell(getattr(row, col), fmt) for _, col, fmt in view]
        cells = [
            "n/a" if col == "dyn_bpc" and c == "-" and row.plugin != "baseline" else c
            for (_, col, _), c in zip(view, cells, strict=True)
        ]
        table.add_row(row.model, *cells, _cell(row.train_s, "{:.1f}"), row.scoring)
    console = Console()
    console.print(table)
    for note in result.notes:
        console.print(note)
    if getattr(result, "registry", None) is not None:
        console.print(result.registry.message, markup=False, highlight=False, soft_wrap=True)
    if result.resumed:
        console.print(f"resumed: kept finished model(s) {', '.join(result.resumed)}")
    oracle = oracle_test_bpc(board)
    if result.entropy_rate_bits is not None and oracle is not None:
        console.print(
            f"source entropy rate: {result.entropy_rate_bits:.4f} bits/char; oracle on "
            f"these test positions: {oracle:.4f} bpc (the best any model can do here)",
            soft_wrap=True,
        )
    elif result.entropy_rate_bits is not None:
        console.print(
            f"source entropy rate: {result.entropy_rate_bits:.4f} bits/char "
            "(the best any model can do on average)"
        )
    console.print(f"MLflow parent run: {result.parent_run_id}")
    console.print(f"tracking URI: {result.tracking_uri}")


@app.command("run")
def run_command(
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
    resume: str | None = typer.Option(
        None, "--resume", help="Continue a killed comparison: its MLflow parent run id."
    ),
    runner: str | None = typer.Option(
        None, "--runner", help="sequential (default), threads or dask."
    ),
    dask_address: str | None = typer.Option(
        None, "--dask-address", help="A Dask scheduler (default: a LocalCluster)."
    ),
    no_register: bool = typer.Option(
        False, "--no-register", help="Do not register the best model in MLflow's registry."
    ),
    refresh: bool = typer.Option(
        False, "--refresh", help="Recompute the vectorized data instead of reusing a cache."
    ),
) -> None:
    """Train and evaluate models on identical splits; print the leaderboard.

    ``--models`` keeps a config file's per-model params for the models it names."""
    quiet_services()
    bound_network()
    flags = {
        "execution.runner": runner,
        "execution.dask_address": dask_address,
        "registry.enabled": False if no_register else None,
        "execution.refresh": True if refresh else None,
    }
    given = [config, data, clean, level, models, epochs, errors, task, *sets, *flags.values()]
    if resume is not None and all(v is None for v in given):
        probe_tracking(tracking_uri)
        run_config = stored_run_config(resume, tracking_uri)
    else:
        run_config = build_run_config(
            config, data, clean, level, models, epochs, tracking_uri, errors, task, sets, flags
        )
    probe_tracking(run_config.tracking.tracking_uri)
    console_warnings()
    preflight(run_config)
    from pipeline_core.experiment import make_task, resolve_models

    # unknown tasks, plugins and bad configs fail before Prefect starts
    resolve_models(run_config.models, make_task(run_config), run_config.train)
    if resume is not None:
        check_resume(resume, run_config)
    from flows.compare import run_comparison
    from flows.console import hide_user_error_tracebacks
    from flows.runners import check_execution
    from flows.server import prefect_api
    from pipeline_core.interrupt import handle_signals

    check_execution(run_config)  # an unreachable --dask-address: one line, before Prefect
    hide_user_error_tracebacks()
    # Ctrl-C / SIGTERM stop training and mark the runs KILLED before the Prefect API
    # (a temporary server of this process unless PREFECT_API_URL is set) goes away
    with handle_signals(), prefect_api():
        result = run_comparison(run_config, resume)
    print_leaderboard(result)
    if result.failures:
        for failure in result.failures:
            print(f"error: model {failure.label} failed: {failure.error}", file=sys.stderr)
        raise SystemExit(1)


def check_resume(parent_id: str, run_config: Any) -> None:
    """A bad ``--resume`` (no such run, not a comparison, another config) refused in one
    line before Prefect starts; the flow checks it again, with the data, when it plans
    the resume."""
    from pipeline_core.resume import plan_resume

    plan_resume(resume_tracker(parent_id, run_config.tracking.tracking_uri), parent_id, run_config)


def resume_tracker(parent_id: str, tracking_uri: str | None) -> Any:
    """The store a ``--resume`` reads, refused in one line when it is not there: opening
    a missing SQLite store would create it, for nothing."""
    from pipeline_core.runs import store_missing
    from pipeline_core.tracking import get_tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if store_missing(uri):
        raise ConfigError(f"--resume: no MLflow run with id {parent_id!r} in {uri} (no store)")
    return get_tracker(uri)


def stored_run_config(parent_id: str, tracking_uri: str | None) -> Any:
    """``--resume ID`` alone: the config the comparison was started with."""
    from pipeline_core.resume import stored_config

    stored = stored_config(resume_tracker(parent_id, tracking_uri), parent_id)
    if tracking_uri is not None:
        stored.tracking.tracking_uri = tracking_uri
    return stored


@app.command("score")
def score_command(
    model: str = typer.Argument(..., metavar="MODEL", help=cli_generate.MODEL_HELP),
    text: str | None = typer.Option(None, "--text", help="Score this text instead of a split."),
    file: Path | None = typer.Option(None, "--file", help="Score this UTF-8 file's text."),
    data: str | None = typer.Option(None, "--data", help="Source (default: the training one)."),
    clean: str | None = typer.Option(
        None, "--clean", help="Cleaning preset (a split: override; --text/--file: applied)."
    ),
    split: str | None = typer.Option(None, "--split", help="train, val or test (default test)."),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help=cli_generate.TRACKING_HELP
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Score a saved model on a corpus split prepared the way it was trained, or the
    log-probability of a given text (--text or --file): nats, bits, bpc, tokens."""
    if text is not None or file is not None:
        if data is not None or split is not None:
            raise ConfigError(
                "--text/--file score a given text; --data and --split choose a corpus "
                "split: give one or the other"
            )
        cli_generate.refuse_example_models(
            model,
            tracking_uri,
            "--text/--file",
            "not the bits of a text: score a split (without --text/--file) or serve the model",
        )
        cli_generate.score_text_command(model, text, file, clean, tracking_uri, as_json)
        return
    from pipeline_core.experiment import score_checkpoint
    from pipeline_core.model_uri import local_checkpoint

    console_warnings()
    split = split or "test"
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split: must be train, val or test (got {split!r})")
    overrides = {k: v for k, v in {"source": data, "clean": clean}.items() if v is not None}
    cli_generate.check_store(model, tracking_uri)
    with local_checkpoint(model, tracking_uri) as (checkpoint, _, _):
        scores, config = score_checkpoint(checkpoint, overrides, split)
    figures = {"source": config.source, "split": split, **scores.as_metrics(split)}
    if as_json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"{key}: {value}")


@app.command("export-arpa")
def export_arpa_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint of a model that can export ARPA."),
    output: Path = typer.Argument(..., help="The .arpa file to write."),
) -> None:
    """Write a back-off n-gram model as an ARPA file (SRILM / KenLM format)."""
    from pipeline_core.contract import read_checkpoint
    from pipeline_core.registry import load_checkpoint

    vocab = read_checkpoint(checkpoint).get("vocab")
    model = load_checkpoint(checkpoint)
    to_arpa = getattr(model, "to_arpa", None)
    if to_arpa is None or vocab is None:
        raise ConfigError(f"{checkpoint}: {type(model).__name__} cannot be written as ARPA")
    print(to_arpa(output, vocab))


@data_app.command("inspect")
def inspect_command(
    source: str = typer.Argument(..., help="File, directory, glob, URL, gutenberg:<id>, ..."),
    clean: str = typer.Option("none", "--clean", help="Cleaning preset: none, seed, text."),
    level: str = typer.Option("char", "--level", help="Tokens: char or word."),
    errors: str = typer.Option("strict", "--errors", help="strict or ignore."),
    context_len: int = typer.Option(10, "--context-len", help="Window length (SEQ_LEN)."),
    min_freq: int = typer.Option(1, "--min-freq", help="Rarer tokens become <unk>."),
    max_vocab: int | None = typer.Option(
        None, "--max-vocab", help="Keep at most this many tokens; the rest become <unk>."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Documents, characters, vocabulary and split sizes of a cleaned corpus."""
    from pipeline_core.data_report import inspect_source

    console_warnings()
    report = inspect_source(
        source,
        clean=clean,
        level=level,
        errors=errors,
        context_len=context_len,
        min_freq=min_freq,
        max_vocab=max_vocab,
    )
    if as_json:
        print(json.dumps(report))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data: {source}", show_header=False)
    for key, value in report.items():
        shown = (
            ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else value
        )
        table.add_row(key, str(shown))
    Console().print(table)


def _click_exceptions() -> Any:
    """typer vendors click as ``typer._click``; older typers use click itself."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - depends on the installed typer
        return importlib.import_module("click.exceptions")


def log_internal_error(err: BaseException) -> Path:
    """Write the traceback of an unexpected error to a log file and return its path."""
    import time
    import traceback

    from pipeline_core.vectorize import cache_root

    folder = cache_root() / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        import tempfile

        folder = Path(tempfile.gettempdir())
    path = folder / f"seqlab-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    path.write_text(f"seqlab {' '.join(sys.argv[1:])}\n\n{text}", encoding="utf-8")
    return path


def main() -> None:
    """Console-script entry point, the one place errors become exit codes: a user error
    (usage included) is one ``error:`` line and exit 2; Ctrl-C exits 130; anything else
    is a bug: one line naming the log file that holds its traceback, and exit 1."""
    exc = _click_exceptions()
    try:
        code = app(standalone_mode=False)
    except SeqlabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except exc.NoArgsIsHelpError:  # typer has already shown the help
        raise SystemExit(2) from None
    except exc.UsageError as err:
        if err.ctx is not None:
            print(err.ctx.get_usage(), file=sys.stderr)
        message = " ".join(err.format_message().split())
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except Terminated:
        print("error: terminated", file=sys.stderr)
        raise SystemExit(143) from None
    except (typer.Abort, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except exc.ClickException as err:
        print(f"error: {' '.join(err.format_message().split())}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except SystemExit:
        raise
    except Exception as err:
        path = log_internal_error(err)
        print(
            f"error: internal error ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
            f"the traceback is in {path}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    if code == INTERRUPTED:  # typer turns a KeyboardInterrupt into 130, silently
        if received_signal() == signal.SIGTERM:
            print("error: terminated", file=sys.stderr)
            raise SystemExit(143)
        print("error: interrupted", file=sys.stderr)
    if isinstance(code, int) and code:
        raise SystemExit(code)
