"""The regress task: float inputs through the contract's value input, MSE/MAE scoring,
the persistence baseline and the adding problem."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.metrics import mean_absolute_error, mean_squared_error

from pipeline_core.config import DataConfig, TrainConfig
from pipeline_core.errors import ConfigError, DataError, PluginError
from pipeline_core.experiment import fit_data
from pipeline_core.numeric_examples import parse_examples
from pipeline_core.numeric_series import read_series
from pipeline_core.registry import load_plugin
from pipeline_core.sources import load_documents
from pipeline_core.synthetic import make_synthetic
from pipeline_core.synthetic_adding import AddingParams, adding_arrays
from pipeline_core.tasks import get_task
from pipeline_core.tasks.regress import (
    RegressTask,
    padded_values,
    predict,
    regression_scores,
    series_splits,
)
from pipeline_core.training import fit_model
from pipeline_core.vectorize import EncodedCorpus, corpus_text, vectorize
from tests.conftest import assert_one_line_error, run_cli

RECURRENT = ["rnn", "lstm", "gru"]
SMALL = {"embedding_dim": 8, "hidden_size": 24}


def corpus_of(source: str, **data: object) -> EncodedCorpus:
    docs = load_documents(source)
    cfg = DataConfig(source=source, clean="none", **data)  # type: ignore[arg-type]
    return vectorize(corpus_text(docs["text"].tolist()), cfg)


def prepared(source: str, **data: object) -> tuple[EncodedCorpus, RegressTask]:
    corpus = corpus_of(source, **data)
    task = get_task("regress")
    assert isinstance(task, RegressTask)
    task.prepare(corpus)
    return corpus, task


def train_on(
    name: str, corpus: EncodedCorpus, task: RegressTask, epochs: int, params: dict[str, int]
) -> torch.nn.Module:
    model = load_plugin(name).create(len(corpus.vocab), params, seed=0)
    settings = TrainConfig(epochs=epochs, batch_size=32, lr=0.01, progress=False, num_threads=1)
    fit_model(
        model,
        fit_data(corpus),
        settings,
        task=task,
        validate=lambda m: task.score(m, corpus, "val", False).nll,
    )
    return model


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# ---- metrics -------------------------------------------------------------------------
def test_regression_scores_equal_scikit_learn_and_hand_figures() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 5.0])
    s = regression_scores(y, p)
    assert s.mse == pytest.approx(mean_squared_error(y, p)) == pytest.approx(2.25 / 4)
    assert s.mae == pytest.approx(mean_absolute_error(y, p)) == pytest.approx(2.5 / 4)
    assert s.nll == s.mse and s.n_tokens == 4 and math.isnan(s.bpc)
    assert set(s.as_metrics("test")) >= {"test_mse", "test_mae"}
    with pytest.raises(PluginError, match="NaN"):
        regression_scores(y, np.array([1.0, np.nan, 2.0, 3.0]))


# ---- data: the CSV series ------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "fragment"),
    [
        ("x", "row 3, column b: not a number: 'x'"),
        ("nan", "row 3, column b: NaN is refused"),
        ("", "row 3, column b: empty cell"),
        ("inf", "row 3, column b: not a finite number"),
    ],
)
def test_bad_csv_cells_name_the_row_and_column(tmp_path: Path, cell: str, fragment: str) -> None:
    path = write_csv(tmp_path / "series.csv", ["a,b", "1,2", "3,4", f"5,{cell}", "7,8"])
    with pytest.raises(DataError) as info:
        read_series(str(path))
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_first_bad_cell_is_reported_in_row_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "series.csv", ["a,b", "1,2", "3,y", "z,4"])
    with pytest.raises(DataError, match="row 2, column b: not a number: 'y'"):
        read_series(str(path))


def test_series_windows_are_standardised_by_the_train_rows(tmp_path: Path) -> None:
    rows = ["level,other"] + [f"{i * i % 7},{i}" for i in range(20)]
    frame = read_series(str(write_csv(tmp_path / "s.csv", rows)))
    raw = frame.to_numpy()
    data = DataConfig(source="s.csv", context_len=3, splits=(0.6, 0.2, 0.2))
    splits = series_splits(frame, data, None, "s.csv")
    mean, std = raw[:12].mean(axis=0), raw[:12].std(axis=0)
    assert (splits.mean, splits.std) == (pytest.approx(mean[0]), pytest.approx(std[0]))
    assert [len(splits.targets[s]) for s in ("train", "val", "test")] == [9, 4, 4]
    # the first val target is row 12, predicted from rows 9..11 of both columns
    np.testing.assert_allclose(splits.values["val"][0], (raw[9:12] - mean) / std, rtol=1e-6)
    assert splits.targets["val"][0] == raw[12, 0]
    np.testing.assert_array_equal(splits.persistence["test"], raw[15:19, 0])
    other = series_splits(frame, data, "other", "s.csv")
    np.testing.assert_array_equal(other.targets["test"], raw[16:20, 1])
    with pytest.raises(ConfigError, match="no column 'nope'"):
        series_splits(frame, data, "nope", "s.csv")
    with pytest.raises(DataError, match="context_len=30"):
        series_splits(frame, DataConfig(source="s.csv", context_len=30), None, "s.csv")


# ---- data: the adding problem --------------------------------------------------------
def test_adding_marks_one_value_per_half_and_targets_their_sum() -> None:
    text, meta = make_synthetic("adding", {"length": "9", "examples": "200", "seed": "4"})
    examples = parse_examples(text, "adding")
    assert len(examples.values) == 200 and examples.n_features == 2
    assert meta["constant"] == 1.0 and meta["constant_mse"] == pytest.approx(1 / 6)
    for steps, target in zip(examples.values, examples.targets, strict=True):
        assert steps.shape == (9, 2)
        marks = steps[:, 1]
        assert set(np.unique(marks)) <= {0.0, 1.0}
        assert marks[:4].sum() == 1 and marks[4:].sum() == 1
        assert ((steps[:, 0] >= 0) & (steps[:, 0] <= 1)).all()
        assert target == pytest.approx(steps[marks == 1, 0].sum(), abs=1e-9)
    with pytest.raises(ConfigError, match="length") as info:
        make_synthetic("adding", {"length": "1"})
    assert "\n" not in str(info.value)


def test_always_answering_one_scores_a_sixth() -> None:
    _, _, targets = adding_arrays(AddingParams(length=10, examples=40_000, seed=1))
    mse = regression_scores(targets, np.ones_like(targets)).mse
    # Var(x_a + x_b) = 1/6; the sample's standard error is sqrt((1/15 - 1/36) / n) ~ 0.001
    assert mse == pytest.approx(1 / 6, abs=0.005)
    corpus, task = prepared("synthetic:adding?length=6&examples=400&seed=2")
    baseline = task.baselines(corpus)[0]
    assert (baseline.label, baseline.scoring) == ("persistence", "constant 1")
    test_targets = task.data.targets["test"]
    expected = mean_squared_error(test_targets, np.ones_like(test_targets))
    assert baseline.test.mse == pytest.approx(expected)


def test_example_lines_name_the_bad_number() -> None:
    with pytest.raises(DataError, match="f line 2, row 2, column 1: not a number: 'q'"):
        parse_examples("0.1,0;0.2,1\t0.3\n0.1,0;q,1\t0.3\n", "f")
    with pytest.raises(DataError, match="f line 1, target: not a finite number"):
        parse_examples("0.1,0;0.2,1\tnan\n", "f")


# ---- the contract --------------------------------------------------------------------
def test_ngram_is_refused_in_one_line() -> None:
    with pytest.raises(PluginError, match="does not support the regress task") as info:
        get_task("regress").check_plugin(load_plugin("ngram"), "ngram")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", RECURRENT)
def test_summary_values_ignores_the_padding(name: str) -> None:
    model = load_plugin(name).create(5, SMALL, seed=0)
    model.attach_value_input(2)
    model.eval()
    rng = np.random.default_rng(0)
    x, lengths = padded_values([rng.random((3, 2)), rng.random((6, 2))])
    with torch.no_grad():
        both = model.summary_values(torch.from_numpy(x), torch.from_numpy(lengths))
        alone = model.summary_values(torch.from_numpy(x[:1, :3]), torch.tensor([3]))
    torch.testing.assert_close(both[0], alone[0])
    assert both.shape == (2, SMALL["hidden_size"])


def test_value_input_and_head_are_in_the_checkpoint(tmp_path: Path) -> None:
    corpus, task = prepared("synthetic:adding?length=6&examples=200&seed=3")
    model = train_on("gru", corpus, task, epochs=1, params=SMALL)
    state = model.state_dict()
    assert {"value_input.weight", "task_head.weight"} <= set(state)
    path = model.save(tmp_path / "ckpt.pt", vocab=corpus.vocab.tokens, plugin="gru")
    loaded = load_plugin("gru").load(path, vocab=corpus.vocab.tokens)
    assert loaded.value_input is not None and loaded.value_input.in_features == 2
    np.testing.assert_array_equal(
        predict(loaded, task.data, "test"), predict(model, task.data, "test")
    )
    assert task.score(loaded, corpus, "test", False) == task.score(model, corpus, "test", False)


def test_lstm_learns_the_adding_problem() -> None:
    corpus, task = prepared("synthetic:adding?length=10&examples=2000&seed=0")
    model = train_on(
        "lstm", corpus, task, epochs=8, params={"embedding_dim": 16, "hidden_size": 32}
    )
    scores = task.score(model, corpus, "test", False)
    baseline = task.baselines(corpus)[0].test.mse
    assert baseline == pytest.approx(1 / 6, abs=0.03)
    assert scores.mse < 0.1 * baseline, (scores.mse, baseline)


# ---- end to end ----------------------------------------------------------------------
@pytest.mark.slow
def test_cli_regress_end_to_end(prefect_server: str, tracking_uri: str, tmp_path: Path) -> None:
    data = "synthetic:adding?length=6&examples=400"
    common = ["run", "--task", "regress", "--tracking-uri", tracking_uri]
    quiet = ["--set", "train.batch_size=32", "--set", "train.progress=false"]
    result = run_cli(*common, "--data", data, "--models", "lstm,gru,rnn", "--epochs", "1", *quiet)
    assert result.returncode == 0, result.stderr[-3000:]
    for heading in ("MSE", "MAE", "persistence", "constant 1", "lstm", "gru", "rnn"):
        assert heading in result.stdout, result.stdout
    client = MlflowClient(tracking_uri)
    parent_id = next(
        line.split()[-1] for line in result.stdout.splitlines() if "MLflow parent run" in line
    )
    children = client.search_runs(
        [client.get_run(parent_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
    )
    by_name = {r.info.run_name: r for r in children}
    assert set(by_name) == {"lstm", "gru", "rnn"}
    for run in by_name.values():
        metrics = run.data.metrics
        assert {"test_mse", "test_mae"} <= set(metrics)
        assert metrics["test_mae"] > 0
        assert metrics["test_mae"] ** 2 <= metrics["test_mse"] + 1e-12  # Jensen
    parent = client.get_run(parent_id).data.metrics
    assert parent["persistence_test_mse"] == pytest.approx(1 / 6, abs=0.08)

    refused = run_cli(*common, "--data", data, "--models", "ngram")
    assert_one_line_error(refused, "ngram", "regress")
    bad = write_csv(tmp_path / "series.csv", ["a,b"] + [f"{i},1" for i in range(60)])
    bad.write_text(bad.read_text().replace("\n41,1\n", "\noops,1\n"), encoding="utf-8")
    broken = run_cli(*common, "--data", str(bad), "--models", "lstm")
    assert_one_line_error(broken, str(bad), "row 42, column a: not a number: 'oops'")
