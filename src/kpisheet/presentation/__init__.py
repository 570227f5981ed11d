"""Words and formats: every text and number format kpisheet shows to people, in one place.

German words, level, unit and window labels, column headers and notes live in
:mod:`kpisheet.presentation.words`; Swiss number formats (``1'234.50``, ``CHF``) and Excel number
formats in :mod:`kpisheet.presentation.formats`; why a comparison with last year is not shown in
:mod:`kpisheet.presentation.reasons`. The web app, the XLSX exports and the charts take every
word and number format from here and look them up when they build a text, so a translation, a
plugin or a house style changes one place (see docs/plugins.md, "Words and formats").

To change a word or format while running (a test, a plugin), change the entry of its mapping
(``words.COLUMN_WORDS[...]``) or the attribute of the module that defines it
(``presentation.formats.CURRENCY``); the names re-exported here are copies of the strings.
Everything interpolated from data (entity names) stays plain text; whoever shows it as markup
escapes it.
"""

from __future__ import annotations

from kpisheet.presentation import formats, reasons, words
from kpisheet.presentation.formats import *  # noqa: F403  (the names of formats.__all__)
from kpisheet.presentation.reasons import *  # noqa: F403
from kpisheet.presentation.words import *  # noqa: F403

__all__ = ["formats", "reasons", "words", *formats.__all__, *reasons.__all__, *words.__all__]
