"""Serving and scoring classify and regress models: a child run's pyfunc model answers
the task it was trained for (a label with its probabilities, a number), agreeing with
the task's own in-process prediction; ``seqlab score`` prints the very figures the
comparison logged; a malformed row is a 400 with one line."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_core.model_uri import resolve_model
from tests.comparisons import compare_in_process
from tests.conftest import assert_one_line_error, run_cli

PARITY = "synthetic:parity?length=4&examples=120&seed=2"
ADDING = "synthetic:adding?length=4&examples=240&seed=1"
SERIES_ROWS = 160
CONTEXT_LEN = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Trained:
    """One comparison: its child runs by model label, and the task bound to its data."""

    run_ids: dict[str, str]
    task: Any
    source: str


@dataclass(frozen=True)
class Store:
    uri: str
    folder: Path
    classify: Trained
    adding: Trained
    series: Trained


def series_csv(path: Path) -> Path:
    """Two columns: a noisy wave (the target) and a slow ramp in other units."""
    rng = np.random.default_rng(0)
    t = np.arange(SERIES_ROWS)
    wave = 10 + 3 * np.sin(t / 4) + rng.normal(0, 0.1, SERIES_ROWS)
    ramp = 100 + 0.5 * t
    lines = ["wave,ramp"] + [f"{w:.4f},{r:.2f}" for w, r in zip(wave, ramp, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def compare(uri: str, task: str, source: str, models: list[str], batch: int) -> Trained:
    """One comparison trained tiny through the project's stages (as ``seqlab run``
    does, without Prefect)."""
    from pipeline_core.config import load_run_config

    config = load_run_config(
        None,
        {
            "task": task,
            "data.source": source,
            "data.clean": "none",
            "data.context_len": CONTEXT_LEN,
            "models": [
                {"plugin": m, "params": {"embedding_dim": 8, "hidden_size": 16}} for m in models
            ],
            "train.epochs": 2,
            "train.batch_size": batch,
            "train.lr": 0.03,
            "train.progress": False,
            "train.num_threads": 1,
            "tracking.tracking_uri": uri,
            "tracking.samples": 0,
            "tracking.gradient_flow": False,
        },
    )
    done = compare_in_process(config)
    done.task.prepare(done.corpus)
    return Trained(done.run_ids, done.task, source)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    folder = tmp_path_factory.mktemp("task-serving")
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        classify = compare(uri, "classify", PARITY, ["lstm", "gru"], 16)
        adding = compare(uri, "regress", ADDING, ["lstm"], 16)
        series = compare(uri, "regress", str(series_csv(folder / "series.csv")), ["gru"], 16)
    finally:
        torch.set_num_threads(before)
    return Store(uri, folder, classify, adding, series)


@pytest.fixture
def tracking_env(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """``runs:/`` URIs resolve against the store."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    mlflow.set_tracking_uri(store.uri)
    return store


def pyfunc(uri: str) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri)


def run_metrics(store: Store, run_id: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient(store.uri).get_run(run_id).data.metrics)


def parity_texts(split: str) -> list[str]:
    """The split's example texts, as the classify task split them (default seed 0)."""
    from pipeline_core.labelled import read_examples, split_examples

    examples = read_examples(PARITY)
    parts = split_examples(len(examples), (0.8, 0.1, 0.1), 0)
    return [examples[int(i)].text for i in parts[split]]


def adding_rows(split: str) -> tuple[list[list[list[float]]], np.ndarray]:
    """The split's examples as request values (original numbers) and their targets."""
    from pipeline_core.labelled import split_examples
    from pipeline_core.numeric_examples import parse_examples
    from pipeline_core.sources import load_documents

    docs = load_documents(ADDING)
    parsed = parse_examples(str(docs["text"].iloc[0]), "adding")
    parts = split_examples(len(parsed.values), (0.8, 0.1, 0.1), 0)
    rows = [parsed.values[int(i)].tolist() for i in parts[split]]
    return rows, parsed.targets[parts[split]]


