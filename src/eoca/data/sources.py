"""Reading a user's raw files for the importer: CSV (any delimiter, whitespace-separated, with or without a
header, plain or compressed) and Parquet, with errors that name the file, row and column.

CSV cells are read as **text**: nothing is inferred, so an id such as ``00014974`` arrives exactly as written
and each column is converted only once its role is known (:func:`to_float`, :func:`to_int`, :func:`to_days`).
Conversions report every bad row of a column at once into a problem list, so one import run shows all there
is to fix in a file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from eoca.errors import DataValidationError

NULL_TEXT = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
"""Cell texts read as missing."""
MAX_SHOWN = 5

Array: TypeAlias = pa.Array | pa.ChunkedArray


class SourceFormat(BaseModel):
    """How a file is laid out (fields shared by every spec section that names a file)."""

    model_config = ConfigDict(extra="forbid")

    delimiter: str = Field(default=",", description='one character ("," ";" "\\t" "|") or "whitespace"')
    header: bool = Field(default=True, description="whether the first line names the columns")
    column_names: list[str] | None = Field(
        default=None, description="names of the columns, in file order; required when header is false"
    )


def _is_parquet(path: Path) -> bool:
    return path.name.endswith(".parquet")


def _rows(rows: np.ndarray, values: list[Any] | None = None) -> str:
    shown = rows[:MAX_SHOWN]
    if values is None:
        listed = ", ".join(str(int(r)) for r in shown)
    else:
        listed = ", ".join(f"{int(r)} ({v!r})" for r, v in zip(shown, values[:MAX_SHOWN], strict=False))
    more = f" and {len(rows) - MAX_SHOWN:,} more" if len(rows) > MAX_SHOWN else ""
    return f"{len(rows):,} row(s), first at row {listed}{more}"


def read_source(path: Path, fmt: SourceFormat | None = None) -> pa.Table:
    """Read a CSV or Parquet file; CSV columns come back as strings (null for the texts in :data:`NULL_TEXT`).

    Raises:
        DataValidationError: file missing, unreadable, not UTF-8 (with line and column), a column named twice
            in the header, a header with no rows ("the table is empty"), or rows with the wrong field count.
    """
    fmt = fmt or SourceFormat()
    if not path.exists():
        raise DataValidationError(f"{path}: file not found")
    if _is_parquet(path):
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataValidationError(f"{path}: cannot be read as Parquet: {exc}") from exc
        _check_names(path, table.column_names)
    elif fmt.delimiter == "whitespace":
        table = _read_whitespace(path, fmt)
    else:
        table = _read_delimited(path, fmt)
    if table.num_rows == 0:
        raise DataValidationError(f"{path}: the table is empty (a header but no data rows)")
    return table


def _check_names(path: Path, names: list[str]) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataValidationError(
            f"{path}: column(s) {dup} appear more than once in the header; every column needs a distinct name"
        )


def _raw_bytes(path: Path) -> bytes:
    with pa.input_stream(str(path), compression="detect") as stream:
        data: bytes = stream.read()
    return data


def _decode(path: Path, data: bytes, delimiter: str | None, names: list[str] | None) -> str:
    """``data`` as text, or an error naming the first line and column holding bytes that are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line_no = data.count(b"\n", 0, exc.start) + 1
        prefix = data[line_start : exc.start]
        if delimiter is None:
            # Inside a whitespace-separated field unless the bad byte starts a new one.
            inside = bool(prefix) and not prefix[-1:].isspace()
            field = len(prefix.split()) - (1 if inside else 0)
        else:
            field = prefix.count(delimiter.encode())
        column = f"column '{names[field]}'" if names and 0 <= field < len(names) else f"field {field + 1}"
        bad = data[exc.start : exc.end].hex(" ")
        raise DataValidationError(
            f"{path}: line {line_no}, {column}: bytes {bad} are not UTF-8; save the file as UTF-8"
        ) from exc


def _read_whitespace(path: Path, fmt: SourceFormat) -> pa.Table:
    text = _decode(path, _raw_bytes(path), None, fmt.column_names)
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if fmt.header:
        if not lines:
            raise DataValidationError(f"{path}: the file is empty (no header line)")
        names = lines.pop(0)
        if fmt.column_names is not None:
            names = list(fmt.column_names)
    elif fmt.column_names is None:
        raise DataValidationError(f"{path}: header is false, so give column_names (the file's columns in order)")
    else:
        names = list(fmt.column_names)
    _check_names(path, names)
    bad = np.asarray([i for i, ln in enumerate(lines) if len(ln) != len(names)], dtype=np.int64)
    if bad.size:
        counts = [len(lines[i]) for i in bad[:MAX_SHOWN]]
        raise DataValidationError(
            f"{path}: rows with a field count other than the {len(names)} columns {names}: {_rows(bad, counts)}"
        )
    nulls = set(NULL_TEXT)
    cols = {
        n: pa.array([None if ln[j] in nulls else ln[j] for ln in lines], type=pa.string()) for j, n in enumerate(names)
    }
    return pa.table(cols)


