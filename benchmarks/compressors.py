"""Benchmark: seqlab's models against general-purpose compressors, in bits per character.

Why: a compressor is a sequence model too (its output size is the code length of the
text under its adaptive model), so gzip, bzip2, xz and PPMd give a leaderboard of
known, model-free reference points. A model that cannot beat PPMd on the same text has
learnt less than a 1990s context mixer; one that cannot beat gzip has learnt little.

For each corpus (default: ``wonderland.txt`` with the tutorial's ``seed`` cleaning and
``tiny-shakespeare.txt`` untouched, ``clean: none``, both from ``../shared/data``), one
process, in one run:

* prepares the text exactly as seqlab does (``pipeline_core.experiment`` ingest, clean,
  encode): the cleaned text and the contiguous split bounds (default splits 0.8/0.1/0.1,
  ``pipeline_core.vectorize.split_bounds``: test = the last 10% of the characters, val
  the 10% before), so the test text is exactly the text the models are scored on;
* scores each compressor on it as **conditional bits per character**::

      (size(prefix + test) - size(prefix)) * 8 / len(test)

  where ``prefix`` is all the text before the test split (the compressor has read the
  prefix, as an adaptive model would have) and sizes are those of the UTF-8 bytes
  (divided by characters, not bytes). Compressors: ``gzip -9`` (``gzip``, level 9, a
  32 KiB window), ``bzip2 -9`` (``bz2``, 900 kB blocks), ``xz -9e`` (``lzma``, preset
  ``9 | PRESET_EXTREME``) and PPMd (the ``pyppmd`` package, variant I as in zip/7-Zip,
  ``--ppmd-mem`` MiB of model memory) at every order in ``--ppmd-orders`` (default 4 to
  12): the order is chosen on the **validation** split (prefix = the train text, target
  = the val text) and only that order's test figure is the ``ppmd`` row; every order's
  val and test figures are printed under the table;
* runs a real seqlab comparison (``flows.compare.run_comparison``, a throwaway SQLite
  MLflow store, Prefect's ``PREFECT_API_URL`` or a temporary server of this process)
  over the registered plugins that declare ``next-token`` (``seqlab plugins``; default
  every one but ``birnn``, whose causal next-token training is O(T^2) per window and
  does not fit the budget: ``--models`` names any), the ``ngram`` as order
  ``--ngram-order`` interpolated Kneser-Ney, the neural ones with ``--hidden`` and
  ``--embedding`` (default 128 and 32, smaller than the plugins' own) under ``--epochs``
  epochs of at most ``--max-batches`` batches; the plugins that carry state train by
  stateful truncated BPTT of ``--context-len`` steps and are scored in one pass (the
  others on windows of ``--context-len`` characters), and reads each model's
  ``test_bpc`` off the leaderboard.

It prints one table per corpus, compressors and models sorted by test bpc, with a note
(the PPMd order chosen, the models' train seconds) and the best row. The last line is
machine-readable::

    best <corpus>=<row>:<bpc> ...

``--config FILE`` runs a seqlab config's models, ``train`` and ``data`` settings instead
(each corpus's own source and cleaning; the same splits for models and compressors).
Its models with ``train.dynamic_eval`` also get a line and a ``dynamic`` figure each
(the test split learned from as it is scored, as the compressors do), kept apart from
the static rows.

Run: ``.venv/bin/python benchmarks/compressors.py [--corpora wonderland,tiny-shakespeare]
[--models ngram,lstm | --config FILE] [--epochs E] [--max-batches B] [--chars N]
[--json PATH]``
(``--quick``: the first 20,000 characters of each corpus, one epoch of 3 batches, tiny
networks: the smoke test). ``--corpora`` also takes ``PATH@PRESET`` (a file and its
cleaning). Nothing is written outside a temporary folder unless ``--json`` is given:
``{corpus: {row: bpc, ...}, ..., "settings": {...}, "details": {...}}``.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from benchmarks.presets import add_output_options, apply_preset

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
#: built-in corpora: file under DATA_DIR and cleaning preset
CORPORA = {
    "wonderland": ("wonderland.txt", "seed"),
    "tiny-shakespeare": ("tiny-shakespeare.txt", "none"),
}
#: plugins left out of the default list (see the module docstring)
SLOW_PLUGINS = frozenset({"birnn"})
PPMD_ORDERS = tuple(range(4, 13))
#: the JSON's top-level keys besides the corpora
RESERVED = frozenset({"settings", "details", "command", "machine"})
SETTINGS = ("epochs", "max_batches", "batch_size", "context_len", "hidden", "embedding", "chars")
#: about 13 minutes on 2 busy CPUs (extrapolated from one GRU on tiny-shakespeare: 107 s
#: for its comparison; 120 batches of hidden 256 took twice as long and more)
FULL: dict[str, int | None] = {
    "epochs": 2,
    "max_batches": 60,
    "batch_size": 32,
    "context_len": 64,
    "hidden": 128,  # the plugins' default is 256
    "embedding": 32,
    "chars": None,  # the whole text
}
QUICK: dict[str, int | None] = {
    "epochs": 1,
    "max_batches": 3,
    "batch_size": 16,
    "context_len": 16,
    "hidden": 16,
    "embedding": 8,
    "chars": 20_000,
}

#: a compressor: the compressed size in bytes of some bytes
Size = Callable[[bytes], int]


# ---- compressors ---------------------------------------------------------------------
def gzip_size(data: bytes) -> int:
    """``gzip -9`` (deflate, 32 KiB window); a fixed header time, so sizes are exact."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def bzip2_size(data: bytes) -> int:
    """``bzip2 -9`` (900 kB blocks)."""
    return len(bz2.compress(data, compresslevel=9))


