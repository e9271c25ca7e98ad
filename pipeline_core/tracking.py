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
import shutil
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
    if scheme == "sqlite":
        path = chosen.removeprefix("sqlite:///") if chosen.startswith("sqlite:///") else None
        if not path or path == ":memory:" or path.endswith("/"):
            raise ConfigError(
                f"tracking-uri: {chosen!r} names no SQLite database file; use sqlite:///PATH.db"
                " (e.g. sqlite:///mlruns.db, or sqlite:////abs/path/mlruns.db)"
            )
    return chosen


def prepare_store(uri: str) -> None:
    """Make sure a SQLite store can be created and written, before anything runs: its
    folder is created, and a store that cannot be is one ConfigError naming the path
    (a folder under a regular file, under /proc, a read-only working directory)."""
    import tempfile

    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    hint = "pass --tracking-uri sqlite:///PATH.db in a writable folder"
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        above = next((p for p in (db.parent, *db.parent.parents) if p.exists()), None)
        reason = (
            f"{above} is a file, not a folder"
            if above is not None and not above.is_dir()
            else err.strerror or str(err)
        )
        raise ConfigError(
            f"tracking-uri: cannot create the folder of the SQLite store {db}: {reason}; {hint}"
        ) from None
    if db.exists() and not db.is_file():
        raise ConfigError(f"tracking-uri: the SQLite store {db} is not a regular file; {hint}")
    artifacts = db.parent / "mlartifacts"
    if artifacts.exists() and not artifacts.is_dir():
        raise ConfigError(
            f"tracking-uri: the artifact folder {artifacts} beside the store is a file; {hint}"
        )
    try:  # SQLite writes a journal beside the database: the folder must take new files
        with tempfile.TemporaryFile(dir=db.parent, prefix=".seqlab-probe-"):
            pass
        if db.exists():
            with db.open("ab"):
                pass
    except OSError as err:
        raise ConfigError(
            f"tracking-uri: cannot write the SQLite store {db}: {err.strerror or err}; {hint}"
        ) from None


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
        mlflow.set_tracking_uri(self.uri)
        # the registry is the tracking store's, whatever mlflow.set_registry_uri or
        # MLFLOW_REGISTRY_URI left in this process (a champion read in one store and
        # registered in another would compare the wrong figures)
        if not self.uri.startswith("sqlite:///"):
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            return
        db = Path(self.uri.removeprefix("sqlite:///"))
        prepare_store(self.uri)
        # several processes may meet a store that does not exist yet: one creates the
        # tables while the others wait, instead of racing to create them
        with file_lock(db.with_name(db.name + ".lock")):
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            self.client.search_experiments(max_results=1)

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(
                self.client.create_experiment(name, artifact_location=artifact_root_for(self.uri))
            )
        except Exception:  # another process created it between the lookup and here
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

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
        """Log a file; into a local artifact store it is written under a temporary name
        and renamed, so a kill never leaves a half-written file under its real name."""
        local = self.local_artifact_dir(run)
        if local is None:
            self.client.log_artifact(run.run_id, str(path), artifact_path)
            return
        folder = local / artifact_path if artifact_path else local
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(path)
        tmp = folder / f".{source.name}.tmp-{os.getpid()}"
        try:
            shutil.copyfile(source, tmp)
            fault_delay("artifact")  # tests kill a process here, between copy and rename
            os.replace(tmp, folder / source.name)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves no partial file behind
            raise

    def log_artifacts(self, run: RunRef, folder: str | Path, artifact_path: str) -> None:
        """Log a folder's files under ``artifact_path``. Into a local artifact store the
        folder is built under a temporary name (each file copied under a temporary name,
        then renamed) and renamed into place, so a kill never leaves a half-written file
        or folder under its real name."""
        local = self.local_artifact_dir(run)
        if local is None:
            self.client.log_artifacts(run.run_id, str(folder), artifact_path)
            return
        dest = local / artifact_path.strip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            for source in sorted(Path(folder).rglob("*")):
                target = tmp / source.relative_to(folder)
                if source.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(f".{target.name}.part")
                shutil.copyfile(source, part)
                os.replace(part, target)
            fault_delay("artifact")  # tests kill a process here, between copy and rename
            _move_into(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no partial folder
            raise

    def local_artifact_dir(self, run: RunRef) -> Path | None:
        """The run's artifact folder when the store keeps artifacts on this disk."""
        uri = self.client.get_run(run.run_id).info.artifact_uri
        if not uri.startswith("file://"):
            return None
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))

    def log_figure(self, run: RunRef, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(run.run_id, figure, artifact_file)

    def end(self, run: RunRef, failed: bool = False) -> None:
        self.client.set_terminated(run.run_id, "FAILED" if failed else "FINISHED")

    def kill(self, run: RunRef) -> None:
        """End ``run`` as KILLED (interrupted: Ctrl-C, SIGTERM, or closed as stale)."""
        self.client.set_terminated(run.run_id, "KILLED")

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
        traceback and the exception goes on (KILLED, for an interrupt: Ctrl-C, SIGTERM,
        an exit); on success it is FINISHED if ``close``."""
        try:
            yield run
        except BaseException as err:
            if isinstance(err, Exception):
                self.fail(run, err)
            else:  # KeyboardInterrupt, SystemExit, an engine's termination signal
                with contextlib.suppress(Exception):  # the interrupt must reach the CLI
                    self.kill(run)
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

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every (step, value) logged for ``key`` on run ``run_id``, by step."""
        return sorted(
            (int(m.step), float(m.value)) for m in self.client.get_metric_history(run_id, key)
        )

    def child_runs(self, parent: RunRef) -> list[Any]:
        return list(
            self.client.search_runs(
                [parent.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.run_id}'"
            )
        )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed) for the block."""
    import fcntl

    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _move_into(src: Path, dest: Path) -> None:
    """Rename the folder ``src`` to ``dest``; onto an existing folder, entry by entry
    (a file replaces its namesake). ``src`` is gone afterwards."""
    if not dest.exists():
        os.replace(src, dest)
        return
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and target.is_dir():
            _move_into(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
    src.rmdir()


def fault_delay(point: str) -> None:
    """Fault injection for the kill tests: ``SEQLAB_FAULT_DELAY=artifact:2`` sleeps two
    seconds at that point, so a test can kill the process exactly there."""
    spec = os.environ.get("SEQLAB_FAULT_DELAY", "")
    name, _, seconds = spec.partition(":")
    if name == point and seconds:
        time.sleep(float(seconds))


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


# ---- models by URI: runs:/<run_id>/<path> and models:/<name>@<alias> | /<version> -------
RUNS_SCHEME = "runs:"
MODELS_SCHEME = "models:"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


@dataclass(frozen=True)
class FetchedArtifact:
    """An artifact copied to this disk, with the run it belongs to and where it came from."""

    path: Path
    run_id: str | None
    origin: str


def read_client(tracking_uri: str | None = None) -> tuple[str, Any]:
    """The resolved URI and an ``MlflowClient`` for reading (tracking and registry) that
    never creates a store: a SQLite file that does not exist is a one-line DataError."""
    from mlflow import MlflowClient

    from pipeline_core.errors import DataError

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise DataError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}: nothing has been recorded "
            "there; give --tracking-uri (or set MLFLOW_TRACKING_URI) to the store of your runs"
        )
    return uri, MlflowClient(tracking_uri=uri, registry_uri=uri)


def _mlflow_error_code(err: BaseException) -> str | None:
    return getattr(err, "error_code", None)


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] or type(err).__name__


def _listing(names: list[str], none: str, limit: int = 12) -> str:
    if not names:
        return none
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _run_artifacts(client: Any, run_id: str, folder: str) -> list[str]:
    try:
        entries = client.list_artifacts(run_id, folder or None)
    except Exception:
        return []
    return [e.path.rsplit("/", 1)[-1] + ("/" if e.is_dir else "") for e in entries]


def fetch_run_artifact(
    run_id: str, artifact_path: str, dst: str | Path, tracking_uri: str | None = None
) -> FetchedArtifact:
    """The artifact ``artifact_path`` (a file or a folder) of run ``run_id`` copied under
    ``dst``. An unknown run or a missing artifact is one DataError naming it (and, for a
    missing artifact, what the run has there)."""
    from pipeline_core.errors import DataError

    uri, client = read_client(tracking_uri)
    try:
        client.get_run(run_id)
    except Exception as err:
        if _mlflow_error_code(err) == NOT_FOUND:
            raise DataError(f"no MLflow run with id {run_id!r} in {uri}") from None
        raise DataError(f"cannot read run {run_id!r} from {uri}: {_first_line(err)}") from None
    path = artifact_path.strip("/")
    folder, _, leaf = path.rpartition("/")
    present = _run_artifacts(client, run_id, folder)
    if leaf not in {p.rstrip("/") for p in present}:
        where = f"under {folder}/" if folder else "at its top level"
        raise DataError(
            f"run {run_id} has no artifact {path!r} (it has {where}: "
            f"{_listing(present, 'nothing')})"
        )
    try:
        local = client.download_artifacts(run_id, path, str(dst))
    except Exception as err:
        raise DataError(
            f"could not download artifact {path!r} of run {run_id}: {_first_line(err)}"
        ) from None
    return FetchedArtifact(Path(local), run_id, f"runs:/{run_id}/{path}")


def parse_models_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/VERSION`` -> (NAME,
    None, VERSION), where VERSION is a number or ``latest``."""
    rest = model_uri.removeprefix(MODELS_SCHEME).lstrip("/")
    hint = "use models:/<name>@<alias> or models:/<name>/<version>"
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        if name and alias and "/" not in alias:
            return name, alias, None
    else:
        name, _, version = rest.rpartition("/")
        if name and (version.isdigit() or version == "latest"):
            return name, None, version
    raise ConfigError(f"model URI {model_uri!r} names no registered model version; {hint}")


