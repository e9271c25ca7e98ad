"""MLflow through the Tracker, on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.tracking import Tracker, artifact_root_for, flatten, resolve_tracking_uri


def test_flatten_nested_config() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}) == {
        "a.b": "1",
        "a.c.d": "x",
        "e": "[1, 2]",
    }


def test_default_uri_is_sqlite_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert artifact_root_for(f"sqlite:///{tmp_path}/m.db") == (tmp_path / "mlartifacts").as_uri()


def test_file_store_uri_is_refused() -> None:
    with pytest.raises(ConfigError, match="tracking-uri"):
        resolve_tracking_uri("./mlruns")


def test_parent_and_child_runs(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    parent = tracker.start_run("compare", "seqlab/test/next-token", tags={"k": "v"})
    child = tracker.start_run("lstm", parent=parent)
    tracker.log_params(child, {"model": {"hidden_size": 8}})
    for step in (1, 2):
        tracker.log_metrics(child, {"val_nll": 1.0 / step, "skip": float("nan")}, step=step)
    tracker.log_text(child, "hello", "samples.txt")
    tracker.end(child)
    tracker.end(parent, failed=True)
    runs = tracker.child_runs(parent)
    assert [r.info.run_id for r in runs] == [child.run_id]
    run = tracker.client.get_run(child.run_id)
    assert run.data.params["model.hidden_size"] == "8"
    assert run.data.metrics["val_nll"] == 0.5
    assert "skip" not in run.data.metrics
    history = tracker.client.get_metric_history(child.run_id, "val_nll")
    assert [m.step for m in history] == [1, 2]
    assert tracker.client.get_run(parent.run_id).info.status == "FAILED"
    artifacts = [a.path for a in tracker.client.list_artifacts(child.run_id)]
    assert artifacts == ["samples.txt"]
    assert (tmp_path / "mlartifacts").is_dir()


def test_the_registry_is_the_tracking_store_whatever_the_process_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry URI left process-wide (mlflow.set_registry_uri exports it to every
    later subprocess too) must not send seqlab's registrations to another store."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    mlflow.set_registry_uri(elsewhere)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = Tracker(uri)
    tracker.client.create_registered_model("seqlab-here")
    assert [m.name for m in mlflow.MlflowClient(uri, uri).search_registered_models()] == [
        "seqlab-here"
    ]
    assert mlflow.MlflowClient(elsewhere, elsewhere).search_registered_models() == []
