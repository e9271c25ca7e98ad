"""What ``seqlab data inspect`` reports about a cleaned corpus."""

from __future__ import annotations

from typing import Any

from pipeline_core.cleaning import clean_documents
from pipeline_core.config import DataConfig, validate_model
from pipeline_core.sources import load_documents
from pipeline_core.vectorize import corpus_text, tokenize, vectorize, warn_unk


def inspect_source(source: str, **data: Any) -> dict[str, Any]:
    """Documents, characters, vocabulary size (the corpus's distinct symbols; specials
    under their own key), the training vocabulary's size (what models predict over,
    besides the specials) and each split's out-of-vocabulary rate, tokens per split and
    the sha256 of the cleaned text.

    ``data`` holds any other :class:`DataConfig` field (clean, level, errors, ...).
    """
    config = validate_model(DataConfig, {"source": source, **data})
    # the stages themselves, not pipeline_core.experiment: no torch to import here
    docs = clean_documents(load_documents(config.source, errors=config.errors), config.clean)
    text = corpus_text(docs["text"].tolist())
    corpus = vectorize(text, config)
    unk = warn_unk(corpus)
    return {
        "documents": len(docs),
        "characters": len(text),
        "vocab_size": len(set(tokenize(text, config.level)[0])),
        "train_vocab_size": len(corpus.vocab.symbols),
        "specials": list(corpus.vocab.specials),
        "tokens": len(corpus.ids),
        "unk_tokens": unk.tokens,
        "splits": corpus.split_sizes(),
        "oov_rate": {k: round(v, 6) for k, v in corpus.oov_rates().items()},
        "sha256": corpus.text_sha256,
        "level": config.level,
        "clean": config.clean,
    }