def xz_size(data: bytes) -> int:
    """``xz -9e``: LZMA2, preset 9 with the extreme flag."""
    return len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))


def ppmd_size(order: int, mem_mib: int = 256) -> Size:
    """PPMd variant I (PPMd8, zip's and 7-Zip's) of max order ``order``."""
    import pyppmd

    def size(data: bytes) -> int:
        return len(pyppmd.compress(data, max_order=order, mem_size=mem_mib << 20, variant="I"))

    return size


COMPRESSORS: dict[str, Size] = {"gzip -9": gzip_size, "bzip2 -9": bzip2_size, "xz -9e": xz_size}
ABOUT = {
    "gzip -9": "deflate, 32 KiB window",
    "bzip2 -9": "BWT, 900 kB blocks",
    "xz -9e": "LZMA2, preset 9 | extreme",
}


def conditional_bits(size: Size, prefix: bytes, target: bytes) -> float:
    """Bits the compressor spends on ``target`` once it has read ``prefix``."""
    return (size(prefix + target) - size(prefix)) * 8.0


def conditional_bpc(size: Size, prefix: str, target: str) -> float:
    """:func:`conditional_bits` of the UTF-8 bytes, per character of ``target``."""
    if not target:
        raise ValueError("conditional_bpc: empty target")
    return conditional_bits(size, prefix.encode("utf-8"), target.encode("utf-8")) / len(target)


@dataclass(frozen=True)
class Splits:
    """The cleaned text as seqlab encodes it, cut at its split bounds (in characters)."""

    text: str
    b0: int  # train = text[:b0]
    b1: int  # val = text[b0:b1], test = text[b1:]
    sha256: str

    @property
    def train(self) -> str:
        return self.text[: self.b0]

    @property
    def val(self) -> str:
        return self.text[self.b0 : self.b1]

    @property
    def before_test(self) -> str:
        return self.text[: self.b1]

    @property
    def test(self) -> str:
        return self.text[self.b1 :]


def prepared_text(data: Any) -> Splits:
    """The text and split bounds the models of a comparison with ``data`` (a
    ``DataConfig``, char level) are trained and scored on, through seqlab's own stages."""
    from pipeline_core import experiment
    from pipeline_core.vectorize import corpus_text

    if data.level != "char":
        raise ValueError("compressors are compared per character: data.level must be char")
    docs = experiment.clean(experiment.ingest(data), data)
    text = corpus_text(docs["text"].tolist())
    corpus = experiment.encode(docs, data)
    b0, b1 = corpus.bounds
    # one token per character, and the characters the test bpc divides by
    assert len(corpus.ids) == len(text), (len(corpus.ids), len(text))
    assert corpus.split_chars["test"] == len(text) - b1
    assert corpus.split_chars["val"] == b1 - b0
    return Splits(text, b0, b1, corpus.text_sha256)


