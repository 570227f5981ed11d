"""Tests of reading and validating observations (docs/semantics.md, "Observations"): formats, month forms, data problems."""

from __future__ import annotations

import math
import re
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import strategies as st

import kpisheet.sheet
from kpisheet import observations
from kpisheet.cli import main
from kpisheet.errors import DataError
from kpisheet.hierarchy import Hierarchy, load_hierarchy
from kpisheet.observations import (
    _duplicated,
    _labels,
    load_observations,
    observation_schema,
    read_observations,
    validate_observations,
)
from kpisheet.plugins import load_kpis
from kpisheet.registry import Registry

KPIS = """\
- {id: flow, label: Umsatz, group: Umsatz, unit: currency, time_aggregation: sum, average_per: accounts}
- {id: trx, label: Anzahl Trx, group: Trx, unit: count, time_aggregation: sum}
- {id: accounts, label: Aktive Konten, group: Konten, unit: count, time_aggregation: last}
- {id: ticket, label: Umsatz pro Trx, group: Umsatz, unit: currency, formula: flow / trx}
"""

ENTITIES = """\
total: Kartenwelt
levels: [sector, mandant]
entities:
  Alpine Gold:    {mandant: Alpine, sector: B2C, cardprofile: CC}
  Alpine Prepaid: {mandant: Alpine, sector: B2C, cardprofile: PP}
  Borealis Card:  {mandant: Borealis, sector: B2B2C, cardprofile: CC}
"""

GOOD_ROWS = [
    ("2023-01", "flow", "Alpine Gold", 10.5),
    ("2023-02", "flow", "Alpine Gold", 0.0),
    ("2023-02", "accounts", "Borealis Card", 7.0),
    ("2023-03", "trx", "Alpine Prepaid", math.nan),
]


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    path = tmp_path / "kpis.yaml"
    path.write_text(KPIS, encoding="utf-8")
    return path


@pytest.fixture
def entities(tmp_path: Path) -> Path:
    path = tmp_path / "entities.yaml"
    path.write_text(ENTITIES, encoding="utf-8")
    return path


@pytest.fixture
def registry(definitions: Path) -> Registry:
    return load_kpis(definitions)


@pytest.fixture
def hierarchy(entities: Path) -> Hierarchy:
    return load_hierarchy(entities)


