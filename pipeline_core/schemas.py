"""pandera models of the tables passed between stages.

Every stage hands the next one a validated table, so a bug (or a bad input that slipped
through) stops at the boundary where it happened instead of surfacing as a wrong metric
three stages later. Validation is lazy and its failures become a one-line
:class:`~pipeline_core.errors.DataError` naming the table, column, check and a failing
value. To add a table: write a ``DataFrameModel`` with ``Config.strict = True`` and a
``validate_<table>`` wrapper over :func:`validate_table`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from pandera.typing import Series

from pipeline_core.errors import DataError

_MAX_SHOWN = 40  # characters of a failing value shown in an error message


class Documents(pa.DataFrameModel):
    """One row per ingested (or cleaned) document: what every later stage reads."""

    doc_id: Series[str] = pa.Field(unique=True)
    source: Series[str]
    # str_length(min_value=1) would accept "   ": require a non-space character instead.
    text: Series[str] = pa.Field(str_contains=r"\S")
    n_chars: Series[int] = pa.Field(ge=1)

    class Config:
        strict = True

    @pa.dataframe_check
    @classmethod
    def n_chars_is_len_text(cls, df: pd.DataFrame) -> Series[bool]:
        """``n_chars`` is a cache of ``len(text)``; a stale one would skew every metric."""
        return df["n_chars"] == df["text"].str.len()


M = TypeVar("M", bound=pa.DataFrameModel)


def _shown(value: Any) -> str:
    """A short repr of a failing value (documents can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _describe_failure(row: pd.Series) -> str:
    """One failure-case row of pandera's table as a short phrase."""
    check, column, value, index = row["check"], row["column"], row["failure_case"], row["index"]
    if check == "column_in_schema":
        return f"unexpected column {value!r}"
    if check == "column_in_dataframe":
        return f"missing column {value!r}"
    at = "" if index is None or pd.isna(index) else f" at row {index}"
    if row["schema_context"] == "Column":
        return f"column {column!r} failed {check}{at}: {_shown(value)}"
    return f"check {check} failed{at}"


def describe_schema_errors(err: SchemaErrors, table: str) -> str:
    """One line for a lazy validation: the first failure (column failures first) + a count."""
    cases = err.failure_cases.copy()
    cases["_order"] = (cases["schema_context"] != "Column").astype(int)
    cases = cases.sort_values("_order", kind="stable")
    # A dataframe-level check reports one row per column; count each failing row once.
    distinct = cases.drop_duplicates(subset=["schema_context", "check", "index"])
    first = _describe_failure(distinct.iloc[0])
    more = len(distinct) - 1
    tail = f" (and {more} more failure{'s' if more != 1 else ''})" if more else ""
    return f"invalid {table} table: {first}{tail}"


def validate_table(model: type[M], df: pd.DataFrame, table: str | None = None) -> pd.DataFrame:
    """Validate ``df`` against ``model`` lazily; any failure is one DataError line."""
    name = table or model.__name__
    try:
        return model.validate(df, lazy=True)
    except SchemaErrors as err:
        raise DataError(describe_schema_errors(err, name)) from None


def validate_documents(df: pd.DataFrame) -> pd.DataFrame:
    """A validated :class:`Documents` table (the same frame, checked)."""
    return validate_table(Documents, df)


def make_documents(rows: Iterable[tuple[str, str, str]]) -> pd.DataFrame:
    """A validated Documents table from ``(doc_id, source, text)``; ``n_chars`` is derived."""
    items = list(rows)
    df = pd.DataFrame(
        {
            "doc_id": pd.Series([r[0] for r in items], dtype=str),
            "source": pd.Series([r[1] for r in items], dtype=str),
            "text": pd.Series([r[2] for r in items], dtype=str),
            "n_chars": pd.Series([len(r[2]) for r in items], dtype="int64"),
        }
    )
    return validate_documents(df)
