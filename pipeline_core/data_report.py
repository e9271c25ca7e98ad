"""What ``seqlab data inspect`` reports about a cleaned corpus."""

from __future__ import annotations

from typing import Any

from pipeline_core import experiment
from pipeline_core.config import DataConfig, validate_model
from pipeline_core.vectorize import corpus_text, vectorize


def inspect_source(source: str, **data: Any) -> dict[str, Any]:
    """Documents, characters, vocabulary size (corpus symbols; specials under their own
    key), tokens per split and the sha256 of the cleaned text.

    ``data`` holds any other :class:`DataConfig` field (clean, level, errors, ...).
    """
    config = validate_model(DataConfig, {"source": source, **data})
    docs = experiment.clean(experiment.ingest(config), config)
    text = corpus_text(docs["text"].tolist())
    corpus = vectorize(text, config)
    return {
        "documents": len(docs),
        "characters": len(text),
        "vocab_size": len(corpus.vocab.symbols),
        "specials": list(corpus.vocab.specials),
        "tokens": len(corpus.ids),
        "splits": corpus.split_sizes(),
        "sha256": corpus.text_sha256,
        "level": config.level,
        "clean": config.clean,
    }