def resolve_registered_version(model_uri: str, tracking_uri: str | None = None) -> Any:
    """The ``ModelVersion`` a ``models:/`` URI names. An unknown registered model lists
    those that exist; an unknown alias lists the model's aliases; an unknown version
    lists its versions. Each is one DataError."""
    from pipeline_core.errors import DataError

    name, alias, version = parse_models_uri(model_uri)
    uri, client = read_client(tracking_uri)
    try:
        registered = client.get_registered_model(name)
    except Exception as err:
        if _mlflow_error_code(err) != NOT_FOUND:
            raise DataError(
                f"cannot read the model registry of {uri}: {_first_line(err)}"
            ) from None
        try:
            known = sorted(m.name for m in client.search_registered_models(max_results=100))
        except Exception:
            known = []
        raise DataError(
            f"no registered model {name!r} in {uri} (registered models: {_listing(known, 'none')})"
        ) from None
    if alias is not None:
        aliases = dict(getattr(registered, "aliases", None) or {})
        if alias not in aliases:
            listed = [f"{a} (version {v})" for a, v in sorted(aliases.items())]
            raise DataError(
                f"registered model {name!r} has no alias {alias!r} (its aliases: "
                f"{_listing(listed, 'none')})"
            )
        return client.get_model_version(name, str(aliases[alias]))
    versions = sorted(
        int(v.version) for v in client.search_model_versions(f"name='{name.replace(chr(39), '')}'")
    )
    if version == "latest":
        if not versions:
            raise DataError(f"registered model {name!r} has no versions")
        version = str(versions[-1])
    if version is None or int(version) not in versions:
        raise DataError(
            f"registered model {name!r} has no version {version} (its versions: "
            f"{_listing([str(v) for v in versions], 'none')})"
        )
    return client.get_model_version(name, version)


