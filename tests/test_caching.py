"""The vectorized-data cache: reused for the same text and data config (across plugins
and runs), recomputed when either changes, and on ``--refresh`` (execution.refresh).

Reuse is proven by counting calls of :func:`pipeline_core.vectorize.vectorize` and by
the cache entry's inode, never by timing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipeline_core.vectorize as vectorize_module
from pipeline_core.config import DataConfig, RunConfig, validate_model
from pipeline_core.experiment import encode
from pipeline_core.vectorize import EncodedCorpus, corpus_key, vectorize_cached

TEXT = "the cat sat on the mat and the dog sat on the log. " * 20


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """A fresh cache folder and a record of every real vectorization."""
    monkeypatch.setenv("SEQLAB_CACHE_DIR", str(tmp_path / "cache"))
    real = vectorize_module.vectorize
    seen: list[str] = []

    def counting(text: str, config: DataConfig, windows: bool = True) -> EncodedCorpus:
        seen.append(text)
        return real(text, config, windows)

    monkeypatch.setattr(vectorize_module, "vectorize", counting)
    return seen


def entry(text: str, config: DataConfig) -> Path:
    return vectorize_module.cache_root() / "vectorized" / corpus_key(text, config)


def test_same_inputs_hit_changes_miss_refresh_recomputes(calls: list[str]) -> None:
    config = DataConfig(context_len=4)
    first, hit = vectorize_cached(TEXT, config)
    assert (hit, first.cache, len(calls)) == (False, "miss", 1)
    ids_file = entry(TEXT, config) / "ids.npy"
    inode = ids_file.stat().st_ino

    second, hit = vectorize_cached(TEXT, config)
    assert (hit, second.cache, len(calls)) == (True, "hit", 1)  # not recomputed
    assert ids_file.stat().st_ino == inode  # nor rewritten
    identity = {f.name for f in dataclasses.fields(EncodedCorpus) if f.compare}
    assert "cache" not in identity  # the flag is not part of the corpus's identity
    assert np.array_equal(second.ids, first.ids) and second.vocab == first.vocab

    _, hit = vectorize_cached(TEXT + "x", config)  # other text
    assert (hit, len(calls)) == (False, 2)
    _, hit = vectorize_cached(TEXT, DataConfig(context_len=4, level="word"))  # other config
    assert (hit, len(calls)) == (False, 3)
    _, hit = vectorize_cached(TEXT, DataConfig(context_len=4, min_freq=2))
    assert (hit, len(calls)) == (False, 4)

    refreshed, hit = vectorize_cached(TEXT, config, refresh=True)
    assert (hit, refreshed.cache, len(calls)) == (False, "refreshed", 5)
    assert ids_file.stat().st_ino != inode  # the entry was overwritten
    assert np.array_equal(refreshed.ids, first.ids)
    again, hit = vectorize_cached(TEXT, config)  # and the new entry is reused
    assert (hit, again.cache, len(calls)) == (True, "hit", 5)
    leftovers = [p for p in ids_file.parents[1].iterdir() if p.name.startswith(".")]
    assert not leftovers  # no temporary or replaced entry is left behind


def test_a_damaged_entry_is_rebuilt_once(calls: list[str]) -> None:
    config = DataConfig(context_len=4)
    vectorize_cached(TEXT, config)
    (entry(TEXT, config) / "ids.npy").write_bytes(b"not numpy")
    _, hit = vectorize_cached(TEXT, config)
    assert (hit, len(calls)) == (False, 2)
    _, hit = vectorize_cached(TEXT, config)  # replaced, so reused from now on
    assert (hit, len(calls)) == (True, 2)


def test_encode_threads_refresh(calls: list[str]) -> None:
    docs = pd.DataFrame({"text": [TEXT, TEXT.upper()]})
    data = DataConfig(context_len=4)
    assert encode(docs, data).cache == "miss"
    assert encode(docs, data).cache == "hit"
    assert encode(docs, data, refresh=True).cache == "refreshed"
    assert len(calls) == 2


def flow_config(tracking_uri: str, refresh: bool = False) -> RunConfig:
    return validate_model(
        RunConfig,
        {
            "data": {"source": "synthetic:markov?length=3000", "clean": "none", "context_len": 4},
            "models": [{"plugin": "ngram", "params": {"order": 2}}],
            "train": {"progress": False},
            "tracking": {"tracking_uri": tracking_uri, "sample_len": 10},
            "execution": {"refresh": refresh},
            "registry": {"enabled": False},
        },
    )


@pytest.mark.slow
def test_compare_flow_reuses_the_cache(
    prefect_server: str, tracking_uri: str, calls: list[str]
) -> None:
    """Run twice with the same inputs: vectorized once, the parent runs tagged miss then
    hit, identical leaderboards; execution.refresh (``--refresh``) recomputes."""
    from mlflow import MlflowClient

    from flows.compare import compare_flow

    client = MlflowClient(tracking_uri)
    tags, boards = [], []
    for refresh in (False, False, True):
        result = compare_flow(flow_config(tracking_uri, refresh))
        tags.append(client.get_run(result.parent_run_id).data.tags["seqlab.vectorize_cache"])
        boards.append(result.leaderboard["test_bpc"].tolist())
    assert tags == ["miss", "hit", "refreshed"]
    assert len(calls) == 2  # the second run did not vectorize
    assert boards[0] == boards[1] == boards[2]