def _read_delimited(path: Path, fmt: SourceFormat) -> pa.Table:
    if len(fmt.delimiter) != 1:
        raise DataValidationError(f"{path}: delimiter {fmt.delimiter!r} must be one character or 'whitespace'")
    data = _raw_bytes(path)
    if fmt.header:
        first = data.split(b"\n", 1)[0].rstrip(b"\r")
        header = _decode(path, first, fmt.delimiter, None)
        names = [h.strip().strip('"') for h in header.split(fmt.delimiter)] if header else []
        if fmt.column_names is not None:
            names = list(fmt.column_names)
        skip = 1
    elif fmt.column_names is None:
        raise DataValidationError(f"{path}: header is false, so give column_names (the file's columns in order)")
    else:
        names, skip = list(fmt.column_names), 0
    _check_names(path, names)
    if not names or names == [""]:
        raise DataValidationError(f"{path}: the file is empty (no header line)")
    try:
        return pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip),
            parse_options=pacsv.ParseOptions(delimiter=fmt.delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                null_values=list(NULL_TEXT),
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) or "utf8" in str(exc).lower():
            _decode(path, data, fmt.delimiter, names)
        raise DataValidationError(f"{path}: cannot be read as CSV: {exc}") from exc


# --- conversions by role -------------------------------------------------------------------------------------
def _where(file: Path | str, column: str, role: str) -> str:
    return f"{file}, column '{column}'" + (f" ({role})" if role and role != column else "")


def _text_to_number(arr: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast text to ``target``; returns the values (null where the text does not parse) and the bad rows."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    stripped = pc.utf8_trim_whitespace(arr)
    lowered = pc.utf8_lower(stripped)
    boolean = pc.is_in(lowered, value_set=pa.array(["true", "false"]))
    if pc.all(pc.or_kleene(boolean, pc.is_null(arr))).as_py() and pc.any(boolean).as_py():
        return pc.cast(pc.equal(lowered, "true"), target), np.empty(0, np.int64)
    try:
        return pc.cast(stripped, target), np.empty(0, np.int64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # The failure path parses row by row to list every bad cell.
    out: list[Any] = []
    bad: list[int] = []
    py = pa.float64() if pa.types.is_floating(target) else pa.int64()
    for i, v in enumerate(stripped.to_pylist()):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(float(v) if pa.types.is_floating(py) else int(v))
        except ValueError:
            out.append(None)
            bad.append(i)
    return pa.array(out, type=target), np.asarray(bad, dtype=np.int64)


def to_float(arr: Array, file: Path | str, column: str, role: str, problems: list[str]) -> pa.ChunkedArray:
    """A numeric column as float64 (nulls kept); non-numeric cells are added to ``problems``."""
    return _to_number(arr, pa.float64(), "a number", file, column, role, problems)


def to_int(arr: Array, file: Path | str, column: str, role: str, problems: list[str]) -> pa.ChunkedArray:
    """An integer column as int64 (nulls kept); other cells are added to ``problems``."""
    return _to_number(arr, pa.int64(), "an integer", file, column, role, problems)


def _to_number(
    arr: Array, target: pa.DataType, what: str, file: Path | str, column: str, role: str, problems: list[str]
) -> pa.ChunkedArray:
    typ = arr.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        values, bad = _text_to_number(pa.chunked_array([arr]) if isinstance(arr, pa.Array) else arr, target)
        if bad.size:
            texts = arr.take(pa.array(bad[:MAX_SHOWN])).to_pylist()
            problems.append(f"{_where(file, column, role)}: must be {what}: {_rows(bad, texts)}")
        return pa.chunked_array([values])
    if pa.types.is_boolean(typ) or pa.types.is_integer(typ) or pa.types.is_floating(typ):
        if pa.types.is_integer(target) and pa.types.is_floating(typ):
            vals = np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            frac = np.isfinite(vals) & (vals != np.round(vals))
            if frac.any():
                rows = np.flatnonzero(frac)
                problems.append(f"{_where(file, column, role)}: must be {what}: {_rows(rows, vals[rows].tolist())}")
                return pa.chunked_array([pa.nulls(len(vals), target)])
            return pa.chunked_array(
                [pa.array(np.where(np.isfinite(vals), vals, 0).astype(np.int64), mask=~np.isfinite(vals))]
            )
        out = pc.cast(arr, target)
        return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out])
    problems.append(f"{_where(file, column, role)}: must be {what}, has type {typ}")
    return pa.chunked_array([pa.nulls(len(arr), target)])