def fetch_model_artifact(
    model_uri: str, dst: str | Path, tracking_uri: str | None = None
) -> FetchedArtifact:
    """The artifact folder a ``runs:/<run_id>/<path>`` or ``models:/...`` URI names,
    copied under ``dst`` (``runs:/<run_id>`` alone means its ``model`` folder)."""
    from pipeline_core.errors import DataError

    if model_uri.startswith(RUNS_SCHEME):
        rest = model_uri.removeprefix(RUNS_SCHEME).lstrip("/")
        run_id, _, path = rest.partition("/")
        if not run_id:
            raise ConfigError(f"model URI {model_uri!r} names no run; use runs:/<run_id>/model")
        return fetch_run_artifact(run_id, path.strip("/") or "model", dst, tracking_uri)
    if not model_uri.startswith(MODELS_SCHEME):
        raise ConfigError(f"not an MLflow model URI: {model_uri!r} (runs:/... or models:/...)")
    found = resolve_registered_version(model_uri, tracking_uri)
    label = f"{model_uri} (version {found.version})"
    source = str(found.source or "")
    if source.startswith(RUNS_SCHEME):
        fetched = fetch_model_artifact(source, dst, tracking_uri)
        return FetchedArtifact(fetched.path, fetched.run_id, f"{label} = {fetched.origin}")
    import mlflow.artifacts

    uri, client = read_client(tracking_uri)
    try:
        download = client.get_model_version_download_uri(found.name, found.version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=download, dst_path=str(dst), tracking_uri=uri
        )
    except Exception as err:
        raise DataError(f"could not download {label} from {source!r}: {_first_line(err)}") from None
    return FetchedArtifact(Path(local), found.run_id or None, f"{label} = {source}")


