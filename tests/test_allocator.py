"""kpisheet keeps freed memory for the next query instead of faulting it back in page by page."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow
import pytest

from kpisheet.allocator import GLIBC_ENV, OPT_OUT_ENV
from kpisheet.observations import text_column

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the thresholds are glibc's",
)

#: Ten arrays of 3 MB (below numpy's huge-page size) allocated and freed together, then again
#: five times: the page faults of the repeats, and whether the thresholds were set.
ROUNDS = textwrap.dedent(
    """
    import resource
    import numpy as np
    import kpisheet
    from kpisheet.allocator import keep_freed_memory

    def round_():
        arrays = [np.ones(375_000) for _ in range(10)]
        del arrays

    {start}
    round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        round_()
    print(SET, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def faults(start: str, **env: str) -> tuple[str, int]:
    """Run :data:`ROUNDS` in a fresh process after ``start``; its output (set, page faults)."""
    clean = {k: v for k, v in os.environ.items() if k not in (OPT_OUT_ENV, *GLIBC_ENV)}
    completed = subprocess.run(
        [sys.executable, "-c", ROUNDS.format(start=start)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    state, count = completed.stdout.split()
    return state, int(count)


@glibc
def test_freed_blocks_are_reused_without_page_faults() -> None:
    """After opening a sheet, 30 MB freed and allocated again come back without page faults;
    with the thresholds left alone, glibc hands them to the system and faults them in again."""
    opened = "kpisheet.open(); SET = keep_freed_memory()"
    state, kept = faults(opened)
    assert state == "True"
    assert kept < 500
    state, returned = faults(opened, **{OPT_OUT_ENV: "0"})
    assert state == "False"
    assert returned > 5 * 5_000  # about 7,300 pages per round
    assert returned > 20 * max(kept, 1)


@glibc
@pytest.mark.parametrize("name", GLIBC_ENV)
def test_a_threshold_chosen_in_the_environment_is_left_alone(name: str) -> None:
    """A glibc threshold set in the environment is the user's choice: kpisheet sets neither."""
    state, _ = faults("SET = keep_freed_memory()", **{name: str(64 * 1024 * 1024)})
    assert state == "False"


def test_text_columns_are_allocated_where_freed_memory_is_kept() -> None:
    """A result's text column is taken into the system allocator's memory, not Arrow's default
    pool (which returns freed memory to the system within milliseconds)."""
    pool = pyarrow.system_memory_pool()
    before = pool.bytes_allocated()
    codes = np.arange(200_000) % 3
    column = text_column(["Produkt 0001", "Produkt 0002", "Gesamt"], codes)
    assert pool.bytes_allocated() - before >= 200_000 * len("Produkt 0001")
    assert list(column[:4]) == ["Produkt 0001", "Produkt 0002", "Gesamt", "Produkt 0001"]
    assert str(column.dtype) == "str"