def ppmd_figures(
    splits: Splits, orders: Iterable[int], mem_mib: int
) -> dict[int, dict[str, float]]:
    """Per PPMd order: val bpc (after the train text) and test bpc (after all before it)."""
    figures = {}
    for order in orders:
        size = ppmd_size(order, mem_mib)
        figures[order] = {
            "val": conditional_bpc(size, splits.train, splits.val),
            "test": conditional_bpc(size, splits.before_test, splits.test),
        }
    return figures


def choose_order(figures: Mapping[int, Mapping[str, float]]) -> int:
    """The order with the lowest **val** figure (the smaller order on a tie); the test
    figures are never read."""
    return min(figures, key=lambda order: (figures[order]["val"], order))


def compressor_rows(
    splits: Splits, orders: Iterable[int], mem_mib: int
) -> tuple[dict[str, float], dict[str, str], dict[int, dict[str, float]], int]:
    """(row -> test bpc, row -> note, PPMd per order, the chosen order)."""
    bpc, notes = {}, {}
    for name, size in COMPRESSORS.items():
        started = time.perf_counter()
        bpc[name] = conditional_bpc(size, splits.before_test, splits.test)
        notes[name] = f"{ABOUT[name]}; {time.perf_counter() - started:.1f} s"
    started = time.perf_counter()
    figures = ppmd_figures(splits, orders, mem_mib)
    order = choose_order(figures)
    bpc["ppmd"] = figures[order]["test"]
    notes["ppmd"] = (
        f"PPMd var. I, order {order} (best on val: {figures[order]['val']:.4f} bpc; orders "
        f"{min(figures)}-{max(figures)}), {mem_mib} MiB; {time.perf_counter() - started:.1f} s"
    )
    return bpc, notes, figures, order


# ---- seqlab models -------------------------------------------------------------------
def next_token_plugins() -> list[str]:
    """Every usable registered plugin that declares the next-token task."""
    from pipeline_core.registry import discover, load_plugin

    names = []
    for info in discover():
        if info.ok and "next-token" in load_plugin(info.name).task_kinds:
            names.append(info.name)
    return names


def model_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    from pipeline_core.contract import TorchSequenceModel
    from pipeline_core.registry import load_plugin

    specs: list[dict[str, Any]] = []
    for name in args.models:
        cls = load_plugin(name)
        if name == "ngram":
            specs.append(
                {"plugin": name, "params": {"order": args.ngram_order, "smoothing": "kneser_ney"}}
            )
            continue
        params = {}
        neural = issubclass(cls, TorchSequenceModel)  # sizes mean nothing to the others
        if neural and args.hidden is not None:
            params["hidden_size"] = args.hidden
        if neural and args.embedding is not None:
            params["embedding_dim"] = args.embedding
        spec: dict[str, Any] = {"plugin": name, "params": params}
        if issubclass(cls, TorchSequenceModel) and cls.stateful:
            spec["train"] = {"bptt": "stateful"}  # truncated BPTT; scored in one pass
        specs.append(spec)
    return specs


def run_config(args: argparse.Namespace, source: str, clean: str, tracking_uri: str) -> Any:
    from pipeline_core.config import RunConfig, validate_model

    if args.run_config is not None:  # --config: its models and settings on this corpus
        values = args.run_config.model_dump(mode="json")
        values["data"].update(source=source, clean=clean)
        values["train"]["progress"] = False
        values["tracking"].update(tracking_uri=tracking_uri, samples=0, gradient_flow=False)
        values["registry"] = {"enabled": False}
        return validate_model(RunConfig, values)
    return validate_model(
        RunConfig,
        {
            "data": {"source": source, "clean": clean, "context_len": args.context_len},
            "models": model_specs(args),
            "train": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "max_batches_per_epoch": args.max_batches,
                "seed": args.seed,
                "progress": False,
            },
            "tracking": {"tracking_uri": tracking_uri, "samples": 0, "gradient_flow": False},
            "registry": {"enabled": False},
        },
    )