def series_windows(source: str, split: str) -> tuple[list[list[list[float]]], np.ndarray]:
    """The split's windows of raw CSV rows (every column) and the next wave values."""
    from pipeline_core.vectorize import split_bounds

    raw = pd.read_csv(source).to_numpy(np.float64)
    b0, b1 = split_bounds(len(raw), (0.8, 0.1, 0.1))
    lo, hi = {"train": (CONTEXT_LEN, b0), "val": (b0, b1), "test": (b1, len(raw))}[split]
    rows = range(max(lo, CONTEXT_LEN), hi)
    return [raw[r - CONTEXT_LEN : r].tolist() for r in rows], raw[list(rows), 0]


# ---- the model folder ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("which", "label", "inputs", "outputs"),
    [
        ("classify", "lstm", {"text"}, {"label", "probabilities"}),
        ("adding", "lstm", {"values"}, {"prediction"}),
        ("series", "gru", {"values"}, {"prediction"}),
    ],
)
def test_signature_input_example_and_checkpoint_follow_the_task(
    store: Store, which: str, label: str, inputs: set[str], outputs: set[str]
) -> None:
    from mlflow.models import Model

    from pipeline_core.contract import read_checkpoint
    from pipeline_core.tracking import fetch_run_artifact

    trained: Trained = getattr(store, which)
    run_id = trained.run_ids[label]
    folder = fetch_run_artifact(run_id, "model", store.folder / f"dl-{which}", store.uri).path
    meta = Model.load(str(folder / "MLmodel"))
    assert meta.signature is not None
    assert set(meta.signature.inputs.input_names()) == inputs
    assert set(meta.signature.outputs.input_names()) == outputs
    assert meta.metadata is not None and meta.metadata["seqlab"]["task"] == trained.task.name
    example = json.loads((folder / "serving_input_example.json").read_text())
    assert set(json.dumps(example).split('"')) >= inputs, example
    assert "prompt" not in json.dumps(example)
    record = read_checkpoint(folder / "checkpoint.pt")["extra"]["task"]
    assert record["name"] == trained.task.name
    if which == "classify":
        assert record["labels"] == ["even", "odd"] and set(record["chars"]) == {"0", "1"}
    elif which == "series":
        assert record["window"] == CONTEXT_LEN and record["columns"] == ["wave", "ramp"]
        assert record["input_mean"][1] > 100  # the ramp's train mean, in its own units
    else:
        assert record["window"] is None and record["n_features"] == 2


# ---- predictions in process ----------------------------------------------------------
@pytest.mark.parametrize("label", ["lstm", "gru"])
def test_classify_pyfunc_agrees_with_the_task_in_process(tracking_env: Store, label: str) -> None:
    from pipeline_core.tasks.classify import predict_proba

    trained = tracking_env.classify
    uri = f"runs:/{trained.run_ids[label]}/model"
    model = pyfunc(uri)
    loaded = resolve_model(uri, tracking_env.uri)
    texts = parity_texts("test")
    got = model.predict(pd.DataFrame({"text": texts}))
    assert list(got.columns) == ["label", "probabilities"]
    want = predict_proba(loaded.model, trained.task.data.ids["test"])
    names = trained.task.data.names
    for row, p in zip(got.to_dict(orient="records"), want, strict=True):
        assert row["label"] == names[int(p.argmax())]
        assert list(row["probabilities"]) == ["even", "odd"]
        np.testing.assert_allclose(list(row["probabilities"].values()), p, rtol=1e-9, atol=0)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
    # the same list of dicts; a character no training example holds reads as <unk> (id 0)
    one, zero = loaded.vocab.id_of("1"), loaded.vocab.id_of("0")
    odd = model.predict([{"text": "1x0"}])
    p = predict_proba(loaded.model, [np.array([one, 0, zero])])[0]
    np.testing.assert_allclose(list(odd.loc[0, "probabilities"].values()), p, rtol=1e-9)
    assert not np.allclose(p, predict_proba(loaded.model, [np.array([one, one, zero])])[0])


