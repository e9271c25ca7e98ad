"""A numeric time series for the ``regress`` task: a CSV validated with pandera.

A header row names the columns; every cell must be a finite number (pandera coerces each
column to float and checks it). A bad cell is one DataError naming the file, the row
(data rows count from 1; the header is not one) and the column. An empty cell or NaN is
refused rather than filled in: a model would learn from a value nobody measured.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from pipeline_core.config import DecodeErrors
from pipeline_core.errors import DataError


def series_schema(columns: list[str]) -> pa.DataFrameSchema:
    """Every named column float-coercible, not null and finite; no other column."""
    finite = pa.Check(lambda s: np.isfinite(s), error="finite")
    return pa.DataFrameSchema(
        {c: pa.Column(float, checks=finite, coerce=True, nullable=False) for c in columns},
        strict=True,
    )


def cell_problem(cell: str) -> str:
    """Why one raw cell is not a finite number, in a few words."""
    try:
        value = float(cell)
    except ValueError:
        return "empty cell" if not cell.strip() else f"not a number: {cell.strip()!r}"
    return "NaN is refused" if math.isnan(value) else f"not a finite number: {cell.strip()!r}"


def parse_series(text: str, name: str) -> pd.DataFrame:
    """The float table of CSV ``text``; the first bad cell is a one-line DataError."""
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{name}: not a CSV table ({' '.join(str(err).split())[:120]})") from None
    columns = [str(c) for c in raw.columns]
    raw.columns = pd.Index(columns)
    if not len(raw):
        raise DataError(f"{name}: no rows of numbers under the header")
    try:
        return series_schema(columns).validate(raw, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases.dropna(subset=["index"])
        if not len(cases):
            raise DataError(f"{name}: not a table of numbers") from None
        order = cases.assign(
            _row=cases["index"].astype(int), _col=cases["column"].map(columns.index)
        ).sort_values(["_row", "_col"])
        first = order.iloc[0]
        row, column = int(first["_row"]), str(first["column"])
        problem = cell_problem(str(raw.iloc[row][column]))
        raise DataError(f"{name}: row {row + 1}, column {column}: {problem}") from None


def read_series(source: str, errors: DecodeErrors = "strict") -> pd.DataFrame:
    """The validated table of the CSV at ``source`` (a file or URL: one document)."""
    from pipeline_core.sources import load_documents

    docs = load_documents(source, errors=errors)
    if len(docs) != 1:
        raise DataError(f"{source}: a CSV series is one file ({len(docs)} documents found)")
    return parse_series(str(docs["text"].iloc[0]), str(docs["doc_id"].iloc[0]))