def to_id(
    arr: Array, id_type: Literal["string", "integer"], file: Path | str, column: str, problems: list[str]
) -> pa.ChunkedArray:
    """An id column kept exactly: text stays text (``00014974`` is not ``14974``) unless ids are declared
    integers; integer ids read from Parquet become their decimal text when ids are strings."""
    if id_type == "integer":
        return to_int(arr, file, column, "id", problems)
    typ = arr.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        out = pc.cast(arr, pa.string())
    elif pa.types.is_integer(typ) or pa.types.is_dictionary(typ):
        out = pc.cast(pc.cast(arr, pa.string()) if pa.types.is_dictionary(typ) else arr, pa.string())
    else:
        problems.append(
            f"{_where(file, column, 'id')}: has type {typ}; ids must be text or integers (floats would change them)"
        )
        return pa.chunked_array([pa.nulls(len(arr), pa.string())])
    return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out])


EPOCH = dt.date(1970, 1, 1)


def date_to_days(value: Any, time_format: str | None, what: str) -> float:
    """A window bound (a YAML date, a datetime, a number or a text in ``time_format``) as days since
    1970-01-01 (numbers are taken as they are: already in the time column's unit)."""
    if isinstance(value, dt.datetime):
        return (value - dt.datetime(1970, 1, 1, tzinfo=value.tzinfo)).total_seconds() / 86400.0
    if isinstance(value, dt.date):
        return float((value - EPOCH).days)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if time_format is not None:
            return date_to_days(str(value), time_format, what)
        return float(value)
    if isinstance(value, str):
        for fmt in (time_format, "%Y-%m-%d"):
            if fmt is None:
                continue
            try:
                return date_to_days(dt.datetime.strptime(value, fmt), None, what)
            except ValueError:
                continue
    raise DataValidationError(f"{what}: {value!r} is not a date (YYYY-MM-DD or time_format) or a number")


def to_days(arr: Array, time_format: str | None, file: Path | str, column: str, problems: list[str]) -> pa.ChunkedArray:
    """A time column as float64 days: dates parsed with ``time_format`` (or ISO ``YYYY-MM-DD`` when none is
    given and the text is not a number) count days since 1970-01-01 (whole days: a calendar day is one purchase
    occasion); numbers are kept as they are (their own unit)."""
    typ = arr.type
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        secs = pc.cast(pc.cast(arr, pa.timestamp("s")), pa.int64())
        return pa.chunked_array([pc.floor(pc.divide(pc.cast(secs, pa.float64()), 86400.0))])
    is_text = pa.types.is_string(typ) or pa.types.is_large_string(typ)
    if not is_text or time_format is None:
        local: list[str] = []
        numbers = to_float(arr, file, column, "time", local)
        if not local:
            return numbers
        if not is_text:
            problems.extend(local)
            return numbers
    fmt = time_format or "%Y-%m-%d"
    text = pc.utf8_trim_whitespace(arr)
    parsed = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    bad = np.flatnonzero(
        np.asarray(pc.and_(pc.is_null(parsed), pc.is_valid(text)).to_numpy(zero_copy_only=False), dtype=bool)
    )
    if bad.size:
        texts = text.take(pa.array(bad[:MAX_SHOWN])).to_pylist()
        hint = "" if time_format else " (give time_format, e.g. '%Y%m%d')"
        problems.append(f"{_where(file, column, 'time')}: not a date in format {fmt!r}{hint}: {_rows(bad, texts)}")
    secs = pc.cast(parsed, pa.int64())
    days = pc.floor(pc.divide(pc.cast(secs, pa.float64()), 86400.0))
    return days if isinstance(days, pa.ChunkedArray) else pa.chunked_array([days])


def read_inferred(path: Path) -> pa.Table:
    """A CSV or Parquet file with column types inferred by Arrow: for loaders of known public files (Hillstrom)
    whose ids carry no leading zeros; user files go through :func:`read_source`."""
    if not path.exists():
        raise DataValidationError(f"{path}: file not found")
    try:
        return pq.read_table(path) if _is_parquet(path) else pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"{path}: cannot be read as CSV or Parquet: {exc}") from exc
