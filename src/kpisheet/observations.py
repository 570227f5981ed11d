"""Canonical observations (docs/semantics.md, "Observations"): one row per month, KPI and leaf entity, as declared in pandera.

Readers accept CSV (comma or semicolon, UTF-8 with or without BOM), Parquet and DataFrames, with months
as ``YYYY-MM``, ``YYYYMM`` or a date inside the month (the forms :mod:`kpisheet.months` reads).
Values may carry Swiss thousands separators (``1'234'567.50``); in semicolon-separated files, as
German-language Excel writes them, a decimal comma (``1234,50``) is read as a decimal point. What a reader learnt about a source — its name, where its
rows start, whether it writes decimal commas — travels with the rows in a :class:`RawTable`, so
``kpisheet.open``, ``kpisheet validate --data`` and ``kpisheet ingest`` read values alike. Validation collects every problem — months that
do not parse, values that are not numbers, unknown KPIs and entities, duplicate rows — and raises one
:class:`~kpisheet.errors.DataError` quoting the offending rows, so a bad input never half-loads.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.compute

from kpisheet.codes import CODE_BLOCK, code_dtype, without_unused
from kpisheet.constants import ENTITY, KPI, MONTH, OBSERVATION_COLUMNS, VALUE
from kpisheet.errors import QUOTED_ROWS, DataError, Problem, RowProblems, quoted, with_suggestion
from kpisheet.files import display_path
from kpisheet.hierarchy import Hierarchy
from kpisheet.months import (
    EXPECTED_MONTHS,
    MONTH_DTYPE,
    ambiguous_dates,
    month_codes,
)
from kpisheet.registry import Registry

if TYPE_CHECKING:
    import pandera.pandas as pa

MonthDtype = MONTH_DTYPE


def observation_schema(registry: Registry, hierarchy: Hierarchy) -> pa.DataFrameSchema:
    """The pandera schema of one sheet's observations: its source KPIs and its leaf entities.

    The declaration of what a validated observation is (:mod:`kpisheet.observation_model`).
    :func:`validate_observations` enforces every rule of it with vectorised checks on integer
    codes (faster than pandera on millions of strings, without importing pandera or paying its
    start-up on the first call, and with messages that quote rows); the tests validate its
    result against this schema, so the two cannot drift apart.
    """
    from kpisheet.observation_model import sheet_schema

    return sheet_schema([k.id for k in registry.source_kpis], list(hierarchy.leaves))


def _sniff_separator(content: bytes) -> str:
    sample = content[: 64 * 1024].decode("utf-8-sig", errors="replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;").delimiter
    except csv.Error:
        return ","


@dataclass(frozen=True)
class RawTable:
    """Rows as read from a source, not yet validated, and what the reader learnt about them.

    An explicit record between reading and validating (rather than metadata riding on the frame),
    so that a step in between, such as ingest's mapping of upstream names, cannot drop it.
    """

    frame: pd.DataFrame
    #: The source as messages name it (a file path, a database URL without password, ...).
    source: str = "DataFrame"
    #: Line of the file holding row 0 (``None``: rows are named ``row N``).
    line_offset: int | None = None
    #: Values are written with a decimal comma (``1234,5``), as German-language Excel writes them.
    decimal_comma: bool = False

    def with_frame(self, frame: pd.DataFrame) -> RawTable:
        """The same source with other rows (e.g. mapped or filtered; the index keeps row numbers)."""
        return replace(self, frame=frame)

    def where(self, index: Iterable[int]) -> list[str]:
        """How messages name rows: ``line 7`` of a file, ``row 5`` of a frame or query."""
        return _where(pd.Index(index), self.line_offset)


def _record_lines(content: bytes, rows: int) -> np.ndarray | None:
    """The line (1-based) each data row of a CSV starts on, when that is not row + 2.

    Rows move down from their position when a quoted field holds a line break or blank lines
    (which the reader skips) come before them. ``None`` when neither happens, or when the
    records found here are not the ``rows`` the reader found (then rows keep their position).
    """
    if not content:
        return None
    data = np.frombuffer(content, dtype=np.uint8)
    newlines = np.flatnonzero(data == ord("\n"))
    line_starts = np.concatenate(([0], newlines[newlines + 1 < len(data)] + 1))
    quoted = b'"' in content
    if not quoted and not np.isin(data[line_starts], _LINE_BLANKS).any():
        return None  # the common case: no field spans lines, no line starts blank
    # A line break after an odd number of quotes is inside a quoted field.
    quotes = np.flatnonzero(data == ord('"')) if quoted else np.empty(0, dtype=np.int64)
    inside = np.searchsorted(quotes, newlines) % 2 == 1
    ends = newlines[~inside]
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [len(data)]))
    blank = stops == starts
    maybe_blank = np.flatnonzero(~blank & np.isin(data[np.minimum(starts, len(data) - 1)], _BLANKS))
    for record in maybe_blank:  # few: records that start with a blank
        blank[record] = not content[starts[record] : stops[record]].strip()
    if not inside.any() and not blank[:-1].any():
        return None
    lines: np.ndarray = np.searchsorted(newlines, starts[~blank]) + 1  # the first is the header's
    if len(lines) != rows + 1:
        return None
    return lines[1:]


_BLANKS = np.frombuffer(b" \t\r", dtype=np.uint8)
#: Bytes a blank line may start with (it may be empty or white, which the reader skips).
_LINE_BLANKS = np.frombuffer(b"\n\r \t", dtype=np.uint8)


def read_observations(
    source: str | Path | pd.DataFrame, *, content: bytes | None = None
) -> RawTable:
    """Read raw observations from a CSV or Parquet file or a DataFrame, without validating them.

    Columns are kept as given (text for CSV); :func:`validate_observations` parses and checks them.
    The rows' index plus the table's ``line_offset`` is each row's line in the file (a quoted
    line break or a blank line moves the rows after it down).

    :param content: the file's bytes when the caller has read them already (``source`` then
        names the file and its type).
    """
    if isinstance(source, pd.DataFrame):
        return RawTable(source.copy())
    path = Path(source)
    name = display_path(path)
    if content is None and not path.is_file():
        raise DataError(name, [Problem("no such file", file=name)], pd.DataFrame())
    try:
        # Read the whole file first: a file replaced or truncated while it is parsed then fails
        # cleanly (or not at all) instead of crashing a memory-mapped reader.
        if content is None:
            content = path.read_bytes()
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = _read_parquet(content)
            offset = separator = None
        else:
            separator = _sniff_separator(content)
            frame = pd.read_csv(
                io.BytesIO(content),
                sep=separator,
                dtype=str,
                keep_default_na=False,
                encoding="utf-8-sig",
                skipinitialspace=True,
            )
            offset = 2  # header is line 1
            lines = _record_lines(content, len(frame))
            if lines is not None:  # rows are numbered so that index + offset is their line
                frame.index = pd.Index(lines - offset)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(
            name, [Problem(f"cannot read file: {exc}", file=name)], pd.DataFrame()
        ) from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    # Semicolon CSV is what German-language Excel writes, with decimal commas.
    return RawTable(frame, name, offset, decimal_comma=offset is not None and separator == ";")


#: Files of at least this many rows are read two columns at a time.
_THREADED_ROWS = 10_000_000
#: Rows of a Parquet column decoded at a time: Arrow's buffers for one batch are reused for the
#: next, so a column costs its numpy array and one batch, not Arrow's copy of it as well.
_PARQUET_BATCH = 1 << 18


def _read_parquet(content: bytes) -> pd.DataFrame:
    """A Parquet file as ``pandas.read_parquet`` reads it, a column and a batch of rows at a time.

    Numbers, dates and dictionary-encoded text go batch by batch into numpy arrays allocated
    once, so the peak is near the frame's own size: Arrow decoded a whole column into buffers
    of its own allocator (which keeps them), and the pandas frame then needed memory that
    Arrow's freed buffers could not give. Other columns are converted by Arrow as a whole.
    A large file is read two columns at a time (at L 0.9-1.8 s instead of 2.0-3.2 s). A file
    that stores its index as columns is left to pandas.
    """
    import pyarrow.parquet

    file = pyarrow.parquet.ParquetFile(pyarrow.BufferReader(content))
    metadata = file.schema_arrow.pandas_metadata or {}
    stored = metadata.get("index_columns", [])
    if any(not isinstance(index, dict) or index.get("kind") != "range" for index in stored):
        return pd.read_parquet(io.BytesIO(content))
    rows = file.metadata.num_rows
    fields = list(file.schema_arrow)
    if rows < _THREADED_ROWS:
        columns = {field.name: _read_column(file, field, rows) for field in fields}
    else:
        # Two columns at a time, each from a reader of its own: Arrow decodes and numpy copies
        # without holding the interpreter, so the second core shares the work.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="kpisheet-read") as pool:
            read = pool.map(
                lambda field: _read_column(
                    pyarrow.parquet.ParquetFile(pyarrow.BufferReader(content)), field, rows
                ),
                fields,
            )
            columns = {field.name: column for field, column in zip(fields, read, strict=True)}
    frame = pd.DataFrame(columns, copy=False)  # the columns as read, not a copy of them
    if stored:
        index = stored[0]
        frame.index = pd.RangeIndex(
            index["start"],
            index["start"] + index["step"] * len(frame),
            index["step"],
            name=index.get("name"),
        )
    return frame


def _read_column(file: pyarrow.parquet.ParquetFile, field: pyarrow.Field, rows: int) -> pd.Series:
    """One column of ``file``, a batch of rows at a time where its type allows (see
    :func:`_read_parquet`)."""
    # Arrow's own threads cost more than they gave (M 0.14-0.31 s against 0.09 s for the first
    # read of a process, L 2.3-3.4 s against 1.6-1.7 s)
    batches = file.iter_batches(_PARQUET_BATCH, columns=[field.name], use_threads=False)
    chunks = (batch.column(0) for batch in batches)
    if _is_plain_number(field.type):
        column = _plain_column(chunks, rows, field.type.to_pandas_dtype())
    elif _is_text_dictionary(field.type):
        column = _categorical_column(chunks, rows)
    else:
        table = file.read(columns=[field.name], use_threads=False, use_pandas_metadata=True)
        column = table.to_pandas(split_blocks=True, self_destruct=True)[field.name]
        del table
    pyarrow.default_memory_pool().release_unused()
    return column


def _is_plain_number(kind: pyarrow.DataType) -> bool:
    """Floats and time zone free timestamps: read as the numpy dtype of the same name, missing
    values as NaN or NaT (as pandas reads them)."""
    return bool(
        pyarrow.types.is_floating(kind) or (pyarrow.types.is_timestamp(kind) and kind.tz is None)
    )


def _is_text_dictionary(kind: pyarrow.DataType) -> bool:
    """Dictionary-encoded text (a pandas categorical written to Parquet)."""
    return bool(
        pyarrow.types.is_dictionary(kind)
        and (
            pyarrow.types.is_string(kind.value_type)
            or pyarrow.types.is_large_string(kind.value_type)
        )
    )


def _plain_column(chunks: Iterable[pyarrow.Array], rows: int, dtype: np.dtype) -> pd.Series:
    values = np.empty(rows, dtype=dtype)
    start = 0
    for chunk in chunks:
        values[start : start + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
        start += len(chunk)
    return pd.Series(values[:start], copy=False)


def _categorical_column(chunks: Iterable[pyarrow.DictionaryArray], rows: int) -> pd.Series:
    """A dictionary-encoded text column as a categorical: its texts in order of first
    appearance in the batches' dictionaries, a missing value (or text) as code -1."""
    codes_of: dict[str, int] = {}
    parts = []
    dictionary, known = None, np.empty(0, dtype=np.int32)
    for chunk in chunks:
        # the batches of a row group share its dictionary: mapped to codes once
        if dictionary is None or not chunk.dictionary.equals(dictionary):
            dictionary = chunk.dictionary
            known = np.array(
                [
                    -1 if text is None else codes_of.setdefault(text, len(codes_of))
                    for text in dictionary.to_pylist()
                ]
                + [-1],
                dtype=np.int32,
            )
        indices = chunk.indices.fill_null(len(dictionary)).to_numpy()
        parts.append(known[indices].astype(code_dtype(len(codes_of)), copy=False))
    codes = np.empty(rows, dtype=code_dtype(len(codes_of)))
    start = 0
    for part in parts:
        codes[start : start + len(part)] = part
        start += len(part)
    del parts
    categories = pd.Index(list(codes_of), dtype="str")
    return pd.Series(
        pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories), validate=False),
        copy=False,
    )


