"""``polythrottle profile``: what it refuses before it measures anything."""

from __future__ import annotations

from polythrottle.cli import main


def test_out_over_the_replayed_table_is_refused_and_the_table_kept(small_table, capsys, tmp_path, monkeypatch):
    """`profile --device replay:t.csv --out t.csv` replaced the measured table by a sweep of it (rows
    flushed as measured, the original gone); also through another spelling of the same path."""
    before = small_table.read_text()
    monkeypatch.chdir(tmp_path)
    for out in (str(small_table), f"./{small_table.name}"):
        code = main(["profile", "--device", f"replay:{small_table.name}", "--knobs", "gpu_mhz", "--out", out])
        err = capsys.readouterr().err
        assert code == 2 and err.endswith("is the file the device replay:small.csv reads; write to another file\n")
        assert err.count("\n") == 1
    assert small_table.read_text() == before


def test_out_over_the_profile_of_a_sim_device_is_refused(tmp_path, capsys):
    board = tmp_path / "my-board.yaml"
    board.write_text("name: my-board\n")
    code = main(["profile", "--device", f"sim:{board}?gpu=range", "--workload", "resnet50", "--out", str(board)])
    assert code == 2 and "is the file the device" in capsys.readouterr().err
    assert board.read_text() == "name: my-board\n"