def canonical(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """The expected canonical frame of rows given with ``YYYY-MM`` months."""
    frame = pd.DataFrame(rows, columns=["month", "kpi", "entity", "value"])
    frame["month"] = pd.PeriodIndex(frame["month"], freq="M")
    return frame


def assert_canonical(actual: pd.DataFrame, rows: list[tuple[str, str, str, float]]) -> None:
    """Same columns, month dtype Period[M], same rows in order (NaN equal to NaN)."""
    expected = canonical(rows)
    assert list(actual.columns) == ["month", "kpi", "entity", "value"]
    assert actual["month"].dtype == pd.PeriodDtype("M")
    assert actual["value"].dtype == np.float64
    assert list(actual["month"]) == list(expected["month"])
    assert list(actual["kpi"]) == list(expected["kpi"])
    assert list(actual["entity"]) == list(expected["entity"])
    np.testing.assert_array_equal(actual["value"].to_numpy(), expected["value"].to_numpy())


def write_csv(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("separator", [",", ";"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_csv_with_comma_or_semicolon_with_or_without_bom(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy, separator: str, encoding: str
) -> None:
    """CSV files separated by commas or semicolons, with or without a byte-order mark, give the
    same canonical observations; an empty value is a missing value."""
    lines = [separator.join(["month", "kpi", "entity", "value"])]
    for month, kpi, entity, value in GOOD_ROWS:
        text = "" if math.isnan(value) else str(value)
        lines.append(separator.join([month, kpi, entity, text]))
    path = write_csv(tmp_path / "observations.csv", lines, encoding)
    assert_canonical(load_observations(path, registry, hierarchy), GOOD_ROWS)


def test_semicolon_csv_reads_decimal_commas_and_swiss_thousands(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy
) -> None:
    """A semicolon CSV as German-language Excel writes it reads ``1234,5`` as 1234.5, and
    apostrophe thousands separators (``1'234'567.25``) are read in any CSV."""
    path = write_csv(
        tmp_path / "excel.csv",
        [
            "month;kpi;entity;value",
            "2023-01;flow;Alpine Gold;1234,5",
            "2023-02;flow;Alpine Gold;-0,25",
            "2023-03;flow;Alpine Gold;1'234'567.25",
        ],
    )
    result = load_observations(path, registry, hierarchy)
    assert list(result["value"]) == [1234.5, -0.25, 1234567.25]


def test_comma_csv_does_not_read_decimal_commas(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy
) -> None:
    """In a comma-separated file a quoted ``"1,5"`` is ambiguous and reported, not guessed."""
    path = write_csv(
        tmp_path / "ambiguous.csv", ["month,kpi,entity,value", '2023-01,flow,Alpine Gold,"1,5"']
    )
    with pytest.raises(DataError, match=re.escape("value is not a number: line 2 ('1,5')")):
        load_observations(path, registry, hierarchy)


def test_months_as_year_month_compact_or_dates(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy
) -> None:
    """YYYY-MM, YYYYMM, month-end dates, any date in the month and day-first dotted dates
    all become calendar months."""
    path = write_csv(
        tmp_path / "months.csv",
        [
            "month,kpi,entity,value",
            "2023-01,flow,Alpine Gold,1",
            "202302,flow,Alpine Gold,2",
            "2023-03-31,flow,Alpine Gold,3",
            "2023-04-15,flow,Alpine Gold,4",
            "31.05.2023,flow,Alpine Gold,5",
            "01.06.2023,flow,Alpine Gold,6",
            "2023-7,flow,Alpine Gold,7",
        ],
    )
    result = load_observations(path, registry, hierarchy)
    months = ["2023-01", "2023-02", "2023-03", "2023-04", "2023-05", "2023-06", "2023-07"]
    assert [str(month) for month in result["month"]] == months


def test_names_headers_and_values_are_trimmed(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy
) -> None:
    """Blanks around headers, names and values do not matter; header case does not either."""
    path = write_csv(
        tmp_path / "blanks.csv",
        [" Month , KPI ,Entity, Value", "2023-01 , flow ,  Alpine Gold , 10.5 "],
    )
    assert_canonical(load_observations(path, registry, hierarchy), GOOD_ROWS[:1])


@pytest.mark.parametrize(
    "months",
    [
        ["2023-01", "2023-02", "2023-02", "2023-03"],
        pd.to_datetime(["2023-01-31", "2023-02-28", "2023-02-28", "2023-03-31"]),
        [202301, 202302, 202302, 202303],
    ],
    ids=["text", "month-end dates", "YYYYMM integers"],
)
def test_parquet_files(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy, months: object
) -> None:
    """Parquet files written by pandas, with months as text, dates or YYYYMM integers."""
    frame = pd.DataFrame(
        {
            "month": months,
            "kpi": [row[1] for row in GOOD_ROWS],
            "entity": [row[2] for row in GOOD_ROWS],
            "value": [row[3] for row in GOOD_ROWS],
        }
    )
    path = tmp_path / "observations.parquet"
    frame.to_parquet(path)
    assert_canonical(load_observations(path, registry, hierarchy), GOOD_ROWS)


@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 40)),
            st.one_of(st.none(), st.sampled_from(["a", "b", " c", "ä", ""])),
            st.one_of(st.none(), st.floats(allow_nan=False, width=32)),
        ),
        max_size=30,
    ),
    row_group=st.integers(1, 7),
    batch=st.integers(1, 5),
    float32=st.booleans(),
    threaded=st.booleans(),
)
@example(
    rows=[(0, "a", 1.0), (1, "b", None), (2, None, 2.0)],
    row_group=1,
    batch=2,
    float32=False,
    threaded=True,
)
def test_parquet_read_a_batch_at_a_time_as_pandas_reads_it(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[int | None, str | None, float | None]],
    row_group: int,
    batch: int,
    float32: bool,
    threaded: bool,
) -> None:
    """Dates, floats and dictionary-encoded texts read in batches (row groups with dictionaries
    of their own, missing values and texts) give the frame ``pandas.read_parquet`` gives; other
    columns (a time zone, plain text, integers) are read whole, alike; and so do two columns
    read at a time (as a large file is)."""
    dates = pd.Series(
        [
            None if d is None else pd.Timestamp("2020-01-31") + pd.Timedelta(days=d)
            for d, _, _ in rows
        ],
        dtype="datetime64[ms]",
    )
    texts = [t for _, t, _ in rows]
    frame = pd.DataFrame(
        {
            "month": dates,
            "kpi": pd.Series(texts, dtype="category"),
            "entity": pd.Series(texts, dtype="str"),
            "value": pd.Series([v for _, _, v in rows], dtype="float32" if float32 else "float64"),
            "zoned": dates.dt.tz_localize("Europe/Zurich"),
            "count": pd.Series(range(len(rows)), dtype="int64"),
        }
    )
    path = tmp_path_factory.mktemp("parquet") / "observations.parquet"
    frame.to_parquet(path, row_group_size=row_group)
    with (
        patch.object(observations, "_PARQUET_BATCH", batch),
        patch.object(observations, "_THREADED_ROWS", 0 if threaded else 2**62),
    ):
        read = read_observations(path).frame
    expected = pd.read_parquet(path)
    pd.testing.assert_frame_equal(read, expected, check_categorical=False, check_index_type=False)
    # the same texts in the same places, whatever the categories' order
    pd.testing.assert_series_equal(read["kpi"].astype(object), expected["kpi"].astype(object))


