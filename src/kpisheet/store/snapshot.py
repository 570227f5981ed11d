"""A release's snapshot: its observations once more, as compressed Arrow IPC bytes beside the rows.

Reading millions of rows through a database driver costs about a microsecond per row in
Python (5 s for 3M rows, 80 s for 48M); reading a few compressed blobs and decoding them with
pyarrow costs a few milliseconds per million rows. So every release keeps, in
``kpisheet_snapshots``, its encoded columns (month ``YYYYMM``, KPI code, entity code, value;
the same columns and order as its rows) as Arrow IPC streams compressed with zstd, in parts of
at most :data:`SNAPSHOT_PART_ROWS` rows (well below the 1 GB that SQLite and PostgreSQL allow
for one value). Each part records its row count and the SHA-256 digest of its bytes.

The snapshot is written from the same encoded columns as the rows and the release's checksum,
in the same transaction. Every read checks each part's digest, so bytes changed outside
kpisheet are refused (:class:`~kpisheet.errors.SnapshotError`, a kind of
:class:`~kpisheet.errors.ChecksumError`), never decoded into wrong numbers; a verified read
also recomputes the release's checksum from the observations decoded. Rows changed with SQL do
not reach a reader; ``kpisheet releases verify`` checks the rows and the snapshot against the
checksum and names either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from kpisheet.constants import MONTH, VALUE
from kpisheet.errors import SnapshotError
from kpisheet.store.encoding import EncodedObservations
from kpisheet.store.schema import (
    ENTITY_CODE,
    KPI_CODE,
    SNAPSHOTS_TABLE,
    ReleaseInfo,
    insert_snapshot_part,
    select_snapshot_data,
    select_snapshot_parts,
)

#: Rows per part of a snapshot: about 80 MB before compression.
SNAPSHOT_PART_ROWS = 4_000_000
#: The codec of the Arrow IPC streams: zstd makes the parts 5-8 times smaller than the raw
#: columns and decodes at several hundred MB/s.
SNAPSHOT_COMPRESSION = "zstd"
#: The columns of every part, in order.
SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field(MONTH, pa.int32(), nullable=False),
        pa.field(KPI_CODE, pa.int32(), nullable=False),
        pa.field(ENTITY_CODE, pa.int32(), nullable=False),
        pa.field(VALUE, pa.float64()),
    ]
)


@dataclass(frozen=True)
class SnapshotPart:
    """One part of a snapshot as it is stored: number, rows, digest and bytes."""

    part: int
    row_count: int
    digest: str
    data: bytes


def digest_of(data: bytes) -> str:
    """The SHA-256 digest of a part's bytes, as hex."""
    return hashlib.sha256(data).hexdigest()


def snapshot_parts(encoded: EncodedObservations) -> Iterator[SnapshotPart]:
    """The parts of the snapshot of ``encoded``, made one at a time (memory stays bounded)."""
    options = ipc.IpcWriteOptions(compression=SNAPSHOT_COMPRESSION)
    for number, start in enumerate(range(0, len(encoded), SNAPSHOT_PART_ROWS), start=1):
        rows = slice(start, start + SNAPSHOT_PART_ROWS)
        batch = pa.record_batch(
            [
                pa.array(encoded.months[rows].astype(np.int32)),
                pa.array(encoded.kpi_codes[rows].astype(np.int32, copy=False)),
                pa.array(encoded.entity_codes[rows].astype(np.int32, copy=False)),
                pa.array(encoded.values[rows].astype(np.float64, copy=False)),
            ],
            schema=SNAPSHOT_SCHEMA,
        )
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, SNAPSHOT_SCHEMA, options=options) as writer:
            writer.write_batch(batch)
        data = sink.getvalue().to_pybytes()
        yield SnapshotPart(number, batch.num_rows, digest_of(data), data)


def write_snapshot(conn: Connection, release_id: int, parts: Iterable[SnapshotPart]) -> None:
    """Insert the parts of a release's snapshot, one statement each."""
    for part in parts:
        conn.execute(
            insert_snapshot_part().values(
                release_id=release_id,
                part=part.part,
                row_count=part.row_count,
                digest=part.digest,
                data=part.data,
            )
        )


def has_snapshots_table(conn: Connection) -> bool:
    """True when the store has the snapshots table (stores written before it have not)."""
    return inspect(conn).has_table(SNAPSHOTS_TABLE)


def read_snapshot(
    conn: Connection, info: ReleaseInfo, labels: tuple[np.ndarray, np.ndarray], url: str
) -> EncodedObservations | None:
    """A release's observations from its snapshot; ``None`` when the release has none.

    Each part is read, checked against its digest and decoded into preallocated columns, one
    at a time.

    :raises SnapshotError: for a snapshot whose bytes, parts or row counts are not those written
        (a :class:`~kpisheet.errors.ChecksumError`: the release is refused as a changed one).
    """
    if not has_snapshots_table(conn):
        return None
    parts = conn.execute(select_snapshot_parts(info.id)).all()
    if not parts:
        return None

    def changed(reason: str) -> SnapshotError:
        return SnapshotError(url, info.id, info.checksum, reason)

    numbers = [int(part) for part, _, _ in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise changed(f"its parts are {', '.join(map(str, numbers))}, not 1 to {len(parts)}")
    total = sum(int(rows) for _, rows, _ in parts)
    if total != info.row_count:
        raise changed(f"its parts hold {total:,} rows, the release {info.row_count:,}")
    months = np.empty(total, dtype=np.int64)
    kpi_codes = np.empty(total, dtype=np.int32)
    entity_codes = np.empty(total, dtype=np.int32)
    values = np.empty(total, dtype=np.float64)
    columns: tuple[np.ndarray, ...] = (months, kpi_codes, entity_codes, values)
    filled = 0
    for part, rows, digest in parts:
        data = conn.execute(select_snapshot_data(info.id, part)).scalar_one()
        data = bytes(data) if not isinstance(data, bytes) else data  # e.g. a memoryview
        if digest_of(data) != digest:
            raise changed(f"part {part} of {len(parts)} does not match the digest written with it")
        try:
            table = ipc.open_stream(pa.py_buffer(data)).read_all()
        except (pa.ArrowException, OSError) as exc:  # pragma: no cover - digest matched
            raise changed(f"part {part} cannot be decoded: {exc}") from exc
        if not table.schema.equals(SNAPSHOT_SCHEMA) or table.num_rows != rows:
            raise changed(f"part {part} does not hold the columns and rows written")
        stop = filled + int(rows)
        for out, column in zip(columns, table.itercolumns(), strict=True):
            out[filled:stop] = column.to_numpy()
        filled = stop
    for codes, names, what in (
        (kpi_codes, labels[0], "KPIs"),
        (entity_codes, labels[1], "entities"),
    ):
        if total and (codes.min() < 0 or codes.max() >= len(names)):
            raise changed(f"its codes name {what} that release {info.id} does not have")
    return EncodedObservations(months, kpi_codes, entity_codes, values, labels[0], labels[1])
