"""The classify task: sequence -> label through the contract's summary and task head."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.metrics import accuracy_score, f1_score, log_loss

from pipeline_core.config import DataConfig, TrainConfig
from pipeline_core.errors import ConfigError, DataError, PluginError
from pipeline_core.experiment import fit_data
from pipeline_core.labelled import folder_examples, read_examples, tsv_examples
from pipeline_core.registry import load_plugin
from pipeline_core.sources import load_documents
from pipeline_core.synthetic import make_synthetic
from pipeline_core.tasks import get_task
from pipeline_core.tasks.classify import (
    ClassifyTask,
    label_scores,
    majority_proba,
    padded,
    predict_proba,
)
from pipeline_core.training import fit_model
from pipeline_core.vectorize import EncodedCorpus, corpus_text, vectorize
from tests.conftest import assert_one_line_error, run_cli

RECURRENT = ["rnn", "lstm", "gru", "birnn", "crnn"]
SMALL = {"embedding_dim": 8, "hidden_size": 24}


def corpus_of(source: str) -> EncodedCorpus:
    docs = load_documents(source)
    return vectorize(corpus_text(docs["text"].tolist()), DataConfig(source=source, clean="none"))


def prepared(source: str) -> tuple[EncodedCorpus, ClassifyTask]:
    corpus = corpus_of(source)
    task = get_task("classify")
    assert isinstance(task, ClassifyTask)
    task.prepare(corpus)
    return corpus, task


def train_on(name: str, corpus: EncodedCorpus, task: ClassifyTask, epochs: int) -> torch.nn.Module:
    model = load_plugin(name).create(len(corpus.vocab), SMALL, seed=0)
    settings = TrainConfig(epochs=epochs, batch_size=16, lr=0.03, progress=False, num_threads=1)
    fit_model(model, fit_data(corpus), settings, task=task)
    return model


# ---- metrics -------------------------------------------------------------------------
def test_label_scores_equal_scikit_learn_and_hand_figures() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.1, 0.6, 0.3],
            [0.2, 0.2, 0.6],
            [0.5, 0.1, 0.4],  # wrong: predicts 0
            [0.3, 0.3, 0.4],  # wrong: predicts 2
            [0.4, 0.4, 0.2],  # tie -> lower id 0, right
        ]
    )
    s = label_scores(y, proba, n_chars=17)
    pred = proba.argmax(axis=1)
    assert s.accuracy == pytest.approx(accuracy_score(y, pred)) == pytest.approx(4 / 6)
    assert s.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"))
    hand = -np.mean(np.log(proba[np.arange(6), y]))
    assert s.log_loss == pytest.approx(log_loss(y, proba, labels=[0, 1, 2])) == pytest.approx(hand)
    assert s.nll == s.log_loss and s.n_tokens == 6 and math.isnan(s.bpc)


def test_label_scores_count_a_label_absent_from_the_split() -> None:
    y = np.array([0, 0, 1])
    proba = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1]])
    s = label_scores(y, proba)
    expected = log_loss(y, proba, labels=[0, 1, 2])
    assert s.log_loss == pytest.approx(expected)
    f1 = f1_score(y, proba.argmax(1), labels=[0, 1, 2], average="macro", zero_division=0)
    assert s.macro_f1 == pytest.approx(f1)


def test_majority_baseline_is_the_smoothed_train_prior() -> None:
    rows = majority_proba(np.array([1, 1, 1, 0]), 3, 2)
    assert rows.shape == (2, 3)
    np.testing.assert_allclose(rows[0], [2 / 7, 4 / 7, 1 / 7])


# ---- data ----------------------------------------------------------------------------
def test_tsv_and_folders_give_the_same_examples(tmp_path: Path) -> None:
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("good day\tpos\n\nbad\tday\tneg\n", encoding="utf-8")
    got = [(e.text, e.label) for e in read_examples(str(tsv))]
    assert got == [("good day", "pos"), ("bad\tday", "neg")]
    root = tmp_path / "folders"
    for label, texts in {"neg": ["bad day\n"], "pos": ["good day", "fine"]}.items():
        (root / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / label / f"{i}.txt").write_text(text, encoding="utf-8")
    got = sorted((e.text, e.label) for e in folder_examples(root))
    assert got == [("bad day", "neg"), ("fine", "pos"), ("good day", "pos")]


def test_splits_are_per_example_and_unseen_characters_are_unk() -> None:
    corpus, task = prepared("synthetic:parity?length=5&examples=60&seed=3")
    sizes = {k: len(v) for k, v in task.data.ids.items()}
    assert sizes == {"train": 48, "val": 6, "test": 6}
    assert task.data.names == ("even", "odd")
    for split in ("train", "val", "test"):
        for ids, label in zip(task.data.ids[split], task.data.labels[split], strict=True):
            bits = [corpus.vocab.tokens[i] for i in ids]
            assert len(bits) == 5 and set(bits) <= {"0", "1"}
            assert label == bits.count("1") % 2  # odd = 1
    texts = ["ab", "xa"]
    from pipeline_core.labelled import Example
    from pipeline_core.tasks.classify import encode_examples

    examples = [Example(t, lbl, "") for t, lbl in zip(texts, ["p", "q"], strict=True)]
    parts = {"train": np.array([0]), "val": np.array([1]), "test": np.array([1])}
    enc = encode_examples(examples, parts, corpus_of("synthetic:markov?length=2000"))
    assert enc.ids["val"][0][0] == 0  # "x" is in no training example: <unk>


def test_parity_source_labels_are_parity_and_bad_sizes_are_refused() -> None:
    text, meta = make_synthetic("parity", {"length": "6", "examples": "50", "seed": "1"})
    lines = text.splitlines()
    assert len(lines) == 50 and meta["optimum"] == {"accuracy": 1.0, "log_loss": 0.0}
    for line in lines:
        bits, label = line.split("\t")
        assert len(bits) == 6 and label == ("odd" if bits.count("1") % 2 else "even")
    with pytest.raises(ConfigError, match="length"):
        make_synthetic("parity", {"length": "0"})
    with pytest.raises(ConfigError, match="over the"):
        make_synthetic("parity", {"length": "4000", "examples": "1000000"})


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("a\tx\nno label here\n", "line 2: no label"),
        ("a\tx\nb\t  \n", "line 2: no label"),
        ("a\tx\n\ty\n", "line 2: empty text"),
    ],
)
def test_bad_tsv_lines_name_the_file_and_line(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=fragment) as info:
        read_examples(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_one_label_and_empty_folders_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "one.tsv"
    path.write_text("a\tx\nb\tx\n", encoding="utf-8")
    with pytest.raises(DataError, match="only 1 distinct label"):
        read_examples(str(path))
    root = tmp_path / "folders"
    (root / "pos").mkdir(parents=True)
    (root / "pos" / "1.txt").write_text("good", encoding="utf-8")
    (root / "neg").mkdir()
    with pytest.raises(DataError, match="empty label folder") as info:
        read_examples(str(root))
    assert str(root / "neg") in str(info.value)
    assert tsv_examples("", "x") == []


# ---- the contract --------------------------------------------------------------------
def test_ngram_is_refused_in_one_line() -> None:
    with pytest.raises(PluginError, match="does not support the classify task") as info:
        get_task("classify").check_plugin(load_plugin("ngram"), "ngram")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", RECURRENT)
def test_summary_ignores_the_padding(name: str) -> None:
    model = load_plugin(name).create(7, SMALL, seed=0)
    model.eval()
    rows = [np.array([1, 2, 3]), np.array([4, 5, 6, 1, 2, 3])]
    x, lengths = padded(rows)
    with torch.no_grad():
        both = model.summary(torch.from_numpy(x), torch.from_numpy(lengths))
        alone = model.summary(torch.from_numpy(x[:1, :3]), torch.tensor([3]))
    torch.testing.assert_close(both[0], alone[0])
    assert both.shape[0] == 2


def test_head_is_in_the_checkpoint_and_reloads(tmp_path: Path) -> None:
    corpus, task = prepared("synthetic:parity?length=4&examples=80&seed=2")
    model = train_on("gru", corpus, task, epochs=1)
    assert "task_head.weight" in model.state_dict()
    path = model.save(tmp_path / "ckpt.pt", vocab=corpus.vocab.tokens, plugin="gru")
    loaded = load_plugin("gru").load(path, vocab=corpus.vocab.tokens)
    assert loaded.task_head is not None and loaded.task_head.out_features == 2
    rows = task.data.ids["test"]
    np.testing.assert_array_equal(predict_proba(loaded, rows), predict_proba(model, rows))
    assert task.score(loaded, corpus, "test", False) == task.score(model, corpus, "test", False)


@pytest.mark.parametrize("name", RECURRENT)
def test_every_recurrent_plugin_learns_parity(name: str) -> None:
    corpus, task = prepared("synthetic:parity?length=4&examples=160&seed=1")
    model = train_on(name, corpus, task, epochs=12)
    scores = task.score(model, corpus, "test", False)
    assert scores.accuracy == 1.0 and scores.macro_f1 == 1.0
    assert scores.log_loss < 0.05
    baseline = task.baselines(corpus)[0]
    assert baseline.label == "majority" and baseline.test.log_loss > 0.5


# ---- end to end ----------------------------------------------------------------------
def _labels_tsv(path: Path, n: int = 160) -> Path:
    """Separable by eye: label a if the text holds more a's than b's."""
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(n):
        k = int(rng.integers(3, 8))
        text = "".join(
            rng.choice(list("ab"), k, p=[0.8, 0.2] if rng.random() < 0.5 else [0.2, 0.8])
        )
        lines.append(f"{text}\t{'a' if text.count('a') > text.count('b') else 'b'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_cli_classify_end_to_end(prefect_server: str, tracking_uri: str, tmp_path: Path) -> None:
    data = _labels_tsv(tmp_path / "labels.tsv")
    common = ["run", "--task", "classify", "--data", str(data), "--clean", "none"]
    result = run_cli(
        *common,
        "--models",
        "lstm,gru",
        "--epochs",
        "2",
        "--tracking-uri",
        tracking_uri,
        "--set",
        "train.batch_size=16",
        "--set",
        "train.progress=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for heading in ("log-loss", "accuracy", "F1", "majority", "lstm", "gru"):
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
    for name in ("lstm", "gru"):
        metrics = by_name[name].data.metrics
        assert {"test_accuracy", "test_macro_f1", "test_log_loss"} <= set(metrics)
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_log_loss"] > 0
    ckpt = client.download_artifacts(
        by_name["lstm"].info.run_id, "model/checkpoint.pt", str(tmp_path)
    )
    model = load_plugin("lstm").load(ckpt)
    assert model.task_head is not None and model.task_head.out_features == 2

    refused = run_cli(*common, "--models", "ngram", "--tracking-uri", tracking_uri)
    assert_one_line_error(refused, "ngram", "classify")
    bad = tmp_path / "bad.tsv"
    bad.write_text("abba\ta\n" * 30 + "no label\n", encoding="utf-8")
    broken = run_cli(
        "run", "--task", "classify", "--data", str(bad), "--models", "lstm",
        "--tracking-uri", tracking_uri,
    )  # fmt: skip
    assert_one_line_error(broken, str(bad), "line 31")
