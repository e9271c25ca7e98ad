"""The only module that imports mlflow: runs, params, metrics, artifacts.

Run ids are passed explicitly (``MlflowClient``), never through MLflow's thread-local
active run, because Prefect runs tasks on worker threads. The default store is a SQLite
file in the working directory, with artifacts in an explicit folder beside it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_core.errors import ConfigError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr clean

DEFAULT_DB = "mlruns.db"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_CHARS = 6000


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlruns.db``."""
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not chosen:
        return f"sqlite:///{Path.cwd().resolve() / DEFAULT_DB}"
    scheme = chosen.split(":", 1)[0] if ":" in chosen else ""
    if scheme not in {"sqlite", "http", "https", "postgresql", "mysql", "databricks"}:
        raise ConfigError(
            f"tracking-uri: unsupported MLflow tracking URI {chosen!r}; use sqlite:///PATH.db "
            "or http(s)://HOST:PORT (MLflow's file store is refused)"
        )
    return chosen


def artifact_root_for(uri: str) -> str | None:
    """An explicit artifact folder beside a SQLite store (else the server decides)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"train.epochs": "3", ...}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:MAX_PARAM_CHARS]
    return flat


@dataclass(frozen=True)
class RunRef:
    """A run id with its experiment, passed between tasks instead of an active run."""

    run_id: str
    experiment_id: str


class Tracker:
    """Thin, thread-safe wrapper over ``MlflowClient`` with seqlab's conventions."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.uri = resolve_tracking_uri(tracking_uri)
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        return str(
            self.client.create_experiment(name, artifact_location=artifact_root_for(self.uri))
        )

    def start_run(
        self,
        name: str,
        experiment: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent: RunRef | None = None,
    ) -> RunRef:
        """A new run: nested under ``parent`` (in its experiment), or in ``experiment``."""
        if parent is not None:
            exp_id = parent.experiment_id
        elif experiment is not None:
            exp_id = self.experiment_id(experiment)
        else:
            raise ValueError("start_run needs an experiment or a parent run")
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent is not None:
            all_tags[PARENT_TAG] = parent.run_id
        run = self.client.create_run(exp_id, tags=all_tags, run_name=name)
        return RunRef(run.info.run_id, exp_id)

    def log_params(self, run: RunRef, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run.run_id, params=items[i : i + 100])

    def log_metrics(self, run: RunRef, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in sorted(metrics.items())
            if v is not None and math.isfinite(float(v))
        ]
        if items:
            self.client.log_batch(run.run_id, metrics=items)

    def set_tags(self, run: RunRef, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run.run_id, key, str(value))

    def log_text(self, run: RunRef, text: str, artifact_file: str) -> None:
        self.client.log_text(run.run_id, text, artifact_file)

    def log_dict(self, run: RunRef, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(run.run_id, dict(data), artifact_file)

    def log_file(self, run: RunRef, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run.run_id, str(path), artifact_path)

    def log_figure(self, run: RunRef, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(run.run_id, figure, artifact_file)

    def end(self, run: RunRef, failed: bool = False) -> None:
        self.client.set_terminated(run.run_id, "FAILED" if failed else "FINISHED")

    def reopen(self, run: RunRef) -> None:
        """Mark a run RUNNING again (a resumed comparison continues in it)."""
        self.client.update_run(run.run_id, status="RUNNING")

    def fail(self, run: RunRef, err: BaseException) -> None:
        """Record why ``run`` failed (a tag and the full traceback as error.txt), end it."""
        reason = describe_error(err)
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        with contextlib.suppress(Exception):  # the failure itself must still be recorded
            self.log_text(run, text, "error.txt")
        self.set_tags(run, {"seqlab.error": reason[:5000]})
        self.end(run, failed=True)

    @contextlib.contextmanager
    def run(self, run: RunRef, close: bool = True) -> Iterator[RunRef]:
        """Work inside ``run``: on an exception the run is FAILED with its reason and
        traceback and the exception goes on; on success it is FINISHED if ``close``."""
        try:
            yield run
        except BaseException as err:
            self.fail(run, err)
            err.seqlab_run_id = run.run_id  # type: ignore[attr-defined]
            raise
        if close:
            self.end(run)

    def run_info(self, run_id: str) -> Any:
        """The MLflow run, or a ConfigError naming the id when there is none."""
        try:
            return self.client.get_run(run_id)
        except Exception:
            raise ConfigError(f"--resume: no MLflow run with id {run_id!r} in {self.uri}") from None

    def download(self, run: RunRef, artifact_path: str, dst: str | Path) -> Path | None:
        """An artifact of ``run`` copied under ``dst``, or None when it does not exist."""
        try:
            return Path(self.client.download_artifacts(run.run_id, artifact_path, str(dst)))
        except Exception:
            return None

    def child_runs(self, parent: RunRef) -> list[Any]:
        return list(
            self.client.search_runs(
                [parent.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.run_id}'"
            )
        )


def describe_error(err: BaseException) -> str:
    """One line for a leaderboard row or a tag: the message, or the type if it has none."""
    text = " ".join(str(err).split())
    from pipeline_core.errors import SeqlabError

    if isinstance(err, SeqlabError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


_TRACKERS: dict[str, Tracker] = {}


def get_tracker(uri: str | None = None) -> Tracker:
    """One :class:`Tracker` per resolved URI and process (tasks pass URIs, not clients)."""
    resolved = resolve_tracking_uri(uri)
    if resolved not in _TRACKERS:
        _TRACKERS[resolved] = Tracker(resolved)
    return _TRACKERS[resolved]
