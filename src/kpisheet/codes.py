"""Integer codes of texts (KPI ids, entities): a code per row into the column's distinct texts.

Validation, the cube and the store keep these columns as codes, not as a text per row. The
helpers here are shared by them and import nothing of kpisheet.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Rows counted at a time by :func:`used_codes`: temporaries of a few MB, not of the rows' length.
CODE_BLOCK = 1 << 18


def code_dtype(count: int) -> type[np.signedinteger]:
    """The smallest integer type for codes -1 to ``count`` - 1: the one pandas keeps the codes
    of ``count`` categories in, so a categorical column's codes are used without a copy."""
    for kind in (np.int8, np.int16, np.int32):
        if count < np.iinfo(kind).max:
            return kind
    return np.int64


def used_codes(codes: np.ndarray, count: int) -> np.ndarray:
    """Which of the codes ``0 .. count - 1`` occur in ``codes`` (-1, missing, is ignored),
    counted a block at a time: bincount takes its input as int64, 8 bytes a row at once."""
    used = np.zeros(count + 1, dtype=bool)
    for lo in range(0, len(codes), CODE_BLOCK):
        used |= np.bincount(codes[lo : lo + CODE_BLOCK] + 1, minlength=len(used)) > 0
    return used[1:]


def without_unused(codes: np.ndarray, categories: Any) -> tuple[np.ndarray, Any]:
    """The codes and categories with the categories no code uses left out, the others numbered
    0, 1, ... in their order (code -1, missing, stays -1); unchanged when every one is used."""
    used = used_codes(codes, len(categories))
    if used.all():
        return codes, categories
    renumbered = np.cumsum(used) - 1
    return np.where(codes >= 0, renumbered[codes], -1), categories[used]
