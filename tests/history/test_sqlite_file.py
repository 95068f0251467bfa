"""The SQLite file of a history: what is refused before it is opened."""

from __future__ import annotations

import pytest

from polythrottle.history.errors import HistoryError
from polythrottle.history.sqlite_file import prepare


@pytest.mark.parametrize("below", ["h.sqlite", "sub/h.sqlite"])
def test_a_file_where_its_directory_should_be_is_named(tmp_path, below):
    # said "cannot create its directory (File exists)" (or "Not a directory"): which file, and why, was left out
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "afile" / below
    with pytest.raises(HistoryError) as e:
        prepare(path, create=True)
    assert str(e.value) == f"history database {path}: cannot create its directory ({tmp_path / 'afile'} is not a directory)"


def test_a_missing_directory_is_made_and_a_missing_file_refused_when_not_creating(tmp_path):
    prepare(tmp_path / "a" / "b" / "h.sqlite", create=True)
    assert (tmp_path / "a" / "b").is_dir()
    with pytest.raises(HistoryError, match="no history database at"):
        prepare(tmp_path / "c" / "h.sqlite", create=False)
