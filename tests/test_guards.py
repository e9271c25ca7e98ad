"""Resource guards: capped word vocabularies say how much became ``<unk>`` (and one
that is all ``<unk>`` is refused), batches the data cannot fill and synthetic sources
too large to build are refused up front with the numbers, and stores and output files
that cannot be written are one line before anything runs."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline_core import synthetic
from pipeline_core.config import DataConfig, ModelSpec, TrainConfig
from pipeline_core.errors import ConfigError, DataError
from pipeline_core.experiment import ResolvedModel, check_fits, resolve_models
from pipeline_core.synthetic import MarkovSource, check_markov, make_synthetic
from pipeline_core.tracking import prepare_store, resolve_tracking_uri
from pipeline_core.vectorize import EncodedCorpus, vectorize, vectorize_cached, warn_unk
from tests.conftest import run_cli

WORDS = (
    "the cat sat on the mat and the dog sat on the log while a bird sang in the old tree "
) * 30


# --------------------------------------------------------------------------- <unk>


def _unk_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("seqlab") and r.levelno == logging.WARNING
    ]


def test_max_vocab_caps_a_word_vocabulary_and_warns_with_the_unk_share(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    config = DataConfig(level="word", max_vocab=3, context_len=4)
    with caplog.at_level(logging.INFO, logger="seqlab"):
        corpus, _ = vectorize_cached(WORDS, config, cache_dir=tmp_path)
    assert len(corpus.vocab.symbols) == 3  # "the", "on", "sat": the most frequent
    share = float(np.mean(corpus.ids == 0))
    assert 0.5 < share < 1
    (message,) = _unk_warnings(caplog)
    assert f"{share:.1%}" in message and "<unk>" in message and "max_vocab=3" in message
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="seqlab"):  # from the cache: said again
        vectorize_cached(WORDS, config, cache_dir=tmp_path)
    assert len(_unk_warnings(caplog)) == 1


def test_more_than_half_unk_warns_whatever_the_cause(caplog: pytest.LogCaptureFixture) -> None:
    few = vectorize(WORDS, DataConfig(level="word", min_freq=61, context_len=4))
    rare = vectorize(WORDS + "zebra", DataConfig(level="word", min_freq=2, context_len=4))
    with caplog.at_level(logging.INFO, logger="seqlab"):
        assert warn_unk(few).share > 0.5
    assert len(_unk_warnings(caplog)) == 1 and "min_freq=61" in _unk_warnings(caplog)[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="seqlab"):
        assert 0 < warn_unk(rare).share <= 0.5  # some <unk>, no cap: logged, not warned
    assert _unk_warnings(caplog) == []
    assert any("<unk>" in r.getMessage() for r in caplog.records)


def test_a_vocabulary_that_maps_every_train_token_to_unk_is_refused() -> None:
    with pytest.raises(DataError, match=r"every one of the .* train tokens is <unk>") as err:
        vectorize(WORDS, DataConfig(level="word", min_freq=10_000, context_len=4))
    assert "min_freq=10000" in str(err.value) and "100.0%" in str(err.value)


def test_character_vocabularies_keep_every_symbol(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="seqlab"):
        assert warn_unk(vectorize(WORDS, DataConfig(context_len=4))).tokens == 0
    assert caplog.records == []


def test_data_inspect_prints_the_unk_warning_once(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text(WORDS)
    result = run_cli("data", "inspect", str(path), "--level", "word", "--max-vocab", "3", "--json")
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: "), result.stderr
    assert "% of the" in lines[0] and "<unk>" in lines[0]
    assert '"unk_tokens"' in result.stdout


@pytest.mark.slow
def test_run_prints_the_unk_warning_once(prefect_server: str, tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text(WORDS)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    result = run_cli(
        "run", "--data", str(path), "--level", "word", "--set", "data.max_vocab=3",
        "--set", "data.context_len=4", "--models", "ngram", "--tracking-uri", uri,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "<unk>" in warnings[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- batches


def _corpus(**data: Any) -> EncodedCorpus:
    return vectorize("abcdefgh" * 250, DataConfig.model_validate({"context_len": 10, **data}))


def _resolved(plugin: str, **train: Any) -> list[ResolvedModel]:
    settings = TrainConfig.model_validate(train)
    return resolve_models([ModelSpec(plugin=plugin)], "next-token", settings)


def test_step_larger_than_the_train_split_is_refused_with_the_numbers() -> None:
    corpus = _corpus(step=5000)  # 1600 train tokens
    with pytest.raises(DataError, match=r"data.step=5000 .* 1,600 tokens give 1,590"):
        check_fits(_resolved("ngram"), corpus, "next-token")
    check_fits(_resolved("ngram"), _corpus(step=3), "next-token")


def test_a_batch_the_train_split_cannot_fill_is_refused_with_the_numbers() -> None:
    corpus = _corpus()
    with pytest.raises(DataError, match=r"model 'lstm': train.batch_size=2000 .* 1,590 windows"):
        check_fits(_resolved("lstm", batch_size=2000), corpus, "next-token")
    check_fits(_resolved("lstm", batch_size=1590), corpus, "next-token")
    check_fits(_resolved("ngram", batch_size=2000), corpus, "next-token")


def test_stateful_streams_shorter_than_the_context_are_refused() -> None:
    corpus = _corpus()
    with pytest.raises(DataError, match=r"batch_size=500 streams give 3 tokens each"):
        check_fits(_resolved("lstm", bptt="stateful", batch_size=500), corpus, "next-token")
    check_fits(_resolved("lstm", bptt="stateful", batch_size=100), corpus, "next-token")


# --------------------------------------------------------------------------- synthetic


def test_order_5_over_10_symbols_is_built_quickly_and_exactly() -> None:
    started = time.perf_counter()
    text, meta = make_synthetic("markov", {"alphabet": "10", "order": "5", "length": "2000"})
    assert time.perf_counter() - started < 30
    assert len(text) == 2000 and 0 < meta["entropy_rate_bits"] < np.log2(10)
    source = MarkovSource.random(5, 10, 0.5, 0)
    pi = source.stationary()
    np.testing.assert_allclose(source.step_distribution(pi), pi, atol=1e-12)


def test_the_iterated_stationary_distribution_equals_the_dense_solve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = MarkovSource.random(order=3, alphabet_size=4, concentration=0.5, seed=3)
    dense = source.stationary()
    monkeypatch.setattr(synthetic, "DENSE_MAX_STATES", 8)
    np.testing.assert_allclose(source.stationary(), dense, atol=1e-12)
    np.testing.assert_allclose(source.step_distribution(dense), dense @ source.state_matrix())


@pytest.mark.parametrize(
    ("alphabet", "order", "fragment"),
    [(10, 6, "about 610 MB, over the 512 MB limit"), (26, 5, "26**5 = 11,881,376 states")],
)
def test_a_source_too_large_to_build_is_refused_before_allocating(
    alphabet: int, order: int, fragment: str
) -> None:
    params = synthetic.MarkovParams(alphabet=alphabet, order=order)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        check_markov(params)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        make_synthetic("markov", {"alphabet": str(alphabet), "order": str(order)})
    assert time.perf_counter() - started < 1


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("uri", ["sqlite:///", "sqlite://m.db", "sqlite:///:memory:"])
def test_a_sqlite_uri_without_a_file_is_refused(uri: str) -> None:
    with pytest.raises(ConfigError, match="names no SQLite database file"):
        resolve_tracking_uri(uri)


def test_a_store_that_cannot_be_created_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"afile is a file, not a folder"):
        prepare_store(f"sqlite:///{tmp_path / 'afile' / 'sub' / 'm.db'}")
    with pytest.raises(ConfigError, match="/proc/seqlab"):
        prepare_store("sqlite:////proc/seqlab/m.db")
    with pytest.raises(ConfigError, match="not a regular file"):
        prepare_store(f"sqlite:///{tmp_path}")
    prepare_store(f"sqlite:///{tmp_path / 'new' / 'm.db'}")
    assert (tmp_path / "new").is_dir() and os.listdir(tmp_path / "new") == []


def test_an_arpa_file_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    from plugins.ngram import NGramModel
    from seqlab.api import FitData

    model = NGramModel(3, {"order": 2})
    model.fit(FitData(train=np.array([1, 2, 1, 2, 1]), val=None, vocab_size=3, context_len=1))
    (tmp_path / "afile").write_text("x")
    for bad, fragment in [
        (tmp_path / "afile" / "sub" / "m.arpa", "is a file, not a folder"),
        (Path("/proc/x.arpa"), "/proc/x.arpa"),
        (tmp_path, "is a directory"),
    ]:
        with pytest.raises(DataError, match=fragment):
            model.to_arpa(bad, ["<unk>", "a", "b"])
    out = model.to_arpa(tmp_path / "ok" / "m.arpa", ["<unk>", "a", "b"])
    assert out.read_text().startswith("\\data\\")
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.arpa"]  # no temporary left
