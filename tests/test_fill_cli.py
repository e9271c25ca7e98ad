"""``seqlab fill MODEL --text TEXT --at N``: fill in the blank ("I am ___ hungry") with
a two-sided n-gram and a left-only LSTM saved as real checkpoints, and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline_core.config import DataConfig
from pipeline_core.contract import FitData
from pipeline_core.generation import encode_prompt
from pipeline_core.tasks.fill_blank import blank_contexts
from pipeline_core.vectorize import vectorize
from plugins.lstm import LSTMModel
from plugins.ngram import NGramModel
from tests.conftest import WONDERLAND, assert_one_line_error
from tests.test_generate_cli import cli

DATA = DataConfig(source=str(WONDERLAND), clean="none", context_len=6)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 5-gram fitted on a slice of wonderland and an untrained LSTM, each saved with
    its data config as a run would save it."""
    text = WONDERLAND.read_text(encoding="utf-8-sig")[:60_000].lower()
    corpus = vectorize(text, DATA)
    folder = tmp_path_factory.mktemp("fill")
    extra = {"data": DATA.model_dump(mode="json"), "scoring": "windows"}
    ngram = NGramModel(len(corpus.vocab), {"order": 5})
    ngram.fit(FitData(corpus.train, corpus.val, len(corpus.vocab), DATA.context_len))
    lstm = LSTMModel.create(len(corpus.vocab), {"hidden_size": 8, "embedding_dim": 4})
    lstm.mark_fitted()
    return {
        name: model.save(folder / f"{name}.pt", corpus.vocab.tokens, name, extra)
        for name, model in (("ngram", ngram), ("lstm", lstm))
    }


def test_a_two_sided_model_fills_the_blank_from_both_sides(
    checkpoints: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    text = "alice was beginning to get very tired"
    at = text.index("tired") + 2  # the 'r'
    out = json.loads(
        cli(
            capfd, "fill", str(checkpoints["ngram"]), "--text", text, "--at", str(at), "--json"
        ).stdout
    )
    assert out["context"] == "left+right"
    assert out["candidates"][0]["token"] == "r" and out["filled"] == text
    probs = [c["p"] for c in out["candidates"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    # the left context alone cannot know it: "ti" goes on many ways
    left_only = NGramModel.load(checkpoints["ngram"])
    ids, _ = encode_prompt(text, _vocab(checkpoints["ngram"]), "char")
    left, _ = blank_contexts(ids, at, DATA.context_len)
    assert np.exp(left_only.log_proba(left)[0]).max() < out["candidates"][0]["p"]


def test_a_next_token_model_fills_from_the_left_only(
    checkpoints: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    result = cli(capfd, "fill", str(checkpoints["lstm"]), "--text", "i am very hungry", "--at", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "context: left only"
    lines = result.stdout.splitlines()
    assert [line.count("\t") for line in lines[1:6]] == [1] * 5  # 5 candidates, then
    assert lines[6].startswith("filled: i am ")  # the text with the likeliest one


@pytest.mark.parametrize(
    ("model", "args", "fragment"),
    [
        ("ngram", ["--at", "99"], "blank position 99 is outside the text of 16 tokens"),
        ("ngram", ["--at", "-1"], "blank position -1 is outside"),
        ("lstm", ["--at", "0"], "no left context"),
        ("ngram", ["--at", "3", "--top-k", "0"], "--top-k: must be >= 1"),
    ],
)
def test_bad_blank_positions_are_one_line_errors(
    checkpoints: dict[str, Path],
    capfd: pytest.CaptureFixture[str],
    model: str,
    args: list[str],
    fragment: str,
) -> None:
    result = cli(capfd, "fill", str(checkpoints[model]), "--text", "i am very hungry", *args)
    assert_one_line_error(result, fragment)


def _vocab(path: Path):  # type: ignore[no-untyped-def]
    from pipeline_core.model_uri import resolve_model

    return resolve_model(path).vocab
