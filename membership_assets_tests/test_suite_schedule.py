"""The suite's own scheduling stays true to the tests it names."""

from __future__ import annotations

from pathlib import Path

from .conftest import SLOW_FIRST

HERE = Path(__file__).parent


def test_every_slow_first_test_exists():
    """A renamed slow test would silently lose its early start: each name must still be defined."""
    for name in SLOW_FIRST:
        file, test = name.split("::")
        assert f"def {test.split('[')[0]}(" in (HERE / file).read_text(), name