def parse_values(raw: pd.Series, *, decimal_comma: bool = False) -> pd.Series:
    """Values as floats; text that is no number becomes NaN (validation reports it).

    Apostrophe thousands separators (``1'234'567.50``) are read in any text; a decimal comma
    (``1234,50``) only where the source writes them (``decimal_comma``).
    """
    if pd.api.types.is_numeric_dtype(raw):
        return raw.astype(float)
    text = raw.astype("string").str.strip()
    number = text.str.replace(r"(?<=\d)['’](?=\d{3})", "", regex=True)  # Swiss 1'234'567
    if decimal_comma:
        number = number.str.replace(r"^([+-]?\d+),(\d+)$", r"\1.\2", regex=True)
    return pd.to_numeric(number.replace("", pd.NA), errors="coerce").astype(float)


def missing_value_text(raw: pd.Series) -> pd.Series:
    """Which raw values stand for a missing value: empty, ``nan``, ``na`` or ``null``."""
    if pd.api.types.is_numeric_dtype(raw):
        return raw.isna()
    text = raw.astype("string").str.strip()
    return (text.isna() | (text == "") | text.str.lower().isin(["nan", "na", "null"])).astype(bool)


def _where(index: pd.Index, offset: int | None) -> list[str]:
    if offset is None:
        return [f"row {i}" for i in index]
    return [f"line {i + offset}" for i in index]