def test_dataframe_input(registry: Registry, hierarchy: Hierarchy) -> None:
    """A DataFrame with Period months is taken as it is, and the caller's frame is not changed."""
    frame = canonical(GOOD_ROWS)
    before = frame.copy()
    assert_canonical(load_observations(frame, registry, hierarchy), GOOD_ROWS)
    pd.testing.assert_frame_equal(frame, before)


def test_sheet_opens_csv_and_dataframe_alike(
    tmp_path: Path, definitions: Path, entities: Path
) -> None:
    """kpisheet.sheet.open gives the same sheet for a CSV path and for the same rows as a frame."""
    path = tmp_path / "observations.csv"
    canonical(GOOD_ROWS).assign(month=lambda f: f["month"].astype(str)).to_csv(path, index=False)
    from_file = kpisheet.sheet.open(path, definitions=definitions, entities=entities)
    from_frame = kpisheet.sheet.open(
        canonical(GOOD_ROWS), definitions=definitions, entities=entities
    )
    pd.testing.assert_frame_equal(from_file.query(window="3M"), from_frame.query(window="3M"))
    assert [str(m) for m in from_file.months] == ["2023-01", "2023-02", "2023-03"]


# --- data problems ---------------------------------------------------------------------------

BAD_LINES = [
    "month,kpi,entity,value",
    "2023-01,flow,Alpine Gold,10.5",  # line 2: duplicate of line 3
    "2023-01,flow,Alpine Gold,11",  # line 3
    "2023-02,flow,Alpine Gold,zehn",  # line 4: not a number
    "2023-02,flw,Alpine Gold,3",  # line 5: unknown KPI
    "2023-02,flow,Alpine Platin,4",  # line 6: unknown entity
    "Feb 2023x,trx,Borealis Card,5",  # line 7: not a month
    "2023-03,ticket,Borealis Card,6",  # line 8: derived KPI
    "2023-03,flow,Alpine,7",  # line 9: a group
    "2023-03,flow,Borealis Card,inf",  # line 10: not finite
    "2023-03,trx,Alpine Gold,12",  # line 11: fine
]

BAD_MESSAGES = [
    "month is not a month (expected YYYY-MM, YYYYMM or a date): line 7 ('Feb 2023x')",
    "value is not a number: line 4 ('zehn')",
    "value is not finite: line 10 ('inf')",
    "unknown KPI id 'flw' (did you mean 'flow'?) in 1 row (line 5)",
    "unknown entity 'Alpine Platin' (did you mean 'Alpine Prepaid'?) in 1 row (line 6)",
    "KPI 'ticket' is derived (formula); it is computed, not loaded, in 1 row (line 8)",
    "entity 'Alpine' is a group; data holds products (leaves) only, in 1 row (line 9)",
    "duplicate (month, kpi, entity): line 2 ('2023-01 / flow / Alpine Gold'), "
    "line 3 ('2023-01 / flow / Alpine Gold')",
]


