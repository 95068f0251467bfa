"""polythrottle.errors: the typed exceptions and how a message shows a value."""

from __future__ import annotations

from polythrottle.errors import SHOWN_CHARS, shown


def test_shown_is_the_repr_cut_to_a_limit() -> None:
    assert shown("abc") == "'abc'"
    long = shown("x" * 500)
    assert len(long) == SHOWN_CHARS and long.endswith("...") and long.startswith("'xxx")
    assert shown(list(range(100)), 20) == repr(list(range(100)))[:17] + "..."


def test_one_shown_for_the_spec_and_the_board_profiles() -> None:
    """The spec's and the profiles' validation messages cut values the same way (they had a copy each)."""
    from polythrottle.boards import validation
    from polythrottle.spec import shown as spec_shown

    assert spec_shown is shown and validation.shown is shown