def _smallest_codes(codes: np.ndarray, count: int) -> np.ndarray:
    """``codes`` (-1 to ``count`` - 1) in the smallest integer type that holds them."""
    return codes.astype(code_dtype(count), copy=False)


def _labels(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes and distinct texts (stripped) of a KPI or entity column: in order of appearance,
    or for a categorical column (a dictionary-encoded Parquet column) in the order of its
    categories, of which those no row uses are left out.

    Code -1 marks a missing value. Checks then look at each distinct text once, not at every row.
    """
    if isinstance(raw.dtype, pd.CategoricalDtype):
        # The column's own codes: no hashing of the rows (pd.factorize took about 45 ms for the
        # KPI and entity columns of 3M rows, counting the used categories about 20 ms).
        # the column's own (read-only) codes, not a copy of them
        codes, uniques = without_unused(raw.array.codes, raw.cat.categories)
    else:
        codes, uniques = pd.factorize(raw)
    stripped = pd.Series(np.asarray(uniques, dtype=object)).astype("string").str.strip()
    label_codes, labels = pd.factorize(stripped)  # texts that differ only by blanks are one label
    if not np.array_equal(label_codes, np.arange(len(label_codes))):
        codes = np.where(codes >= 0, label_codes[np.maximum(codes, 0)], -1)
    return _smallest_codes(codes, len(labels)), np.asarray(labels, dtype=object)


#: Rows whose keys :func:`_duplicated` builds at a time while it checks their order:
#: temporaries of a few MB, not of the rows' length.
_KEY_BLOCK = CODE_BLOCK


def _duplicated(
    ordinals: np.ndarray, valid: np.ndarray, kpi: np.ndarray, entity: np.ndarray
) -> np.ndarray:
    """Rows whose (month, KPI code, entity code) occurs more than once: the months as ordinals,
    of which those not ``valid`` (no month) count as one.

    Keys in ascending order (rows sorted by month, entity and KPI, as the warehouse exports them)
    have no duplicate, which one pass over a block of keys at a time shows; otherwise the keys
    are counted.
    """
    first = (
        int(ordinals.min(where=valid, initial=np.iinfo(ordinals.dtype).max)) if valid.any() else 0
    )
    last = int(ordinals.max(where=valid, initial=first)) if valid.any() else 0
    sizes = (int(last - first) + 2, int(entity.max(initial=0)) + 2, int(kpi.max(initial=0)) + 2)

    def month_positions(lo: int, hi: int) -> np.ndarray:
        """The month positions of rows ``lo`` to ``hi`` (0: no month) in a new array."""
        codes: np.ndarray = ordinals[lo:hi].astype(np.int64)
        codes -= first
        codes += 1
        codes[~valid[lo:hi]] = 0
        return codes

    def keys(lo: int, hi: int) -> np.ndarray:
        """The keys of rows ``lo`` to ``hi``, built in place in one array (dense keys only)."""
        key = month_positions(lo, hi)
        key *= sizes[1]
        key += entity[lo:hi]
        key += 1
        key *= sizes[2]
        key += kpi[lo:hi]
        key += 1
        return key

    if sizes[0] * sizes[1] * sizes[2] > 4 * len(kpi) + 2**20:  # sparse keys: hash them
        codes = pd.DataFrame({MONTH: month_positions(0, len(kpi)), KPI: kpi, ENTITY: entity})
        repeated: np.ndarray = codes.duplicated(keep=False).to_numpy()
        return repeated
    previous = -1
    for lo in range(0, len(kpi), _KEY_BLOCK):
        key = keys(lo, lo + _KEY_BLOCK)
        if key[0] <= previous or bool(np.any(key[1:] <= key[:-1])):
            break
        previous = int(key[-1])
    else:
        return np.zeros(len(kpi), dtype=bool)
    key = keys(0, len(kpi))
    counts = np.bincount(key)
    if counts.max() <= 1:
        return np.zeros(len(key), dtype=bool)
    counted: np.ndarray = (counts > 1)[key]
    return counted


#: pandas' text dtype (``str``), as every text column of a result has it.
TEXT_DTYPE = pd.Series([], dtype=str).dtype


def text_column(labels: Iterable[str], codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """The text column ``labels[codes]`` (dtype ``str``): one take on the distinct texts instead
    of a Python string object per row; a single text is repeated without a take.

    Arrow's buffers come from the system allocator, which keeps freed memory for the next query
    (:mod:`kpisheet.allocator`), not from Arrow's default pool, which hands it back to the
    operating system within milliseconds.
    """
    labels = list(labels)
    if getattr(TEXT_DTYPE, "storage", None) != "pyarrow":
        return pd.Series(np.asarray(labels, dtype=object)[codes], dtype=str).array
    if len(labels) == 1:
        # Arrow's layout written directly: the text once per row and where each row starts.
        text = str(labels[0]).encode()
        starts = np.arange(len(codes) + 1, dtype=np.int64) * len(text)
        array = pyarrow.Array.from_buffers(
            pyarrow.large_string(),
            len(codes),
            [None, pyarrow.py_buffer(starts), pyarrow.py_buffer(text * len(codes))],
        )
    else:
        array = pyarrow.compute.take(
            _text_labels(tuple(labels)), codes, memory_pool=pyarrow.system_memory_pool()
        )
    return pd.arrays.ArrowStringArray(array, dtype=TEXT_DTYPE)


@functools.lru_cache(maxsize=64)
def _text_labels(labels: tuple[str, ...]) -> pyarrow.Array:
    """The distinct texts of a column as an Arrow array, built once per set of labels (a query
    asks for the same entities and KPIs again and again)."""
    return pyarrow.array(labels, type=pyarrow.large_string())


@dataclass(frozen=True)
class ObservationCodes:
    """Validated observations as integer codes, one entry per row in the order of the source.

    What the cube is built from: a month ordinal (months since 1970-01), a code into
    ``kpi_labels`` and one into ``entity_labels`` and the value (NaN: given as missing) per row,
    about 12 bytes a row instead of two texts. :meth:`frame` gives the canonical frame.
    """

    month: np.ndarray
    kpi: np.ndarray
    kpi_labels: np.ndarray
    entity: np.ndarray
    entity_labels: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return len(self.value)

    def frame(self, *, categorical: bool = False) -> pd.DataFrame:
        """The canonical frame: ``month`` (``Period[M]``), ``kpi`` and ``entity`` (``str``) and
        ``value`` (float), as :func:`validate_observations` returns it.

        :param categorical: ``kpi`` and ``entity`` as categoricals of the labels over the codes
            as they are, as a store release is read: no text per row (what ingest hands on to
            the store, which keeps codes).

        The frame shares the codes' arrays (the value column, the codes of categoricals): the
        codes are handed on, not kept beside it.
        """
        if categorical:
            kpi: Any = _sorted_categorical(self.kpi, self.kpi_labels)
            entity: Any = _sorted_categorical(self.entity, self.entity_labels)
        else:
            kpi = text_column(self.kpi_labels, self.kpi)
            entity = text_column(self.entity_labels, self.entity)
        return pd.DataFrame(
            {
                MONTH: pd.arrays.PeriodArray(self.month.astype(np.int64), dtype=MonthDtype),
                KPI: kpi,
                ENTITY: entity,
                VALUE: self.value,
            },
            copy=False,  # a copy of 48M rows took 2.5 s and doubled the columns' memory
        )


def _sorted_categorical(codes: np.ndarray, labels: np.ndarray) -> pd.Categorical:
    """``labels[codes]`` as a categorical whose categories are sorted, so that rows sort and
    group in the order of their texts (as a store release's columns do)."""
    order = np.argsort(np.asarray(labels, dtype=object), kind="stable")
    rank = np.empty(len(order), dtype=codes.dtype)
    rank[order] = np.arange(len(order), dtype=codes.dtype)
    categories = pd.Index(np.asarray(labels, dtype=object)[order], dtype=TEXT_DTYPE)
    return pd.Categorical.from_codes(rank[codes], categories=categories)


class HandedOver:
    """:class:`ObservationCodes` handed to the one who builds from them, who takes them once.

    The giver keeps no reference, so the rows' arrays (about 16 bytes a row) are freed as soon
    as the cube has placed them, not when the whole sheet is built: opening a sheet peaks lower.
    """

    def __init__(self, codes: ObservationCodes) -> None:
        self._codes: ObservationCodes | None = codes

    def take(self) -> ObservationCodes:
        """The observations; taken once (a second take is a programming error)."""
        codes, self._codes = self._codes, None
        if codes is None:
            raise RuntimeError("the handed over observations were taken already")
        return codes


def validate_observations(
    raw: RawTable | pd.DataFrame,
    registry: Registry,
    hierarchy: Hierarchy,
    source: str | None = None,
    *,
    date_format: str | None = None,
) -> pd.DataFrame:
    """Parse and check raw observations; return the canonical frame or raise every problem at once.

    :param raw: rows as a reader gives them (a :class:`RawTable`), or a frame of rows.
    :param source: the name messages give the source; default the table's own.
    :param date_format: how to read dates whose order of day and month is unclear.
    :raises DataError: with one problem per kind of fault, quoting the offending rows, and the
        rows themselves in ``failure_cases``.
    """
    return validate_observation_codes(
        raw, registry, hierarchy, source, date_format=date_format
    ).frame()


def validate_observation_codes(
    raw: RawTable | pd.DataFrame,
    registry: Registry,
    hierarchy: Hierarchy,
    source: str | None = None,
    *,
    date_format: str | None = None,
) -> ObservationCodes:
    """:func:`validate_observations`, returning the rows as :class:`ObservationCodes`: what
    opening a sheet needs, without a text per row (a fraction of the memory and time)."""
    table = raw if isinstance(raw, RawTable) else RawTable(raw)
    frame = table.frame
    source = source or table.source
    offset = table.line_offset
    missing = [c for c in OBSERVATION_COLUMNS if c not in frame.columns]
    if missing:
        problem = Problem(
            f"missing column(s) {', '.join(missing)}; expected columns {', '.join(OBSERVATION_COLUMNS)}, "
            f"found {', '.join(map(str, frame.columns)) or 'none'}",
            file=source,
        )
        raise DataError(source, [problem], pd.DataFrame())
    report = RowProblems(source, table.where)

    def fail(
        mask: pd.Series,
        column: str,
        raw: pd.Series,
        message: str,
        quoted: bool = True,
        detail: str = "",
    ) -> None:
        report.add_rows(message, raw[mask], column, quote=quoted, detail=detail)

    extra = [c for c in frame.columns if c not in OBSERVATION_COLUMNS]
    data = frame[list(OBSERVATION_COLUMNS)]  # nothing below writes to it
    # The months as the cube keeps them: int32 ordinals, and which rows have one.
    month, valid_month = month_codes(data[MONTH], date_format)
    if not valid_month.all():  # not a month, or a date whose order of day and month is unclear
        bad_month = pd.Series(~valid_month, index=data.index)
        ambiguous = ambiguous_dates(data[MONTH]) if date_format is None else bad_month & False
        if (bad_month & ~ambiguous).any():
            fail(
                bad_month & ~ambiguous,
                MONTH,
                data[MONTH],
                f"month is not a month (expected {EXPECTED_MONTHS})"
                + (f" in the format {date_format!r}" if date_format else ""),
            )
        if ambiguous.any():
            fail(
                ambiguous,
                MONTH,
                data[MONTH],
                "month is a date that may be day first or month first; name the format in the "
                "ingest configuration (date_format: '%d/%m/%Y' or '%m/%d/%Y')",
            )
        del bad_month, ambiguous  # masks of a byte a row are dropped once reported, here and below
    kpi_codes, kpi_labels = _labels(data[KPI])
    entity_codes, entity_labels = _labels(data[ENTITY])
    raw_value = data[VALUE]
    value = parse_values(raw_value, decimal_comma=table.decimal_comma)
    if not pd.api.types.is_numeric_dtype(raw_value):  # numbers are numbers (or missing)
        not_number = value.isna() & ~missing_value_text(raw_value)
        if not_number.any():
            fail(not_number, VALUE, raw_value, "value is not a number")
        del not_number
    infinite = np.isinf(value)
    if infinite.any():
        fail(infinite, VALUE, raw_value, "value is not finite")
    del infinite
    for column, codes, labels, known, what in (
        (KPI, kpi_codes, kpi_labels, registry.ids, "KPI id"),
        (ENTITY, entity_codes, entity_labels, hierarchy.entities, "entity"),
    ):
        empty = pd.Series(
            (codes < 0) | np.isin(codes, np.flatnonzero(labels == "")), index=data.index
        )
        if empty.any():
            fail(empty, column, data[column], f"{column} is empty")
        del empty
        for label in np.flatnonzero(~np.isin(labels, list(known)) & (labels != "")):
            name = labels[label]
            mask = pd.Series(codes == label, index=data.index)
            fail(
                mask,
                column,
                data[column],
                with_suggestion(f"unknown {what} {quoted(name)}", name, known),
                quoted=False,
                detail=f" in {_count_rows(mask, offset)}",
            )
    for label in np.flatnonzero(np.isin(kpi_labels, [k.id for k in registry.derived_kpis])):
        mask = pd.Series(kpi_codes == label, index=data.index)
        message = f"KPI '{kpi_labels[label]}' is derived (formula); it is computed, not loaded"
        fail(mask, KPI, data[KPI], f"{message}, in {_count_rows(mask, offset)}", quoted=False)
    group_names = [e for e in hierarchy.entities if hierarchy.level_of(e) != "product"]
    for label in np.flatnonzero(np.isin(entity_labels, group_names)):
        mask = pd.Series(entity_codes == label, index=data.index)
        message = f"entity '{entity_labels[label]}' is a group; data holds products (leaves) only"
        fail(mask, ENTITY, data[ENTITY], f"{message}, in {_count_rows(mask, offset)}", quoted=False)
    duplicated = _duplicated(month, valid_month, kpi_codes, entity_codes)
    if duplicated.any():  # a mask of the rows' length is touched only when a row is duplicated
        duplicated = pd.Series(duplicated & valid_month, index=data.index)
    if duplicated.any():
        keys = pd.DataFrame(
            {
                MONTH: pd.arrays.PeriodArray(month.astype(np.int64), dtype=MonthDtype),
                KPI: pd.array(kpi_labels, dtype="string").take(kpi_codes, allow_fill=True),
                ENTITY: pd.array(entity_labels, dtype="string").take(entity_codes, allow_fill=True),
            },
            index=data.index,
        ).fillna({KPI: "", ENTITY: ""})
        described = keys[duplicated].astype(str).agg(" / ".join, axis=1)
        fail(duplicated, f"{MONTH}, {KPI}, {ENTITY}", described, "duplicate (month, kpi, entity)")
    del duplicated
    if extra:
        report.add(
            f"unexpected column(s) {', '.join(map(str, extra))}; expected {', '.join(OBSERVATION_COLUMNS)}"
        )
    if not report.problems:
        report.extend(
            _overflow_problems(value, kpi_codes, kpi_labels, entity_codes, entity_labels, source)
        )
    report.raise_if_any()
    return ObservationCodes(
        month=month,
        kpi=kpi_codes,
        kpi_labels=kpi_labels,
        entity=entity_codes,
        entity_labels=entity_labels,
        value=value.to_numpy(dtype=float),
    )


def _overflow_problems(
    value: pd.Series,
    kpi_codes: np.ndarray,
    kpi_labels: np.ndarray,
    entity_codes: np.ndarray,
    entity_labels: np.ndarray,
    source: str,
) -> list[Problem]:
    """A problem for each KPI whose values could add up beyond the largest float (to ``inf``).

    When the magnitudes of a KPI's values sum to a finite number, so does every window and
    every group; otherwise the message names the product whose values overflow alone, or the
    grand total where only the products together do.
    """
    values = value.to_numpy(dtype=float)
    # fmax and fmin pass over missing values without a mask of the rows' length
    largest = max(
        float(np.fmax.reduce(values, initial=-np.inf)),
        -float(np.fmin.reduce(values, initial=np.inf)),
    )
    if np.isinf(largest):  # no values, or all missing
        return []
    if largest * len(values) <= np.finfo(float).max:
        return []  # no sum of these values can overflow
    magnitude = np.nan_to_num(values, nan=0.0)
    np.abs(magnitude, out=magnitude)
    with np.errstate(over="ignore"):
        per_kpi = np.bincount(kpi_codes, weights=magnitude, minlength=len(kpi_labels))
        overflowing = np.flatnonzero(~np.isfinite(per_kpi))
        if not len(overflowing):
            return []
        pairs = kpi_codes.astype(np.int64) * len(entity_labels) + entity_codes
        per_pair = np.bincount(
            pairs, weights=magnitude, minlength=len(kpi_labels) * len(entity_labels)
        )
    per_pair = per_pair.reshape(len(kpi_labels), len(entity_labels))
    problems = []
    for kpi in overflowing:
        alone = np.flatnonzero(~np.isfinite(per_pair[kpi]))
        where = (
            f"entity {quoted(entity_labels[alone[0]])}" if len(alone) else "all products together"
        )
        problems.append(
            Problem(
                f"values for {where} add up beyond the largest number (about "
                f"{np.finfo(float).max:.1e}); check the data for wrong magnitudes",
                file=source,
                kpi=str(kpi_labels[kpi]),
                field=VALUE,
            )
        )
    return problems


def _count_rows(mask: pd.Series, offset: int | None) -> str:
    where = _where(mask[mask].index[:QUOTED_ROWS], offset)
    count = int(mask.sum())
    shown = ", ".join(where)
    return (
        f"{count} row{'s' if count != 1 else ''} ({shown}{', ...' if count > QUOTED_ROWS else ''})"
    )


def load_observations(
    source: str | Path | pd.DataFrame, registry: Registry, hierarchy: Hierarchy
) -> pd.DataFrame:
    """Read and validate observations in one step."""
    return validate_observations(read_observations(source), registry, hierarchy)