def test_every_data_problem_is_reported_together(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy
) -> None:
    """Unknown KPIs and entities, duplicates, non-numbers (quoted with their line), unparseable
    months, derived KPIs and groups in data: one DataError lists them all."""
    path = write_csv(tmp_path / "bad.csv", BAD_LINES)
    with pytest.raises(DataError) as caught:
        load_observations(path, registry, hierarchy)
    error = caught.value
    assert [problem.message for problem in error.problems] == BAD_MESSAGES
    assert {problem.file for problem in error.problems} == {error.source}
    assert error.source.endswith("bad.csv")
    assert str(error).startswith(f"8 problems in data {error.source}:\n")
    for message in BAD_MESSAGES:
        assert f"  {error.source}: {message}" in str(error).splitlines()


def test_failure_cases_hold_the_offending_rows(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy
) -> None:
    """failure_cases has one row per offending input row and column: where, column, value, problem."""
    path = write_csv(tmp_path / "bad.csv", BAD_LINES)
    with pytest.raises(DataError) as caught:
        load_observations(path, registry, hierarchy)
    cases = caught.value.failure_cases
    assert list(cases.columns) == ["where", "column", "value", "problem"]
    found = set(zip(cases["where"], cases["column"], cases["value"], strict=True))
    assert found == {
        ("line 7", "month", "Feb 2023x"),
        ("line 4", "value", "zehn"),
        ("line 10", "value", "inf"),
        ("line 5", "kpi", "flw"),
        ("line 6", "entity", "Alpine Platin"),
        ("line 8", "kpi", "ticket"),
        ("line 9", "entity", "Alpine"),
        ("line 2", "month, kpi, entity", "2023-01 / flow / Alpine Gold"),
        ("line 3", "month, kpi, entity", "2023-01 / flow / Alpine Gold"),
    }
    assert "line 11" not in set(cases["where"])


def test_problems_in_a_dataframe_name_rows(registry: Registry, hierarchy: Hierarchy) -> None:
    """In a DataFrame, offending rows are named by their index label."""
    frame = pd.DataFrame(
        {
            "month": ["2023-01", "2023-01", "2023-13"],
            "kpi": ["flow", "flow", "flow"],
            "entity": ["Alpine Gold", "Alpine Gold", "Alpine Gold"],
            "value": ["1", "x", "2"],
        }
    )
    with pytest.raises(DataError) as caught:
        validate_observations(read_observations(frame), registry, hierarchy)
    assert [problem.message for problem in caught.value.problems] == [
        "month is not a month (expected YYYY-MM, YYYYMM or a date): row 2 ('2023-13')",
        "value is not a number: row 1 ('x')",
        "duplicate (month, kpi, entity): row 0 ('2023-01 / flow / Alpine Gold'), "
        "row 1 ('2023-01 / flow / Alpine Gold')",
    ]
    assert caught.value.source == "DataFrame"


def test_missing_columns(registry: Registry, hierarchy: Hierarchy) -> None:
    """Missing columns are named together with the columns expected and found."""
    frame = pd.DataFrame({"Month": ["2023-01"], "kpi": ["flow"]})
    message = (
        "1 problem in data DataFrame:\n  DataFrame: missing column(s) month, entity, value; "
        "expected columns month, kpi, entity, value, found Month, kpi"
    )
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        load_observations(frame, registry, hierarchy)


def test_missing_columns_in_a_csv(tmp_path: Path, registry: Registry, hierarchy: Hierarchy) -> None:
    """A CSV without a value column is rejected naming the column."""
    path = write_csv(tmp_path / "short.csv", ["monat;kpi;entity", "2023-01;flow;Alpine Gold"])
    with pytest.raises(DataError) as caught:
        load_observations(path, registry, hierarchy)
    assert [p.message for p in caught.value.problems] == [
        "missing column(s) month, value; expected columns month, kpi, entity, value, "
        "found monat, kpi, entity"
    ]