SIZE_KEYS = {"hidden_size": "hidden", "embedding_dim": "embedding", "num_layers": "layers"}


def describe_models(config: Any) -> dict[str, str]:
    """model -> its settings in a few words (the plugin's defaults filled in)."""
    from pipeline_core.config import model_train_config
    from pipeline_core.contract import TorchSequenceModel
    from pipeline_core.registry import load_plugin

    out = {}
    for spec in config.models:
        cls = load_plugin(spec.plugin)
        params = cls.make_config(spec.params).model_dump()
        if spec.plugin == "ngram":
            out[spec.label] = f"order {params['order']} {params['smoothing']}"
            continue
        if spec.plugin == "mixture":  # its components, not a training mode it has none of
            parts = [
                " ".join(
                    [c["plugin"], *(str(c["params"][k]) for k in ("order",) if k in c["params"])]
                )
                for c in params["components"]
            ]
            out[spec.label] = f"{params['weights']} weights over {', '.join(parts)}"
            continue
        words = [f"{word} {params[k]}" for k, word in SIZE_KEYS.items() if k in params]
        if issubclass(cls, TorchSequenceModel):  # only a torch model trains with bptt
            words.append(f"bptt {model_train_config(config.train, spec).bptt}")
        out[spec.label] = ", ".join(words)
    return out


def dynamic_rows(result: Any) -> dict[str, float]:
    """model -> test bpc under dynamic evaluation (``train.dynamic_eval``): adaptive like
    the compressors, so kept apart from the static rows and compared with them."""
    from pipeline_core.experiment import DYNAMIC_COLUMN

    board = result.leaderboard
    if DYNAMIC_COLUMN not in board.columns:
        return {}
    return {
        str(row.model): float(getattr(row, DYNAMIC_COLUMN))
        for row in board.itertuples()
        if row.plugin != "baseline"
        and row.status == "finished"
        and math.isfinite(float(getattr(row, DYNAMIC_COLUMN)))
    }


def model_rows(
    result: Any, described: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """(model -> test bpc, model -> note, failures) off a comparison's leaderboard."""
    board = result.leaderboard
    bpc, notes, failed = {}, {}, []
    for row in board.itertuples():
        if row.plugin == "baseline":
            continue
        if row.status != "finished":
            failed.append(f"{row.model}: {row.error}")
            continue
        bpc[str(row.model)] = float(row.test_bpc)
        about = described.get(str(row.model), "")
        notes[str(row.model)] = f"seqlab {row.plugin} ({about}), train {float(row.train_s):.1f} s"
    return bpc, notes, failed


# ---- output --------------------------------------------------------------------------
def print_table(title: str, bpc: Mapping[str, float], notes: Mapping[str, str]) -> list[str]:
    """The rows sorted by bpc; returns their names in that order."""
    order = sorted(bpc, key=lambda k: (bpc[k], k))
    width = max(len(k) for k in [*order, "row"])
    print(title)
    print(f"  {'row'.ljust(width)}  {'test bpc':>8}  note")
    for name in order:
        print(f"  {name.ljust(width)}  {bpc[name]:8.4f}  {notes.get(name, '')}")
    return order


def print_dynamic(
    dynamic: Mapping[str, float], bpc: Mapping[str, float], packers: list[str]
) -> None:
    """The models' dynamic figures, each against its static one and the best compressor
    (itself adaptive), on their own lines: never ranked among the static rows."""
    if not dynamic:
        return
    best = packers[0] if packers else None
    for model, value in sorted(dynamic.items(), key=lambda kv: (kv[1], kv[0])):
        line = f"  dynamic evaluation: {model} {value:.4f} bpc (static {bpc[model]:.4f})"
        if best is not None:
            line += f"; best compressor {best} {bpc[best]:.4f} ({value - bpc[best]:+.4f})"
        print(line)


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": load[0],
    }


