"""Observations encoded as the store keeps them (integer columns in key order), and their checksum.

Months are stored as integers ``YYYYMM`` (e.g. ``202406``): the same type on every database,
no time zones, and they sort. KPIs and entities are stored as small integer codes, so that the
rows (millions of them) are narrow and are written and read as numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kpisheet.codes import without_unused
from kpisheet.constants import ENTITY, KPI, MONTH, OBSERVATION_COLUMNS, VALUE
from kpisheet.errors import StoreError
from kpisheet.months import MONTH_DTYPE, month_numbers, month_periods

#: Rows hashed at a time by :meth:`EncodedObservations.checksum`, so memory stays bounded.
HASH_CHUNK_ROWS = 200_000


@dataclass(frozen=True)
class EncodedObservations:
    """Observations as integer columns sorted by (month, KPI, entity), as the store keeps them.

    Codes number the distinct KPI ids and entities in sorted order: code ``i`` of ``kpis`` is
    ``kpis[i]``, so sorting by codes sorts by text.
    """

    months: np.ndarray  # YYYYMM
    kpi_codes: np.ndarray
    entity_codes: np.ndarray
    values: np.ndarray  # float64, NaN for missing
    kpis: np.ndarray  # the KPI ids, sorted (object array of str)
    entities: np.ndarray  # the entities, sorted

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def from_frame(cls, observations: pd.DataFrame) -> EncodedObservations:
        """Encode canonical observations (``month``, ``kpi``, ``entity``, ``value``).

        :raises StoreError: for a month that is not a ``Period[M]`` or a missing month, KPI or
            entity.
        """
        missing = [c for c in OBSERVATION_COLUMNS if c not in observations.columns]
        if missing:
            raise StoreError(f"observations lack column(s) {', '.join(missing)}")
        months = _as_months(observations[MONTH])
        if months.isna().any():
            raise StoreError("observations: month has missing values")
        numbers = month_numbers(months)
        kpi_codes, kpis = _text_codes(observations[KPI])
        entity_codes, entities = _text_codes(observations[ENTITY])
        values = observations[VALUE].to_numpy(dtype="float64", na_value=np.nan)
        order = _key_order(numbers, kpi_codes, len(kpis), entity_codes, len(entities))
        if order is not None:
            numbers, kpi_codes = numbers[order], kpi_codes[order]
            entity_codes, values = entity_codes[order], values[order]
        return cls(numbers, kpi_codes, entity_codes, values, kpis, entities)

    def to_frame(self) -> pd.DataFrame:
        """The observations as canonical columns: ``month`` as ``Period[M]``, ``kpi`` and
        ``entity`` as categoricals of the labels, ``value``."""
        return pd.DataFrame(
            {
                MONTH: month_periods(self.months),
                KPI: pd.Categorical.from_codes(
                    self.kpi_codes, categories=pd.Index(list(self.kpis))
                ),
                ENTITY: pd.Categorical.from_codes(
                    self.entity_codes, categories=pd.Index(list(self.entities))
                ),
                VALUE: np.ascontiguousarray(self.values),
            }
        )

    def checksum(self) -> str:
        """The SHA-256 of :func:`observations_checksum`, computed chunk by chunk."""
        digest = hashlib.sha256()
        chunks = [
            slice(start, start + HASH_CHUNK_ROWS) for start in range(0, len(self), HASH_CHUNK_ROWS)
        ]
        for chunk in chunks:
            digest.update(self.months[chunk].astype("<i8").tobytes())
        for codes, labels in ((self.kpi_codes, self.kpis), (self.entity_codes, self.entities)):
            encoded = np.array([label.encode("utf-8") for label in labels], dtype=object)
            for number, chunk in enumerate(chunks):
                if number:
                    digest.update(b"\x00")
                digest.update(b"\x00".join(encoded[codes[chunk]].tolist()))
        for chunk in chunks:
            values = self.values[chunk]
            digest.update(np.where(np.isnan(values), np.nan, values).astype("<f8").tobytes())
        return digest.hexdigest()


def observations_checksum(observations: pd.DataFrame) -> str:
    """SHA-256 of canonical observations, independent of row order and of the database.

    Hashes the rows sorted by (month, kpi, entity): months as ``YYYYMM`` integers, KPI ids and
    entities as UTF-8 text (each column's texts joined by NUL characters), values as IEEE
    doubles (every missing value the same NaN).
    """
    return EncodedObservations.from_frame(observations).checksum()


def _as_months(months: pd.Series) -> pd.Series:
    if months.dtype == MONTH_DTYPE:
        return months
    if isinstance(months.dtype, pd.PeriodDtype):
        return months.dt.asfreq("M")
    try:
        return pd.Series(pd.PeriodIndex(months, freq="M"), index=months.index)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"observations: month is not a Period[M] column ({exc})") from exc


def _text_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a text column, numbered in the sorted order of its distinct texts.

    A categorical column (as ingest hands on validated rows) is numbered from its own codes,
    without hashing a text per row; categories no row uses are left out.
    """
    categorical = isinstance(column.dtype, pd.CategoricalDtype)
    uniques: Any
    if categorical:
        codes, uniques = column.array.codes, column.cat.categories
    else:
        codes, uniques = pd.factorize(column)
    if len(codes) and codes.min() < 0:
        raise StoreError(f"observations: {column.name} has missing values")
    if categorical:
        codes, uniques = without_unused(codes, uniques)
    texts = np.array([str(label) for label in uniques], dtype=object)
    labels, renumbered = np.unique(texts, return_inverse=True)
    return renumbered.astype("int32")[codes], labels


def _key_order(
    months: np.ndarray, kpi_codes: np.ndarray, kpis: int, entity_codes: np.ndarray, entities: int
) -> np.ndarray | None:
    """The stable order that sorts rows by (month, KPI code, entity code); ``None`` if sorted."""
    if not len(months):
        return None
    first = int(months.min())
    span = int(months.max()) - first + 1
    if span * max(kpis, 1) * max(entities, 1) >= 2**62:  # no room for one integer key
        return np.lexsort((entity_codes, kpi_codes, months))
    key = ((months - first) * kpis + kpi_codes) * entities + entity_codes
    if (key[1:] >= key[:-1]).all():
        return None
    return np.argsort(key, kind="stable")