def test_unexpected_columns(registry: Registry, hierarchy: Hierarchy) -> None:
    """Columns beyond month, kpi, entity, value are reported rather than silently dropped."""
    frame = canonical(GOOD_ROWS).assign(note="x")
    message = "unexpected column(s) note; expected month, kpi, entity, value"
    with pytest.raises(DataError, match=re.escape(message)):
        load_observations(frame, registry, hierarchy)


def test_no_such_file(tmp_path: Path, registry: Registry, hierarchy: Hierarchy) -> None:
    """A path that is no file is a DataError, not an OSError."""
    with pytest.raises(DataError, match=re.escape("nothere.csv: no such file")):
        load_observations(tmp_path / "nothere.csv", registry, hierarchy)


def test_a_bad_input_never_half_loads(tmp_path: Path, definitions: Path, entities: Path) -> None:
    """One bad row among good ones: kpisheet.sheet.open raises and gives no sheet."""
    path = write_csv(
        tmp_path / "one_bad.csv",
        ["month,kpi,entity,value", "2023-01,flow,Alpine Gold,1", "2023-02,flow,Alpine Gold,1o"],
    )
    with pytest.raises(DataError, match=re.escape("value is not a number: line 3 ('1o')")):
        kpisheet.sheet.open(path, definitions=definitions, entities=entities)


def test_cli_reports_bad_data_without_traceback(
    tmp_path: Path, definitions: Path, entities: Path
) -> None:
    """kpisheet query on bad data exits 1 with every problem, quoting the offending values."""
    path = write_csv(tmp_path / "bad.csv", BAD_LINES)
    arguments = [
        "--data",
        str(path),
        "--definitions",
        str(definitions),
        "--entities",
        str(entities),
    ]
    result = CliRunner().invoke(main, ["query", *arguments])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    for message in BAD_MESSAGES:
        assert message in result.output


# --- line numbers and overflow -----------------------------------------------------------------


def test_line_numbers_count_quoted_line_breaks_and_blank_lines(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy
) -> None:
    """A row after a field with a line break, or after blank lines, is named by its own line."""
    path = write_csv(
        tmp_path / "obs.csv",
        [
            "month,kpi,entity,value",
            '2023-01,flow,"Alpine',  # line 2: a field over two lines
            'Gold",1',
            "",
            "   ",
            '2023-01,flw,Alpine Gold,"1',  # line 6: the value field spans lines 6 and 7
            '"',
            "2023-02,flow,Alpine Gold,1o",  # line 8
        ],
    )
    with pytest.raises(DataError) as info:
        load_observations(path, registry, hierarchy)
    assert [p.message for p in info.value.problems] == [
        "value is not a number: line 8 ('1o')",
        "unknown KPI id 'flw' (did you mean 'flow'?) in 1 row (line 6)",
        "unknown entity 'Alpine\\nGold' (did you mean 'Alpine Gold'?) in 1 row (line 2)",
    ]


def test_line_numbers_of_a_plain_file_are_row_plus_two(
    tmp_path: Path, registry: Registry, hierarchy: Hierarchy
) -> None:
    """Without line breaks in fields or blank lines, row i stays line i + 2 (the fast path)."""
    path = write_csv(
        tmp_path / "obs.csv", ["month,kpi,entity,value", *["2023-01,x,Alpine Gold,1"] * 3]
    )
    table = read_observations(path)
    assert isinstance(table.frame.index, pd.RangeIndex)
    with pytest.raises(DataError, match=re.escape("in 3 rows (line 2, line 3, line 4)")):
        validate_observations(table, registry, hierarchy)