# ---- main ----------------------------------------------------------------------------
def corpus_sources(spec: str, data_dir: Path) -> list[tuple[str, Path, str]]:
    """(name, file, cleaning preset) for each comma-separated corpus of ``--corpora``."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if item in CORPORA:
            file, clean = CORPORA[item]
            out.append((item, data_dir / file, clean))
        else:
            path, _, clean = item.partition("@")
            out.append((Path(path).stem, Path(path), clean or "text"))
    names = [name for name, _, _ in out]
    clash = sorted({n for n in names if names.count(n) > 1 or n in RESERVED})
    if clash:
        raise ValueError(f"corpus name(s) {', '.join(clash)} taken: rename the file(s)")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--corpora",
        default=",".join(CORPORA),
        help=f"comma-separated: {', '.join(CORPORA)} or PATH@PRESET (default: both built-ins)",
    )
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where the built-ins are")
    ap.add_argument("--models", help="comma-separated plugins (default: next-token ones)")
    ap.add_argument(
        "--config",
        type=Path,
        help="a seqlab run config whose models, train and data settings (not its source or "
        "cleaning: each corpus's) are run instead of --models and the sizes",
    )
    ap.add_argument("--epochs", type=int, help="epochs per neural model")
    ap.add_argument("--max-batches", type=int, help="batches per epoch at most")
    ap.add_argument("--batch-size", type=int, help="windows or streams per batch")
    ap.add_argument("--context-len", type=int, help="window / truncated-BPTT length")
    ap.add_argument("--hidden", type=int, help="hidden size of the neural models")
    ap.add_argument("--embedding", type=int, help="embedding size of the neural models")
    ap.add_argument("--chars", type=int, help="only the first N characters of each file")
    ap.add_argument("--ngram-order", type=int, default=5, help="n-gram order (Kneser-Ney)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--ppmd-orders",
        default=f"{PPMD_ORDERS[0]}-{PPMD_ORDERS[-1]}",
        help="PPMd orders, LO-HI or comma-separated (default 4-12)",
    )
    ap.add_argument("--ppmd-mem", type=int, default=256, help="PPMd model memory, MiB")
    add_output_options(ap)
    args = ap.parse_args(argv)
    apply_preset(ap, args, FULL, QUICK, positive=SETTINGS)
    try:
        if "-" in args.ppmd_orders:
            lo, hi = (int(v) for v in args.ppmd_orders.split("-"))
            args.ppmd_orders = list(range(lo, hi + 1))
        else:
            args.ppmd_orders = [int(v) for v in args.ppmd_orders.split(",")]
    except ValueError:
        ap.error(f"--ppmd-orders: LO-HI or a comma-separated list (got {args.ppmd_orders!r})")
    if not args.ppmd_orders or min(args.ppmd_orders) < 2 or max(args.ppmd_orders) > 64:
        ap.error("--ppmd-orders: PPMd orders are 2 to 64")
    try:
        args.corpora = corpus_sources(args.corpora, args.data_dir)
    except ValueError as err:
        ap.error(f"--corpora: {err}")
    if not args.corpora:
        ap.error("--corpora: name at least one corpus")
    for _, path, _ in args.corpora:
        if not path.is_file():
            ap.error(f"--corpora: {path} is not a file")
    plugins = next_token_plugins()
    args.run_config = None
    if args.config is not None:
        if args.models is not None:
            ap.error("--config and --models: name the models in one place")
        from pipeline_core.config import load_run_config
        from pipeline_core.errors import SeqlabError

        try:
            args.run_config = load_run_config(args.config)
        except SeqlabError as err:
            ap.error(f"--config: {args.config}: {err}")
        args.models = [spec.label for spec in args.run_config.models]
    elif args.models is None:
        args.models = [p for p in plugins if p not in SLOW_PLUGINS]
    else:
        args.models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in args.models if m not in plugins]
        if unknown:
            ap.error(f"--models: {', '.join(unknown)} (next-token plugins: {', '.join(plugins)})")
    return args


def prefix_file(path: Path, chars: int | None, folder: Path) -> Path:
    """``path`` itself, or a copy of its first ``chars`` characters (UTF-8) in ``folder``."""
    if chars is None:
        return path
    out = folder / path.name
    out.write_bytes(path.read_bytes().decode("utf-8")[:chars].encode("utf-8"))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    table: dict[str, dict[str, float]] = {}
    dynamic: dict[str, dict[str, float]] = {}
    details: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="seqlab-bench-compressors-") as tmp:
        os.environ["SEQLAB_CACHE_DIR"] = str(Path(tmp) / "cache")
        from flows.compare import run_comparison
        from flows.server import prefect_api

        tracking_uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        with prefect_api():
            for name, path, clean in args.corpora:
                source = prefix_file(path, args.chars, Path(tmp))
                config = run_config(args, str(source), clean, tracking_uri)
                splits = prepared_text(config.data)
                bpc, notes, figures, order = compressor_rows(
                    splits, args.ppmd_orders, args.ppmd_mem
                )
                started = time.perf_counter()
                result = run_comparison(config)
                seconds = time.perf_counter() - started
                m_bpc, m_notes, failed = model_rows(result, describe_models(config))
                failures += [f"{name}: {f}" for f in failed]
                bpc.update(m_bpc)
                notes.update(m_notes)
                title = (
                    f"\n{name}: {path.name}[:{args.chars or 'all'}] clean {clean}, "
                    f"{len(splits.text):,} chars; test = the last {len(splits.test):,} "
                    f"(after {len(splits.before_test):,}), val {len(splits.val):,}"
                )
                ranked = print_table(title, bpc, notes)
                print(
                    "  ppmd per order (val -> test): "
                    + ", ".join(
                        f"{o}: {f['val']:.4f} -> {f['test']:.4f}" for o, f in figures.items()
                    )
                )
                best = ranked[0]
                models = [r for r in ranked if r in m_bpc]
                packers = [r for r in ranked if r not in m_bpc]
                line = f"  best: {best} {bpc[best]:.4f} bpc"
                if models and packers:
                    m, p = models[0], packers[0]
                    line += (
                        f"; best model {m} {bpc[m]:.4f} vs best compressor {p} "
                        f"{bpc[p]:.4f} ({bpc[m] - bpc[p]:+.4f})"
                    )
                print(line)
                print(f"  comparison: {seconds:.1f} s (Prefect + MLflow + training + scoring)")
                dynamic[name] = dynamic_rows(result)
                print_dynamic(dynamic[name], bpc, packers)
                if failed:
                    print("  failed: " + "; ".join(failed))
                table[name] = bpc
                details[name] = {
                    "file": str(path),
                    "clean": clean,
                    "chars": len(splits.text),
                    "bounds": [splits.b0, splits.b1],
                    "test_chars": len(splits.test),
                    "text_sha256": splits.sha256,
                    "ppmd_order": order,
                    "ppmd_by_order": {str(o): f for o, f in figures.items()},
                    "notes": notes,
                    "comparison_s": seconds,
                    "config": config.model_dump(mode="json"),
                    "failed": failed,
                }
    if args.json is not None:
        figures_out: dict[str, Any] = dict(table)
        sizes = (
            {"config": str(args.config), "chars": args.chars}  # the config says the rest
            if args.run_config is not None
            else {
                **{k: getattr(args, k) for k in SETTINGS},
                "ngram_order": args.ngram_order,
                "seed": args.seed,
            }
        )
        figures_out["settings"] = {
            **sizes,
            "models": args.models,
            "ppmd_orders": args.ppmd_orders,
            "ppmd_mem_mib": args.ppmd_mem,
            "quick": args.quick,
            "corpora": [name for name, _, _ in args.corpora],
        }
        if any(dynamic.values()):
            figures_out["dynamic"] = {k: v for k, v in dynamic.items() if v}
        figures_out["details"] = details
        figures_out["command"] = shlex.join([sys.executable, *sys.argv])
        figures_out["machine"] = machine()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures_out, indent=2) + "\n", encoding="utf-8")
    bests = []
    for name, bpc in table.items():
        best = min(bpc, key=lambda k: (bpc[k], k))
        bests.append(f"{name}={best.replace(' ', '')}:{bpc[best]:.4f}")
    print("\nbest " + " ".join(bests))
    if failures or not all(math.isfinite(v) for bpc in table.values() for v in bpc.values()):
        print("error: " + ("; ".join(failures) or "a figure is not finite"), file=sys.stderr)
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