def register_model_version(
    name: str,
    run_id: str,
    artifact_path: str = "model",
    alias: str | None = None,
    tracking_uri: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Register ``runs:/<run_id>/<artifact_path>`` as a new version of the registered
    model ``name`` (created if needed), with ``tags`` and optionally under ``alias``;
    returns the version. All or nothing: the version is created with its tags in one
    call, and if moving the alias fails the version (and a registered model created
    here) is deleted again before the error goes on."""
    client = get_tracker(tracking_uri).client
    created_model = False
    try:
        client.get_registered_model(name)
    except Exception as err:
        if _mlflow_error_code(err) != NOT_FOUND:
            raise
        client.create_registered_model(name)
        created_model = True
    try:
        version = client.create_model_version(
            name,
            source=f"runs:/{run_id}/{artifact_path.strip('/')}",
            run_id=run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
        )
    except BaseException:
        if created_model:
            with contextlib.suppress(Exception):
                client.delete_registered_model(name)
        raise
    try:
        if alias is not None:
            client.set_registered_model_alias(name, alias, str(version.version))
    except BaseException:
        with contextlib.suppress(Exception):
            client.delete_model_version(name, str(version.version))
            if created_model:
                client.delete_registered_model(name)
        raise
    return str(version.version)


def model_version_by_alias(name: str, alias: str, tracking_uri: str | None = None) -> Any | None:
    """The ``ModelVersion`` (with its tags) that ``name@alias`` names, or None when the
    registered model or the alias does not exist; any other failure is raised."""
    client = get_tracker(tracking_uri).client
    try:
        registered = client.get_registered_model(name)
    except Exception as err:
        if _mlflow_error_code(err) == NOT_FOUND:
            return None
        raise
    aliases = dict(getattr(registered, "aliases", None) or {})
    if alias not in aliases:
        return None
    return client.get_model_version(name, str(aliases[alias]))


def model_versions_of_run(name: str, run_id: str, tracking_uri: str | None = None) -> list[str]:
    """The versions of the registered model ``name`` made from run ``run_id`` (oldest
    first; none when the model does not exist)."""
    client = get_tracker(tracking_uri).client
    quoted = name.replace("'", "\\'")
    found = client.search_model_versions(f"name='{quoted}' and run_id='{run_id}'")
    return [str(v) for v in sorted(int(m.version) for m in found)]