def test_values_that_add_up_to_infinity_are_a_problem_naming_kpi_and_entity(
    registry: Registry, hierarchy: Hierarchy
) -> None:
    """Values whose sum leaves the float range are refused, naming the KPI and where it overflows."""
    big = np.finfo(float).max / 1.5
    rows = [
        ("2023-01", "flow", "Alpine Gold", big),
        ("2023-02", "flow", "Alpine Gold", big),  # the product's own months overflow
        ("2023-01", "trx", "Alpine Gold", big),
        ("2023-01", "trx", "Borealis Card", -big),  # only the total's magnitude overflows
        ("2023-01", "accounts", "Alpine Gold", big),
    ]
    with pytest.raises(DataError) as info:
        validate_observations(canonical(rows), registry, hierarchy, source="obs.csv")
    assert str(info.value) == (
        "2 problems in data obs.csv:\n"
        "  obs.csv: KPI 'flow': values for entity 'Alpine Gold' add up beyond the largest number "
        "(about 1.8e+308); check the data for wrong magnitudes\n"
        "  obs.csv: KPI 'trx': values for all products together add up beyond the largest number "
        "(about 1.8e+308); check the data for wrong magnitudes"
    )
    assert [(p.kpi, p.field) for p in info.value.problems] == [("flow", "value"), ("trx", "value")]


def test_no_query_result_holds_infinity_for_values_within_range(
    registry: Registry, hierarchy: Hierarchy
) -> None:
    """Values that pass validation sum to finite numbers in every window and group."""
    big = np.finfo(float).max / 4
    rows = [(f"2023-0{m}", "flow", name, big / 3) for m in (1, 2, 3) for name in hierarchy.leaves]
    sheet = kpisheet.sheet.KPISheet(
        validate_observations(canonical(rows), registry, hierarchy), registry, hierarchy
    )
    result = sheet.query(window="3M", kpis=["flow"])
    assert np.isfinite(result["value"]).all()


def test_validated_frame_passes_the_declared_schema(
    registry: Registry, hierarchy: Hierarchy
) -> None:
    """What validation returns satisfies the pandera declaration of an observation (types,
    nullability, finiteness, uniqueness, known KPIs and entities), which it enforces on codes."""
    validated = validate_observations(canonical(GOOD_ROWS), registry, hierarchy)
    assert observation_schema(registry, hierarchy).validate(validated, lazy=True) is not None


def test_declared_schema_refuses_what_validation_refuses(
    registry: Registry, hierarchy: Hierarchy
) -> None:
    """The pandera declaration and validation agree on a bad row: an unknown KPI fails both."""
    rows = [*GOOD_ROWS, ("2023-04", "nope", "Alpine Gold", 1.0)]
    with pytest.raises(pa.errors.SchemaErrors):
        observation_schema(registry, hierarchy).validate(canonical(rows), lazy=True)
    with pytest.raises(DataError, match=re.escape("unknown KPI id 'nope'")):
        validate_observations(canonical(rows), registry, hierarchy)


def test_sheet_observations_are_rebuilt_from_the_cube(
    registry: Registry, hierarchy: Hierarchy
) -> None:
    """An open sheet gives back its observations (rows given as missing included), ordered by
    month, KPI and product, without keeping the frame it was opened with."""
    sheet = kpisheet.sheet.KPISheet(
        validate_observations(canonical(GOOD_ROWS), registry, hierarchy), registry, hierarchy
    )
    expected = sorted(
        GOOD_ROWS,
        key=lambda row: (row[0], registry.ids.index(row[1]), hierarchy.leaves.index(row[2])),
    )
    assert_canonical(sheet.observations, expected)
    assert pd.api.types.is_string_dtype(sheet.observations["kpi"])


def test_observation_count_counts_without_rebuilding(
    registry: Registry, hierarchy: Hierarchy
) -> None:
    """``sheet.observation_count`` (what ``kpisheet validate`` prints) equals the rows of
    ``sheet.observations``, rows given as missing included."""
    rows = [*GOOD_ROWS, ("2023-03", "flow", "Alpine Prepaid", math.nan)]
    sheet = kpisheet.sheet.KPISheet(
        validate_observations(canonical(rows), registry, hierarchy), registry, hierarchy
    )
    assert sheet.observation_count == len(sheet.observations) == len(rows)


