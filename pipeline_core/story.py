"""Three lines under a leaderboard whose source has a known optimum: who won, by how
much, and why, in the tutorial's terms.

Every clause is read off the run, never assumed: the winner and each model's gap to
the oracle come from the leaderboard; "why" compares how far back the source's law
reaches (:attr:`~pipeline_core.oracle.KnownOptimum.span`) with how far back each model
could look when scored (:attr:`~pipeline_core.experiment.ModelResult.reach`), and
quotes the measured gradient flow (‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ over the scoring window) of
the recurrent models: the vanishing gradient the tutorial blames for the vanilla RNN's
short memory, and the reason it gives for LSTM and GRU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pipeline_core.experiment import ModelResult
    from pipeline_core.oracle import KnownOptimum

BASELINE = "baseline"


def story_lines(
    table: pd.DataFrame, optimum: KnownOptimum, results: Sequence[ModelResult]
) -> list[str]:
    """``who won``, ``by how much`` and ``why`` (empty when no model finished)."""
    done = table[(table["status"] == "finished") & (table["plugin"] != BASELINE)]
    if done.empty or "gap_bpc" not in table.columns:
        return []
    oracle = float(optimum.baseline.test.bpc)
    return [
        who_won(done, oracle),
        by_how_much(done, oracle, optimum.memoryless_bits),
        why(done, optimum, {r.label: r for r in results}),
    ]


def who_won(done: pd.DataFrame, oracle: float) -> str:
    best = done.iloc[0]
    line = (
        f"who won: {best['model']}, {best['test_bpc']:.4f} bpc on test, "
        f"{best['gap_bpc']:+.4f} from the oracle's {oracle:.4f}"
    )
    if len(done) > 1:
        second = done.iloc[1]
        line += f"; {second['model']} next, {second['test_bpc'] - best['test_bpc']:+.4f} behind"
    return line


def by_how_much(done: pd.DataFrame, oracle: float, memoryless: float | None) -> str:
    gaps = ", ".join(f"{row['model']} {row['gap_bpc']:+.4f}" for _, row in done.iterrows())
    line = f"by how much: gap to the optimum (bpc) {gaps}"
    if memoryless is not None:
        line += (
            f"; remembering nothing costs {memoryless - oracle:+.4f} (memoryless {memoryless:.4f})"
        )
    return line


def why(done: pd.DataFrame, optimum: KnownOptimum, results: dict[str, ModelResult]) -> str:
    parts = [optimum.span_note] if optimum.span_note else []
    reaches = {str(m): results[str(m)].reach for m in done["model"] if str(m) in results}
    reach = {m: r for m, r in reaches.items() if r is not None}
    if optimum.span is not None and reach:
        parts.append(reach_clause(optimum.span, reach))
        if all(r >= optimum.span for r in reach.values()):
            # memory decides nothing here, so the gradient over the window is no reason
            return "why: " + "; ".join(parts)
    ratios = {
        str(m): flow_ratio(results[str(m)].grad_flow) for m in done["model"] if str(m) in results
    }
    flows = {m: r for m, r in ratios.items() if r is not None}
    if flows:
        parts.append(gradient_clause(flows, results))
    return "why: " + "; ".join(parts) if parts else "why: nothing known of the source's reach"


def reach_clause(span: int, reach: dict[str, float]) -> str:
    """Which models could see as far back as the law reaches, with their reach."""

    def seen(r: float) -> str:
        return "the whole stream" if math.isinf(r) else f"{int(r)}"

    short = {m: r for m, r in reach.items() if r < span}
    if not short:
        listed = ", ".join(f"{m} {seen(r)}" for m, r in reach.items())
        return (
            f"every model sees that far back ({listed}), so no long memory is needed: "
            "what separates them is how well each estimated the law from the training text"
        )
    names = ", ".join(f"{m} ({seen(r)})" for m, r in short.items())
    verb = "sees" if len(short) == 1 else "see"
    return f"{names} {verb} fewer than {span} characters back, so cannot use it"


def gradient_clause(flows: dict[str, float], results: dict[str, ModelResult]) -> str:
    """The measured gradient flow, strongest first, in the tutorial's words."""
    ranked = sorted(flows.items(), key=lambda item: -item[1])
    steps = max(len(results[m].grad_flow or []) for m in flows)
    figures = ", ".join(f"{m} {r:.0e}" for m, r in ranked)
    return (
        f"the gradient reaching {steps} steps back, as a fraction of the last step's: "
        f"{figures} (a vanishing gradient cannot teach a model to remember: the gates of "
        "LSTM and GRU are there to keep it alive)"
    )


def flow_ratio(norms: Sequence[float] | None) -> float | None:
    """‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ of a gradient-flow curve (None: no finite figure)."""
    if not norms or len(norms) < 2 or not norms[-1] > 0:
        return None
    ratio = float(norms[0]) / float(norms[-1])
    return ratio if math.isfinite(ratio) else None
