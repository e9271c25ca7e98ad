"""``python -m benchmarks NAME`` and ``python -m benchmarks.readme``: the one entry point
to the benchmarks, its results files and README's generated Results section."""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as suite
from benchmarks import readme as gen
from tests.conftest import REPO, WONDERLAND, run_benchmarks

RESULTS = REPO / "benchmarks" / "results"
RECORD_KEYS = {"name", "command", "machine", "date", "figures"}
MACHINE_KEYS = {"cpu_model", "cpu_count", "ram_gib", "platform", "python", "torch", "numpy"}


# ---- the entry point: errors --------------------------------------------------------


def test_unknown_name_is_one_line_error_listing_the_names(tmp_path: Path) -> None:
    proc = run_benchmarks("--results-dir", str(tmp_path), "nope")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown benchmark 'nope'")
    for name in ("compressors", "ngram", "trainer", "runners", "scaling", "seed", "all"):
        assert name in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_not_built_is_one_line_error_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every registered benchmark is built now: a registry entry of None stands for one
    monkeypatch.setitem(suite.BENCHMARKS, "later", None)
    assert suite.main(["--results-dir", str(tmp_path), "later"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: benchmark 'later' is not built yet\n"
    assert list(tmp_path.iterdir()) == []


def test_missing_module_is_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(suite.BENCHMARKS, "ghost", "no_such_benchmark_module")
    assert suite.main(["--results-dir", str(tmp_path), "ghost"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: benchmark 'ghost' is not built yet: benchmarks/no_such_benchmark_module.py"
        " is missing\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_json_is_reserved_and_all_takes_no_arguments(tmp_path: Path) -> None:
    proc = run_benchmarks(
        "--results-dir", str(tmp_path), "ngram", "--json", str(tmp_path / "x.json")
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: --json is set by")
    assert len(proc.stderr.splitlines()) == 1
    proc = run_benchmarks("--results-dir", str(tmp_path), "all", "--quick")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_results_dir_option_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(suite.RESULTS_ENV, raising=False)
    assert suite.results_dir(None) == RESULTS
    monkeypatch.setenv(suite.RESULTS_ENV, "/tmp/elsewhere")
    assert suite.results_dir(None) == Path("/tmp/elsewhere")
    assert suite.results_dir("mine") == Path("mine")


# ---- the entry point: a record, with a fake benchmark in-process ----------------------


def fake_benchmark(rc: int, figures: dict[str, Any]) -> types.ModuleType:
    module = types.ModuleType("benchmarks.fake_for_test")
    seen: list[list[str]] = []

    def main(argv: list[str] | None = None) -> int:
        argv = list(argv or [])
        seen.append(argv)
        path = Path(argv[argv.index("--json") + 1])
        path.write_text(json.dumps(figures), encoding="utf-8")
        print("the benchmark's own table")
        return rc

    module.main = main  # type: ignore[attr-defined]
    module.seen = seen  # type: ignore[attr-defined]
    return module


def test_record_holds_command_machine_date_and_the_module_figures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = {
        "command": "/somewhere/python fake.py",
        "machine": {"platform": "theirs", "torch_threads": 3},
        "ratio": 1.23456,
        "nested": {"a": 1, "b": [0.5, 2.0]},
    }
    module = fake_benchmark(0, figures)
    monkeypatch.setitem(sys.modules, "benchmarks.fake_for_test", module)
    monkeypatch.setitem(suite.BENCHMARKS, "fake", "fake_for_test")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    assert suite.main(["--results-dir", str(tmp_path), "fake", "--size", "3"]) == 0
    assert module.seen[0][:2] == ["--size", "3"] and module.seen[0][2] == "--json"
    out = capsys.readouterr().out
    assert "the benchmark's own table" in out and "ratio" in out and "1.235" in out

    assert [p.name for p in tmp_path.iterdir()] == ["fake.json"]
    record = json.loads((tmp_path / "fake.json").read_text(encoding="utf-8"))
    assert set(record) >= RECORD_KEYS
    assert record["name"] == "fake"
    assert record["command"].endswith(f"-m benchmarks --results-dir {tmp_path} fake --size 3")
    # the module's own command is gone, its machine merged under ours (ours win)
    assert record["figures"] == {"ratio": 1.23456, "nested": {"a": 1, "b": [0.5, 2.0]}}
    machine = record["machine"]
    assert set(machine) >= MACHINE_KEYS
    assert machine["platform"] == platform.platform() and machine["torch_threads"] == 3
    assert machine["python"] == platform.python_version()
    assert machine["cpu_count"] >= 1 and machine["ram_gib"] > 0
    assert machine["torch"] != "not installed" and machine["numpy"] != "not installed"
    date = dt.datetime.fromisoformat(record["date"])
    assert date.tzinfo is not None and before <= date <= dt.datetime.now(dt.UTC)


def test_a_failing_benchmark_writes_no_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "benchmarks.fake_for_test", fake_benchmark(1, {"x": 1}))
    monkeypatch.setitem(suite.BENCHMARKS, "fake", "fake_for_test")
    (tmp_path / "fake.json").write_text('{"kept": true}', encoding="utf-8")
    assert suite.main(["--results-dir", str(tmp_path), "fake"]) == 1
    assert "exited with 1" in capsys.readouterr().err
    assert (tmp_path / "fake.json").read_text(encoding="utf-8") == '{"kept": true}'


def test_all_runs_every_built_one_and_skips_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "benchmarks.fake_for_test", fake_benchmark(0, {"x": 1.5}))
    monkeypatch.setattr(
        suite,
        "BENCHMARKS",
        {"fake": "fake_for_test", "ghost": "no_such_benchmark_module", "later": None},
    )
    assert suite.main(["--results-dir", str(tmp_path), "all"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["fake.json"]
    record = json.loads((tmp_path / "fake.json").read_text(encoding="utf-8"))
    assert record["command"].endswith(f"-m benchmarks --results-dir {tmp_path} fake")
    assert record["invoked_as"].endswith(f"-m benchmarks --results-dir {tmp_path} all")
    assert record["figures"] == {"x": 1.5}
    assert "not built yet (skipped): ghost, later" in capsys.readouterr().out


@pytest.mark.skipif(not WONDERLAND.is_file(), reason=f"{WONDERLAND} not present")
def test_ngram_writes_a_results_json_with_every_key(tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = ("--results-dir", str(out), "ngram", "--chars", "20000", "--nltk-sample", "200")
    proc = run_benchmarks(*args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio=" in proc.stdout  # the module's own output
    assert sorted(p.name for p in out.iterdir()) == ["ngram.json"]
    record = json.loads((out / "ngram.json").read_text(encoding="utf-8"))
    assert set(record) >= RECORD_KEYS
    assert record["name"] == "ngram"
    assert record["command"].endswith("-m benchmarks " + " ".join(args))
    assert set(record["machine"]) >= MACHINE_KEYS
    assert record["date"].endswith("Z")
    figures = record["figures"]
    settings = figures["settings"]
    assert settings["chars"] == 20000 and settings["order"] == 5
    assert settings["train_chars"] + settings["test_chars"] == 20000
    assert settings["nltk_scored"] == 200 and settings["nltk_extrapolated"] is True
    assert figures["seqlab_bpc"] == pytest.approx(figures["nltk_bpc"], abs=1e-9)
    assert figures["bpc_abs_diff"] <= 1e-9
    assert figures["ratio"] == pytest.approx(figures["nltk_s"] / figures["seqlab_s"])
    assert 0.5 < figures["seqlab_bpc"] < 8


# ---- the README generator ------------------------------------------------------------


def test_format_and_flatten() -> None:
    fv = gen.format_value
    assert fv(1.23456) == "1.235" and fv(0.000123456) == "0.0001235"
    assert fv(974.53) == "974.5" and fv(123456.7) == "123500" and fv(14265.0) == "14265"
    assert fv(True) == "true" and fv(None) == "null" and fv(7) == "7"
    assert fv([0.5, 2]) == "[0.5, 2]" and fv(float("nan")) == "nan"
    curve = [float(i) / 4 for i in range(20)]  # a per-epoch curve: its ends and length
    assert fv(curve) == "[0, 0.25, …, 4.75] (20 values)"
    assert fv(curve[: gen.LONGEST_LIST]) == "[" + ", ".join(map(fv, curve[:8])) + "]"
    rows = gen.flatten({"b": {"y": 2, "x": {"z": 1}}, "a": 1.0, "c": {}})
    assert rows == [("a", 1.0), ("b.x.z", 1), ("b.y", 2), ("c", {})]


def test_committed_results_are_the_built_benchmarks_runs() -> None:
    records = gen.load_results(RESULTS)
    names = [r["name"] for r in records]
    assert {"ngram", "trainer", "runners"} <= set(names)
    for record in records:
        assert set(record) >= RECORD_KEYS
        assert f"-m benchmarks {record['name']}" in record["command"]
        assert set(record["machine"]) >= MACHINE_KEYS
        assert record["figures"]
        assert (RESULTS / f"{record['name']}.json").is_file()


def test_readme_section_is_what_the_generator_makes_of_the_committed_results() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.count(gen.BEGIN) == 1 and text.count(gen.END) == 1
    assert text.index("## Results") < text.index(gen.BEGIN) < text.index("## Configuration")
    section = gen.current_section(text)
    assert section == gen.render(RESULTS)
    # each committed figure is in it, as formatted, under its benchmark
    for record in gen.load_results(RESULTS):
        part = section.split(f"### {record['name']}\n", 1)[1].split("\n### ", 1)[0]
        assert f"`{record['command']}`" in part
        for key, value in gen.figure_rows(record["figures"]):
            assert f"| `{key}` | {gen._cell(value)} |" in part


def test_check_passes_on_the_committed_readme() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.readme", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout


def test_generator_is_idempotent_and_check_fails_on_an_edited_figure(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    shutil.copyfile(REPO / "README.md", readme)
    original = readme.read_bytes()
    args = ["--readme", str(readme), "--results-dir", str(RESULTS)]
    assert gen.main(args) == 0
    once = readme.read_bytes()
    assert gen.main(args) == 0
    assert readme.read_bytes() == once == original  # the committed README is current

    # an edited figure: one table value changed by hand
    text = once.decode("utf-8")
    section = gen.current_section(text)
    row = next(line for line in section.splitlines() if line.startswith("| `"))
    edited_row = row.rsplit("|", 2)[0] + "| 12345.6789 |"
    assert edited_row != row
    readme.write_text(text.replace(row, edited_row, 1), encoding="utf-8")
    before = readme.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.readme", "--check", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "out of date" in proc.stderr
    assert f"-{edited_row}" in proc.stderr and f"+{row}" in proc.stderr  # what differs
    assert readme.read_bytes() == before  # --check writes nothing
    assert gen.main(args) == 0
    assert readme.read_bytes() == original  # and a rewrite puts the figure back


def test_generator_sorts_and_touches_only_the_section(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for name, ratio in (("zeta", 2.0), ("alpha", 0.333333)):
        record = {
            "name": name,
            "command": f"python -m benchmarks {name}",
            "machine": {"cpu_model": "X", "cpu_count": 2, "ram_gib": 7.8},
            "date": "2026-01-01T00:00:00Z",
            "figures": {"z": 1, "ratio": ratio, "deep": {"b": 2, "a": "x|y"}},
        }
        (results / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{gen.BEGIN}\nold\n{gen.END}\ntail\n", encoding="utf-8")
    assert gen.main(["--readme", str(readme), "--results-dir", str(results)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(f"head\n{gen.BEGIN}\n") and text.endswith(f"\n{gen.END}\ntail\n")
    assert "old" not in text
    assert text.index("### alpha") < text.index("### zeta")
    alpha = text.split("### alpha", 1)[1].split("### zeta", 1)[0]
    keys = [line.split("`")[1] for line in alpha.splitlines() if line.startswith("| `")]
    assert keys == ["deep.a", "deep.b", "ratio", "z"]
    assert "| `ratio` | 0.3333 |" in alpha and "| `deep.a` | x\\|y |" in alpha
    assert gen.render(results) == gen.render(results)
    assert gen.main(["--check", "--readme", str(readme), "--results-dir", str(results)]) == 0


def test_readme_without_markers_is_an_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n", encoding="utf-8")
    assert gen.main(["--readme", str(readme), "--results-dir", str(RESULTS)]) == 2
    assert gen.main(["--check", "--readme", str(readme)]) == 2
    assert readme.read_text(encoding="utf-8") == "no markers\n"


def test_a_leaderboard_per_corpus_ranks_the_static_rows_and_keeps_dynamic_apart() -> None:
    figures = {
        "alice": {"gzip -9": 2.6, "lstm": 1.9, "ppmd": 1.77},
        "dynamic": {"alice": {"lstm": 1.8}},
        "details": {
            "alice": {
                "clean": "seed",
                "test_chars": 14264,
                "notes": {"gzip -9": "deflate", "lstm": "seqlab lstm | 2 layers", "ppmd": "PPMd"},
            }
        },
        "settings": {"seed": 0},
    }
    lines = gen.leaderboards(figures)
    assert lines[0] == "**alice** (cleaning: seed, test = the last 14,264 characters)"
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert rows == [
        "| 1 | ppmd | 1.7700 |  | PPMd |",
        "| 2 | lstm | 1.9000 | 1.8000 | seqlab lstm \\| 2 layers |",
        "| 3 | gzip -9 | 2.6000 |  | deflate |",
    ]
    assert gen.leaderboards({"ratio": 2.0, "settings": {"a": 1}}) == []  # not a leaderboard