@given(
    rows=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 5)), st.integers(-1, 3), st.integers(-1, 4)),
        max_size=40,
    ),
    ordered=st.booleans(),
    spread=st.booleans(),
)
@example(rows=[(0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 2, 0)], ordered=True, spread=False)
def test_duplicated_keys_match_a_plain_count(
    rows: list[tuple[int | None, int, int]], ordered: bool, spread: bool
) -> None:
    """Rows sharing (month, KPI, entity) are flagged, whether the rows come in key order (checked
    in one pass), not (counted) or with keys too far apart to count (hashed); a missing month or
    code is a value of its own. (The example's duplicate lies across two blocks of 3 keys.)"""
    if spread:  # months centuries apart and large codes: the key space is sparse
        rows = [
            (None if m is None else m * 400, max(k * 7000, -1), max(e * 7000, -1))
            for m, k, e in rows
        ]
    if ordered:
        rows = sorted(rows, key=lambda r: (-1 if r[0] is None else r[0], r[2], r[1]))
    month = pd.Series(
        pd.array(
            [None if m is None else pd.Period("2024-01", "M") + m for m, _, _ in rows],
            dtype="period[M]",
        )
    )
    kpi = np.array([k for _, k, _ in rows], dtype=np.int16)
    entity = np.array([e for _, _, e in rows], dtype=np.int16)
    counts: dict[tuple[int | None, int, int], int] = {}
    for row in rows:
        counts[row] = counts.get(row, 0) + 1
    expected = [counts[row] > 1 for row in rows]
    # as validation gives them: int32 ordinals, whatever a missing month's ordinal turns into
    ordinals, valid = month.array.asi8.astype(np.int32), ~month.isna().to_numpy()
    assert _duplicated(ordinals, valid, kpi, entity).tolist() == expected
    with patch.object(observations, "_KEY_BLOCK", 3):  # the order checked across blocks too
        assert _duplicated(ordinals, valid, kpi, entity).tolist() == expected


@given(
    texts=st.lists(st.one_of(st.none(), st.sampled_from(["a", " a", "a ", "b", "", " ", "c"]))),
    unused=st.lists(st.sampled_from(["z", " z", "b ", "q"]), unique=True),
)
@example(texts=["b", " a", "a"], unused=["z"])
def test_labels_of_a_categorical_column_read_as_those_of_its_texts(
    texts: list[str | None], unused: list[str]
) -> None:
    """A categorical column (a dictionary-encoded Parquet column) gives each row the same
    stripped label, or -1 for a missing one, as the same texts in a plain column; categories no
    row uses give no label (they would be reported as unknown KPIs or entities)."""
    plain = pd.Series(texts, dtype=object)
    categories = list(dict.fromkeys([*unused, *(t for t in texts if t is not None)]))
    categorical = pd.Series(pd.Categorical(texts, categories=categories))

    def row_labels(column: pd.Series) -> tuple[list[str | None], set[str]]:
        codes, labels = _labels(column)
        assert codes.dtype == np.int8  # the smallest type: few labels
        return [None if c < 0 else labels[c] for c in codes], set(labels)

    expected = row_labels(plain)
    assert row_labels(categorical) == expected
    assert expected[1] == {t.strip() for t in texts if t is not None}


@given(
    kpis=st.lists(st.integers(0, 3), min_size=1, max_size=25),
    entities=st.lists(st.integers(0, 4), min_size=1, max_size=25),
)
def test_codes_as_categoricals_are_the_texts_with_sorted_categories(
    kpis: list[int], entities: list[int]
) -> None:
    """Validated codes as a frame of categoricals (what ingest hands to the store) hold the
    same texts as the frame of texts, with sorted categories, so rows sort as texts do."""
    rows = min(len(kpis), len(entities))
    codes = observations.ObservationCodes(
        month=np.arange(rows, dtype=np.int32),
        kpi=np.asarray(kpis[:rows], dtype=np.int8),
        kpi_labels=np.array(["turnover", "active", "Zeta", "ämter"], dtype=object),
        entity=np.asarray(entities[:rows], dtype=np.int8),
        entity_labels=np.array(["b", "a", "c", "B", "0"], dtype=object),
        value=np.linspace(0, 1, rows),
    )
    texts = codes.frame()
    categorical = codes.frame(categorical=True)
    for column in ("kpi", "entity"):
        categories = list(categorical[column].cat.categories)
        assert categories == sorted(categories)
        assert categorical[column].astype(str).tolist() == texts[column].tolist()
    pd.testing.assert_frame_equal(
        categorical.astype({"kpi": texts["kpi"].dtype, "entity": texts["entity"].dtype}), texts
    )
