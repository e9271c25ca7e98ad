"""benchmarks/compressors.py: the conditional-size figure of every compressor on
hand-made texts, the PPMd order chosen on val alone, and a ``--quick`` run whose ngram
row is what seqlab's own stages score for the same config."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compressors as bench
from tests.conftest import REPO, WONDERLAND, run_benchmarks

COMPRESSORS_BENCH = REPO / "benchmarks" / "compressors.py"
LETTERS = "abcdefghijklmnopqrstuvwxyz "
#: every compressor of the benchmark, PPMd at the lowest and highest default orders
ALL_SIZES = {
    **bench.COMPRESSORS,
    "ppmd order 4": bench.ppmd_size(4, 16),
    "ppmd order 12": bench.ppmd_size(12, 16),
}


def random_letters(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(LETTERS) for _ in range(n))


@pytest.mark.parametrize("name", list(ALL_SIZES))
def test_a_test_part_that_repeats_the_prefix_costs_far_less_than_a_fresh_one(name: str) -> None:
    size = ALL_SIZES[name]
    prefix = random_letters(4000, seed=1)  # log2(27) = 4.75 bits of entropy per char
    repeated = bench.conditional_bpc(size, prefix, prefix * 3)
    fresh = bench.conditional_bpc(size, prefix, random_letters(12_000, seed=2))
    assert repeated < 1.2, repeated  # the compressor has read the prefix: it copies
    assert 4.5 < fresh < 5.6, fresh  # nothing to copy: about the source's entropy
    # the same text without the prefix: the first copy must be paid for
    alone = bench.conditional_bpc(size, "", prefix * 3)
    assert alone > repeated + 0.5, (alone, repeated)


@pytest.mark.parametrize("name", list(ALL_SIZES))
def test_random_bytes_cost_about_eight_bits_each(name: str) -> None:
    rng = random.Random(3)
    data = bytes(rng.getrandbits(8) for _ in range(20_000))
    bits_per_byte = bench.conditional_bits(ALL_SIZES[name], data[:10_000], data[10_000:]) / 10_000
    assert 7.9 < bits_per_byte < 8.4, bits_per_byte


def test_bpc_divides_by_characters_not_bytes() -> None:
    prefix, target = "ab" * 50, "é" * 200  # 2 UTF-8 bytes per target character
    bits = bench.conditional_bits(bench.xz_size, prefix.encode(), target.encode())
    assert bench.conditional_bpc(bench.xz_size, prefix, target) == bits / 200
    with pytest.raises(ValueError):
        bench.conditional_bpc(bench.xz_size, prefix, "")


def test_ppmd_order_is_chosen_on_val_alone() -> None:
    # val prefers order 6, test would prefer order 9: 6 is chosen
    figures = {
        4: {"val": 2.10, "test": 2.00},
        6: {"val": 1.90, "test": 1.95},
        9: {"val": 1.95, "test": 1.50},
    }
    assert bench.choose_order(figures) == 6
    figures[9]["test"] = -1.0  # whatever test says
    assert bench.choose_order(figures) == 6
    assert bench.choose_order({5: {"val": 1.0, "test": 9}, 4: {"val": 1.0, "test": 0}}) == 4


def test_ppmd_row_reports_on_test_the_order_best_on_val() -> None:
    # val is random letters (long contexts never repeat: low orders escape less), test
    # repeats the train text (long contexts pay): the two splits disagree on the order
    train = random_letters(6000, seed=4)
    val = random_letters(1500, seed=5)
    text = train + val + train[:1500]
    splits = bench.Splits(text, len(train), len(train) + 1500, "")
    assert splits.val == val and splits.test == train[:1500]
    assert splits.before_test == train + val
    orders = [2, 4, 8, 16]
    bpc, notes, figures, order = bench.compressor_rows(splits, orders, 16)
    vals = {o: f["val"] for o, f in figures.items()}
    assert order == min(vals, key=lambda o: (vals[o], o))
    assert bpc["ppmd"] == figures[order]["test"]
    assert f"order {order} " in notes["ppmd"]
    for o in orders:  # each figure is the conditional size of that split
        size = bench.ppmd_size(o, 16)
        assert figures[o]["val"] == bench.conditional_bpc(size, train, val)
        assert figures[o]["test"] == bench.conditional_bpc(size, train + val, train[:1500])
    assert sorted(bpc) == sorted([*bench.COMPRESSORS, "ppmd"])


@pytest.mark.slow
@pytest.mark.skipif(not WONDERLAND.is_file(), reason=f"{WONDERLAND} not present")
def test_quick_run_writes_every_row_and_seqlab_s_ngram_figure(
    tmp_path: Path, prefect_server: str
) -> None:
    from pipeline_core import experiment
    from pipeline_core.cleaning import clean_text
    from pipeline_core.config import RunConfig, validate_model
    from pipeline_core.training import fit_model
    from pipeline_core.vectorize import split_bounds

    out = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(COMPRESSORS_BENCH),
            "--quick",
            "--corpora",
            "wonderland",
            "--models",
            "ngram",
            "--json",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),  # the session's Prefect server (PREFECT_API_URL)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # nothing else

    figures = json.loads(out.read_text(encoding="utf-8"))
    rows = figures["wonderland"]
    assert sorted(rows) == sorted([*bench.COMPRESSORS, "ppmd", "ngram"])
    assert all(math.isfinite(v) and 0 < v < 8 for v in rows.values()), rows
    settings, details = figures["settings"], figures["details"]["wonderland"]
    assert settings["quick"] and settings["models"] == ["ngram"]
    assert settings["chars"] == 20_000 and settings["ppmd_orders"] == list(range(4, 13))
    lines = proc.stdout.splitlines()
    best = min(rows, key=lambda row: (rows[row], row))
    assert lines[-1] == f"best wonderland={best.replace(' ', '')}:{rows[best]:.4f}"
    assert any(line.strip().startswith("ppmd per order") for line in lines)

    # the text: the first 20,000 characters, seed-cleaned; test = the last 10%
    raw = WONDERLAND.read_bytes().decode("utf-8")[:20_000]
    text = clean_text(raw, "seed")
    b0, b1 = split_bounds(len(text), (0.8, 0.1, 0.1))
    assert details["chars"] == len(text) and details["bounds"] == [b0, b1]
    assert details["test_chars"] == len(text) - b1 == round(len(text) * 0.1)
    assert rows["gzip -9"] == bench.conditional_bpc(bench.gzip_size, text[:b1], text[b1:])
    ppmd = details["ppmd_by_order"]
    assert rows["ppmd"] == ppmd[str(details["ppmd_order"])]["test"]
    best_val = min(f["val"] for f in ppmd.values())
    assert details["ppmd_order"] == min(int(o) for o, f in ppmd.items() if f["val"] == best_val)

    # the ngram row: what seqlab's stages score on the same config (its own copy of the
    # prefix; the benchmark's went with its temporary folder)
    source = tmp_path / "wonderland.txt"
    source.write_bytes(raw.encode("utf-8"))
    config = validate_model(RunConfig, details["config"])
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"source": str(source)})}
    )
    assert config.models[0].params == {"order": 5, "smoothing": "kneser_ney"}
    the_task = experiment.make_task(config)
    (item,) = experiment.resolve_models(config.models, the_task, config.train)
    corpus = experiment.encode(
        experiment.clean(experiment.ingest(config.data), config.data), config.data
    )
    assert corpus.text_sha256 == details["text_sha256"]
    model = item.plugin_cls.create(len(corpus.vocab), item.config, seed=item.train.seed)
    fit_model(model, experiment.fit_data(corpus), item.train, the_task)
    expected = the_task.score(model, corpus, "test", experiment.carries_state(item)).bpc
    assert rows["ngram"] == pytest.approx(expected, abs=1e-9)


def test_config_runs_its_models_beside_the_compressors_with_dynamic_figures_apart(
    prefect_server: str, tmp_path: Path
) -> None:
    """``--config``: the config's models and settings on each corpus (its own source and
    cleaning ignored), and each dynamic figure kept apart from the static rows."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "data: {source: elsewhere.txt, clean: none, context_len: 12}\n"
        "models:\n  - {name: tri, plugin: ngram, params: {order: 3}}\n"
        "train: {dynamic_eval: true}\n",
        encoding="utf-8",
    )
    results = tmp_path / "results"
    argv = ["--quick", "--corpora", "wonderland", "--config", str(config)]
    proc = run_benchmarks("--results-dir", str(results), "compressors", *argv, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((results / "compressors.json").read_text(encoding="utf-8"))["figures"]
    rows, dynamic = figures["wonderland"], figures["dynamic"]["wonderland"]
    assert sorted(rows) == sorted([*bench.COMPRESSORS, "ppmd", "tri"])  # static rows only
    assert set(dynamic) == {"tri"} and dynamic["tri"] < rows["tri"]  # it learns the test text
    ran = figures["details"]["wonderland"]["config"]
    assert ran["data"]["clean"] == "seed" and ran["data"]["context_len"] == 12
    assert figures["settings"]["config"] == str(config)
    line = next(x for x in proc.stdout.splitlines() if "dynamic evaluation: tri" in x)
    assert f"(static {rows['tri']:.4f})" in line and f"{dynamic['tri']:.4f} bpc" in line

    both = run_benchmarks("compressors", "--config", str(config), "--models", "ngram")
    assert both.returncode == 2 and "--config and --models" in both.stderr


def test_quality_is_compressors_on_the_tuned_wonderland_config_by_default() -> None:
    from benchmarks import quality

    argv = quality.with_defaults([])
    config = Path(argv[argv.index("--config") + 1])
    assert (REPO / config).resolve() == REPO / "configs" / "alice-mixture-lstm.yaml"
    assert argv[argv.index("--corpora") + 1] == "wonderland"
    assert "--config" not in quality.with_defaults(["--models", "ngram"])  # one or the other
    assert quality.with_defaults(["--corpora", "x@none"]).count("--corpora") == 1


def test_row_notes_say_what_each_model_is() -> None:
    from pipeline_core.config import load_run_config

    notes = bench.describe_models(load_run_config(REPO / "configs" / "alice-mixture-lstm.yaml"))
    assert notes["ngram"] == "order 7 kneser_ney"
    assert notes["lstm"] == "hidden 512, embedding 64, layers 2, bptt stateful"
    # a mixture trains no recurrence of its own: its components, not a bptt mode
    assert notes["mixture-lstm"] == (
        "per_context weights over ngram 3, ngram 5, ngram 7, ngram 9, lstm"
    )
