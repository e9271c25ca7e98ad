"""``seqlab sweep`` (issue 11): the search space is checked before anything runs, every
sample lies in its declared range, the pruner stops a trial from its per-epoch
validation figure, and a 4-trial sweep on the synthetic source (sequential, and on a
two-process Dask cluster) records one child run per trial under the sweep parent, picks
the best by validation only and never scores the test split."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from pipeline_core.config import RunConfig, load_run_config, validate_model
from pipeline_core.contract import EpochRecord
from pipeline_core.errors import ConfigError
from pipeline_core.sweep_space import apply, check_sweep, suggest
from pipeline_core.sweep_trial import PruneOnEpoch, StudyRef, create_study, open_trial
from tests.conftest import assert_one_line_error, run_cli

SPACE: dict[str, Any] = {
    "train.lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True},
    "models.0.params.hidden_size": {"low": 8, "high": 24, "step": 8},
    "train.lr_schedule": {"choices": ["none", "cosine"]},
}


def config_values(**sweep: Any) -> dict[str, Any]:
    return {
        "data": {"source": "synthetic:markov?length=3000", "clean": "none", "context_len": 8},
        "models": [{"plugin": "lstm", "params": {"embedding_dim": 8, "hidden_size": 16}}],
        "train": {"epochs": 2, "batch_size": 32, "max_batches_per_epoch": 4, "num_threads": 1},
        "tracking": {"samples": 0, "gradient_flow": False},
        "sweep": {"pruner": "none", "space": SPACE, **sweep},
    }


def make_config(**sweep: Any) -> RunConfig:
    return validate_model(RunConfig, config_values(**sweep))


def refused(values: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        check_sweep(validate_model(RunConfig, values))
    assert "\n" not in str(caught.value)
    return str(caught.value)


# ---- the space: schema, paths, ranges ----------------------------------------------------
def test_samples_lie_in_their_declared_ranges() -> None:
    config = make_config()
    sweep = check_sweep(config)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen_schedules = set()
    for _ in range(40):
        values = suggest(study.ask(), sweep.space)
        assert 1e-3 <= values["train.lr"] <= 3e-2
        assert values["models.0.params.hidden_size"] in (8, 16, 24)
        assert isinstance(values["models.0.params.hidden_size"], int)
        seen_schedules.add(values["train.lr_schedule"])
        trial = apply(config, values)  # each sample becomes a valid config
        assert trial.train.lr == values["train.lr"]
        assert trial.models[0].params["hidden_size"] == values["models.0.params.hidden_size"]
    assert seen_schedules == {"none", "cosine"}


@pytest.mark.parametrize(
    ("space", "fragments"),
    [
        ({"train.lr": {"low": 0.1, "high": 0.01}}, ["sweep.space.train.lr", "low must be below"]),
        ({"train.lr": {"low": 0.0, "high": 0.1, "log": True}}, ["train.lr", "low > 0"]),
        ({"train.lr": {"low": 0.1}}, ["sweep.space.train.lr", "low and high"]),
        ({"train.lr": {"low": 1, "hihg": 2}}, ["sweep.space.train.lr.hihg"]),
        ({"train.lr": {"choices": []}}, ["sweep.space.train.lr", "at least one"]),
        ({"train.lr": {"low": 1, "high": 2, "choices": [1]}}, ["either choices"]),
    ],
)
def test_bad_distributions_are_one_line_naming_the_path(
    space: dict[str, Any], fragments: list[str]
) -> None:
    values = config_values()
    values["sweep"]["space"] = space
    with pytest.raises(ConfigError) as caught:
        validate_model(RunConfig, values)
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("path", "dist", "fragments"),
    [
        ("train.lrr", {"low": 0.1, "high": 1}, ["sweep.space.train.lrr", "'lrr'"]),
        ("models.0.params.hidden", {"low": 8, "high": 16}, ["lstm has no param 'hidden'"]),
        ("models.1.params.hidden_size", {"low": 8, "high": 16}, ["models.1", "one model"]),
        ("data.context_len", {"low": 4, "high": 8}, ["sweep.space.data.context_len"]),
        ("train.lr", {"low": 0.1, "high": 20.0}, ["sweep.space.train.lr", "20.0", "train.lr"]),
        ("train.lr_schedule", {"choices": ["none", "step"]}, ["'step'", "lr_schedule"]),
        ("models.0.params.hidden_size", {"low": -8, "high": 16}, ["-8", "hidden_size"]),
    ],
)
def test_paths_and_ends_are_checked_before_any_trial(
    path: str, dist: dict[str, Any], fragments: list[str]
) -> None:
    values = config_values()
    values["sweep"]["space"] = {path: dist}
    message = refused(values)
    for fragment in fragments:
        assert fragment in message, message


def test_one_model_a_space_and_a_known_metric() -> None:
    values = config_values()
    values["models"].append({"plugin": "gru"})
    assert "a sweep tunes one model" in refused(values)
    values = config_values(space={})
    assert "sweep.space" in refused(values)
    assert "val_acc1" in refused(config_values(metric="val_acc1"))
    assert check_sweep(make_config(metric="val_nll")).metric == "val_nll"
    # a config with a sweep section still runs as a plain comparison config
    assert load_run_config(None, {"sweep": {"space": SPACE}}).sweep is not None


# ---- pruning ------------------------------------------------------------------------------
def record(epoch: int, val_nll: float) -> EpochRecord:
    return EpochRecord(epoch=epoch, train_nll=val_nll, val_nll=val_nll)


def test_a_trial_worse_than_the_median_is_pruned_from_another_process_view(
    tmp_path: Path,
) -> None:
    """The callback reports through a trial opened by id from the SQLite study (as a
    Dask worker does): a trial above the median at an epoch stops, a better one not."""
    sweep = make_config(pruner="median", warmup_epochs=0, startup_trials=1).sweep
    assert sweep is not None
    ref = StudyRef(f"sqlite:///{tmp_path / 'study.db'}", "s", sweep)
    study = create_study(ref)
    first = study.ask()
    for epoch in (1, 2, 3):
        first.report(1.0, epoch)
    study.tell(first, 1.0)

    good, bad = study.ask(), study.ask()
    keep = PruneOnEpoch(open_trial(ref, good._trial_id), "val_nll", 1.0)
    for epoch in (1, 2, 3):
        keep.on_epoch_end(None, record(epoch, 0.5))
    stop = PruneOnEpoch(open_trial(ref, bad._trial_id), "val_nll", 1.0)
    with pytest.raises(optuna.TrialPruned):
        stop.on_epoch_end(None, record(1, 3.0))
    assert [v for _, v in stop.reported] == [3.0]
    # the reports reached the study's storage, where the driver reads them
    stored = {t.number: t.intermediate_values for t in study.get_trials(deepcopy=False)}
    assert stored[good.number] == {1: 0.5, 2: 0.5, 3: 0.5}
    assert stored[bad.number] == {1: 3.0}


def test_val_bpc_is_reported_per_epoch_as_logged() -> None:
    study = optuna.create_study()
    callback = PruneOnEpoch(study.ask(), "val_bpc", 0.5)
    callback.on_epoch_end(None, record(1, math.log(2.0)))
    assert callback.reported == [(1, pytest.approx(0.5))]


# ---- the command ------------------------------------------------------------------------
def write_config(tmp_path: Path, **sweep: Any) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config_values(**sweep)), encoding="utf-8")
    return path


@pytest.mark.slow
def test_bad_input_is_one_line_and_records_nothing(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    uri = f"sqlite:///{db}"
    assert_one_line_error(run_cli("sweep", "--trials", "2", "--tracking-uri", uri), "--config")
    good = write_config(tmp_path)
    assert_one_line_error(
        run_cli("sweep", "--config", str(good), "--trials", "0", "--tracking-uri", uri),
        "--trials",
    )
    bad = tmp_path / "bad.yaml"
    values = config_values()
    values["sweep"]["space"] = {"train.nope": {"low": 1, "high": 2}}
    bad.write_text(yaml.safe_dump(values), encoding="utf-8")
    assert_one_line_error(
        run_cli("sweep", "--config", str(bad), "--trials", "2", "--tracking-uri", uri),
        "sweep.space.train.nope",
    )
    assert not db.exists()


def sweep_runs(uri: str, parent_id: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    return parent, children


def check_sweep_runs(uri: str, stdout: str, trials: int) -> list[Any]:
    """One child per trial, sampled values in range, best = min over complete children,
    no test figure anywhere."""
    parent_id = stdout.split("MLflow parent run: ")[1].split()[0]
    parent, children = sweep_runs(uri, parent_id)
    assert parent.data.tags["seqlab.kind"] == "sweep"
    assert parent.data.tags["seqlab.trials"] == str(trials)
    assert json.loads(parent.data.tags["seqlab.space"]).keys() == SPACE.keys()
    assert len(children) == trials
    assert {c.data.tags["seqlab.trial"] for c in children} == {str(i) for i in range(trials)}
    for child in children:
        params = child.data.params
        assert 1e-3 <= float(params["trial.train.lr"]) <= 3e-2
        assert float(params["train.lr"]) == pytest.approx(float(params["trial.train.lr"]))
        assert int(params["trial.models.0.params.hidden_size"]) in (8, 16, 24)
        assert params["model.hidden_size"] == params["trial.models.0.params.hidden_size"]
        assert params["trial.train.lr_schedule"] in ("none", "cosine")
        assert not [k for k in child.data.metrics if k.startswith("test_")]
        assert "val_bpc" in child.data.metrics  # per epoch, pruned ones too
    complete = [c for c in children if c.data.tags["seqlab.trial_state"] == "COMPLETE"]
    assert complete
    best = min(complete, key=lambda c: c.data.metrics["trial_value"])
    assert parent.data.metrics["best_val_bpc"] == pytest.approx(best.data.metrics["val_bpc"])
    assert parent.data.tags["seqlab.best_run_id"] == best.info.run_id
    assert parent.data.tags["seqlab.best_trial"] == best.data.tags["seqlab.trial"]
    assert json.loads(parent.data.tags["seqlab.best_params"])["train.lr"] == pytest.approx(
        float(best.data.params["trial.train.lr"])
    )
    assert not [k for k in parent.data.metrics if k.startswith("test_")]
    assert parent.info.status == "FINISHED"
    return children


@pytest.mark.slow
def test_four_trials_sequential(prefect_server: str, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    config = write_config(tmp_path, pruner="median")
    result = run_cli("sweep", "--config", str(config), "--trials", "4", "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best: trial" in result.stdout and "test split was not scored" in result.stdout
    children = check_sweep_runs(uri, result.stdout, 4)
    assert len({c.data.tags["seqlab.pid"] for c in children}) == 1
    for child in children:
        state = child.data.tags["seqlab.trial_state"]
        assert state in ("COMPLETE", "PRUNED"), child.data.tags
        assert child.info.status == "FINISHED"


@pytest.mark.slow
def test_four_trials_on_two_dask_workers(prefect_server: str, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    config = write_config(tmp_path)
    result = run_cli(
        "sweep", "--config", str(config), "--trials", "4", "--runner", "dask",
        "--tracking-uri", uri,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    children = check_sweep_runs(uri, result.stdout, 4)
    assert len({c.data.tags["seqlab.pid"] for c in children}) > 1
    assert all(c.data.params["train.num_threads"] == "1" for c in children)


def test_threads_and_a_scheduler_on_another_host_are_refused() -> None:
    from flows.sweep import check_runner

    values = config_values()
    values["execution"] = {"runner": "threads"}
    with pytest.raises(ConfigError, match="sequential or dask"):
        check_runner(validate_model(RunConfig, values))
    values["execution"] = {"runner": "dask", "dask_address": "tcp://10.0.0.5:8786"}
    with pytest.raises(ConfigError, match=r"10\.0\.0\.5"):
        check_runner(validate_model(RunConfig, values))
    values["execution"] = {"runner": "dask", "dask_address": "tcp://127.0.0.1:8786"}
    check_runner(validate_model(RunConfig, values))


@pytest.mark.slow
def test_a_bad_trial_is_pruned_end_to_end(prefect_server: str, tmp_path: Path) -> None:
    """Two learning rates, one that learns and one that cannot (1e-6): every hopeless
    trial drawn after a good one completed is stopped after its first epoch by the
    median pruner and recorded as such; the good ones run all their epochs."""
    values = config_values(
        sampler="random", seed=0, pruner="median", warmup_epochs=0, startup_trials=1
    )
    values["train"]["epochs"] = 3
    values["sweep"]["space"] = {"train.lr": {"choices": [0.03, 1.0e-6]}}
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(values), encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    result = run_cli("sweep", "--config", str(config), "--trials", "4", "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr[-3000:]
    parent_id = result.stdout.split("MLflow parent run: ")[1].split()[0]
    parent, children = sweep_runs(uri, parent_id)
    client = MlflowClient(tracking_uri=uri)
    trials = sorted(children, key=lambda c: int(c.data.tags["seqlab.trial"]))
    first_good = next(
        i for i, c in enumerate(trials) if float(c.data.params["trial.train.lr"]) == 0.03
    )
    hopeless = [c for c in trials[first_good + 1 :] if c.data.params["trial.train.lr"] == "1e-06"]
    assert hopeless, "seed 0 no longer draws 1e-6 after 0.03: pick another seed"
    for child in trials:
        epochs = len({m.step for m in client.get_metric_history(child.info.run_id, "val_bpc")})
        state = child.data.tags["seqlab.trial_state"]
        assert child.info.status == "FINISHED"
        if child in hopeless:
            assert (state, epochs) == ("PRUNED", 1), child.data.tags
        elif float(child.data.params["trial.train.lr"]) == 0.03:
            assert (state, epochs) == ("COMPLETE", 3), child.data.tags
    pruned = sum(c.data.tags["seqlab.trial_state"] == "PRUNED" for c in trials)
    assert parent.data.metrics["trials_pruned"] == pruned >= len(hopeless)
    assert json.loads(parent.data.tags["seqlab.best_params"]) == {"train.lr": 0.03}
    assert f"trial {int(hopeless[0].data.tags['seqlab.trial']) + 1}/4 pruned" in result.stdout