@pytest.mark.parametrize("which", ["adding", "series"])
def test_regress_pyfunc_agrees_with_the_task_in_process(tracking_env: Store, which: str) -> None:
    from pipeline_core.tasks.regress import predict

    trained: Trained = getattr(tracking_env, which)
    (label,) = trained.run_ids
    uri = f"runs:/{trained.run_ids[label]}/model"
    model = pyfunc(uri)
    loaded = resolve_model(uri, tracking_env.uri)
    if which == "adding":
        rows, targets = adding_rows("test")
    else:
        rows, targets = series_windows(trained.source, "test")
    np.testing.assert_array_equal(targets, trained.task.data.targets["test"])
    got = model.predict(pd.DataFrame({"values": rows}))
    assert list(got.columns) == ["prediction"]
    want = predict(loaded.model, trained.task.data, "test")
    np.testing.assert_allclose(got["prediction"].to_numpy(), want, rtol=1e-6, atol=1e-6)
    if which == "series":  # in the wave's units, not standardised
        assert abs(float(np.mean(got["prediction"])) - 10) < 5
    mse = float(np.mean((got["prediction"].to_numpy() - targets) ** 2))
    assert mse == pytest.approx(run_metrics(tracking_env, trained.run_ids[label])["test_mse"])
    again = model.predict([{"values": rows[0]}])  # one row alone, as a list of dicts
    assert again.loc[0, "prediction"] == pytest.approx(want[0], rel=1e-6, abs=1e-6)


