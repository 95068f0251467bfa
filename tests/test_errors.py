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


def test_every_typed_exception_is_used_by_the_package() -> None:
    """No dead error type: NoFeasibleConfigError (exit 3) was defined but never raised (a tune with no feasible
    config is a result: ``best`` None, and ``tune`` exits 3 itself)."""
    import re

    from polythrottle import errors
    from tests.conftest import ROOT

    sources = "\n".join(p.read_text() for p in (ROOT / "polythrottle").rglob("*.py") if p.name != "errors.py")
    types = [n for n, v in vars(errors).items()
             if isinstance(v, type) and issubclass(v, errors.PolyThrottleError) and v.__module__ == errors.__name__]
    assert "BadInputError" in types
    assert [n for n in types if not re.search(rf"\b{n}\b", sources)] == []