# ---- seqlab score ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("which", "label", "split", "figures"),
    [
        ("classify", "gru", "test", {"accuracy", "macro_f1", "log_loss"}),
        ("classify", "lstm", "val", {"accuracy", "macro_f1", "log_loss"}),
        ("adding", "lstm", "test", {"mse", "mae"}),
        ("series", "gru", "test", {"mse", "mae"}),
    ],
)
def test_seqlab_score_prints_the_logged_metrics(
    store: Store, which: str, label: str, split: str, figures: set[str]
) -> None:
    trained: Trained = getattr(store, which)
    run_id = trained.run_ids[label]
    args = ["--split", split] if split != "test" else []
    result = run_cli("score", f"runs:/{run_id}/model", "--tracking-uri", store.uri, "--json", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    logged = {k: v for k, v in run_metrics(store, run_id).items() if k.startswith(f"{split}_")}
    assert {f"{split}_{f}" for f in figures} <= set(printed)
    assert "test_bpc" not in printed and f"{split}_bpc" not in printed
    for key, value in logged.items():
        assert printed[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert set(logged) == {k for k in printed if k.startswith(f"{split}_")}
    plain = run_cli("score", f"runs:/{run_id}/model", "--tracking-uri", store.uri, *args)
    first = sorted(figures)[0]
    assert f"{split}_{first}: {printed[f'{split}_{first}']}" in plain.stdout


def test_score_text_of_a_classify_model_is_refused_in_one_line(store: Store) -> None:
    uri = f"runs:/{store.classify.run_ids['gru']}/model"
    refused = run_cli("score", uri, "--tracking-uri", store.uri, "--text", "0110")
    assert_one_line_error(refused, "trained for the classify task", "score a split")


def test_generate_and_fill_refuse_a_model_of_examples_in_one_line(store: Store) -> None:
    def uri(model: str) -> str:
        runs = getattr(store, model).run_ids
        return f"runs:/{runs[sorted(runs)[0]]}/model"

    text = run_cli("generate", uri("classify"), "--tracking-uri", store.uri, "--prompt", "0110")
    assert_one_line_error(text, "generate:", "trained for the classify task")
    blank = run_cli(
        "fill", uri("adding"), "--tracking-uri", store.uri, "--text", "0110", "--at", "1"
    )
    assert_one_line_error(blank, "fill:", "trained for the regress task")


def test_a_checkpoint_with_a_head_but_no_task_is_refused_in_one_line(
    store: Store, tmp_path: Path
) -> None:
    from pipeline_core.contract import read_checkpoint
    from pipeline_core.errors import DataError
    from pipeline_core.experiment import score_checkpoint
    from pipeline_core.tracking import fetch_run_artifact

    run_id = store.classify.run_ids["gru"]
    folder = fetch_run_artifact(run_id, "model", tmp_path / "dl", store.uri).path
    payload = read_checkpoint(folder / "checkpoint.pt")
    payload["extra"] = {k: v for k, v in payload["extra"].items() if k != "task"}
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    with pytest.raises(DataError, match="records no task") as info:
        score_checkpoint(old, {})
    assert "\n" not in str(info.value)
    refused = run_cli("score", str(old))
    assert_one_line_error(refused, "task head but records no task")


def test_score_refuses_data_with_other_labels(store: Store, tmp_path: Path) -> None:
    from pipeline_core.errors import DataError
    from pipeline_core.experiment import score_checkpoint
    from pipeline_core.tracking import fetch_run_artifact

    run_id = store.classify.run_ids["gru"]
    folder = fetch_run_artifact(run_id, "model", tmp_path / "dl", store.uri).path
    other = tmp_path / "other.tsv"
    # the same characters (so the same vocabulary) under other labels
    other.write_text("".join(f"{b:04b}\t{'even' if b < 8 else 'nod'}\n" for b in range(16)) * 8)
    with pytest.raises(DataError, match="trained on labels even, odd; the data has even, nod"):
        score_checkpoint(folder / "checkpoint.pt", {"source": str(other)})


# ---- malformed rows ----------------------------------------------------------------------
BAD: dict[str, tuple[str, list[dict[str, Any]], str]] = {
    "classify-no-text": ("classify", [{"prompt": "01"}], "no text given; a classify"),
    "classify-missing": ("classify", [{"text": "01"}, {"text": None}], "row 1: no text given"),
    "classify-number": ("classify", [{"text": 5}], "row 0: text must be a string (got 5)"),
    "classify-empty": ("classify", [{"text": "0"}, {"text": ""}], "row 1: text is empty"),
    "adding-missing": ("adding", [{"text": "0.5,1"}], "no values given; a regress model"),
    "adding-not-a-list": ("adding", [{"values": "0.5,1;0.2,0"}], "values must be a list"),
    "adding-empty": ("adding", [{"values": []}], "values is empty"),
    "adding-width": ("adding", [{"values": [[0.5, 1, 2]]}], "each a list of 2 numbers"),
    "adding-word": ("adding", [{"values": [[0.5, "x"]]}], "step 1, feature 2: not a number"),
    "adding-bool": ("adding", [{"values": [[0.5, True]]}], "feature 2: not a number"),
    "adding-nan": ("adding", [{"values": [[0.5, 1], [math.nan, 0]]}], "step 2, feature 1"),
    "series-short": ("series", [{"values": [[1.0, 2.0]]}], "values has 1 rows"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_malformed_row_is_a_400_with_one_line(tracking_env: Store, case: str) -> None:
    """Through the scoring server's own request handler, in this process."""
    from tests.test_serving import refusal

    which, rows, fragment = BAD[case]
    trained: Trained = getattr(tracking_env, which)
    model = pyfunc(f"runs:/{next(iter(trained.run_ids.values()))}/model")
    message = refusal(model, rows)
    assert fragment in message and "\n" not in message, message
    if "nan" in case:
        assert "NaN and inf are refused" in message


# ---- the real server ---------------------------------------------------------------------
@pytest.mark.slow
def test_mlflow_models_serve_labels_text(store: Store, tmp_path: Path) -> None:
    """One request to a real ``mlflow models serve`` of the classify model (started on
    127.0.0.1 and stopped by :func:`tests.test_serving.serving`)."""
    from tests.test_serving import post, serving

    uri = f"runs:/{store.classify.run_ids['lstm']}/model"
    texts = parity_texts("test")[:4]
    want = pyfunc(uri).predict([{"text": t} for t in texts]).to_dict(orient="records")
    with serving(uri, store.uri, tmp_path) as port:
        status, body = post(port, {"dataframe_records": [{"text": t} for t in texts]})
    assert status == 200, body
    got = json.loads(body)["predictions"]
    assert [g["label"] for g in got] == [w["label"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["probabilities"] == pytest.approx(w["probabilities"], rel=1e-9)
