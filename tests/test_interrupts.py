"""``polythrottle.interrupts``: a signal whose exception is lost where its handler ran still ends the command.

A Python signal handler runs wherever the main thread is. When that is inside a library's bare ``except:``
(Cython wraps its ``collections.abc`` registrations in one; every module with memoryviews runs it on import,
numpy.random's among them) or a ``__del__``, the exception it raises is dropped. The command must still stop
(and restore): the next checkpoint, or the next signal, raises it again; while the exception is being handled,
later signals are only recorded, as before (a second Ctrl-C cannot cut a restore short).
"""

from __future__ import annotations

import signal

import numpy as np
import pytest

from polythrottle import cli, interrupts
from polythrottle.interrupts import Terminated
from polythrottle.measure import harness


def swallowed(sig: int) -> None:
    """``sig`` arrives inside a bare ``except`` (the handler runs in ``raise_signal``, its exception is dropped)."""
    try:
        signal.raise_signal(sig)
    except BaseException:  # noqa: BLE001 - what Cython's `except: pass` does
        pass


def test_a_lost_signal_is_raised_again_by_the_next_checkpoint():
    with interrupts.command_signals():
        interrupts.check()  # no signal: nothing
        swallowed(signal.SIGTERM)
        with pytest.raises(Terminated) as e:
            interrupts.check()
        assert e.value.signum == signal.SIGTERM
        swallowed(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt) as k:
            interrupts.check()
        assert type(k.value) is KeyboardInterrupt


def test_a_signal_after_a_lost_one_raises():
    with interrupts.command_signals():
        swallowed(signal.SIGTERM)
        with pytest.raises(Terminated):
            signal.raise_signal(signal.SIGHUP)


def test_while_the_exception_is_handled_later_signals_are_recorded_and_checkpoints_pass():
    with interrupts.command_signals():
        with pytest.raises(Terminated):
            try:
                signal.raise_signal(signal.SIGTERM)
            finally:  # the command's cleanup
                signal.raise_signal(signal.SIGINT)
                interrupts.check()
        assert interrupts._command.later == [signal.SIGINT]
        with pytest.raises(RuntimeError):  # cleanup that turns it into another error: still handling it
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                try:
                    raise RuntimeError("rollback failed") from None
                finally:
                    signal.raise_signal(signal.SIGTERM)
                    interrupts.check()
        assert interrupts._command.later == [signal.SIGINT, signal.SIGTERM]


def test_once_the_command_is_done_nothing_is_raised():
    with interrupts.command_signals():
        interrupts.ignore_further()
        signal.raise_signal(signal.SIGTERM)
        interrupts.check()
        assert interrupts._command.later == [signal.SIGTERM]
    with interrupts.command_signals():
        swallowed(signal.SIGTERM)
    interrupts.check()  # outside the command: a later test, a library caller


class LosesASignal:
    """A workload whose second batch gets SIGTERM inside a bare ``except`` (as in a lazily imported Cython
    module); it would run for ``seconds`` without the checkpoint."""

    batch_size = 1

    def __init__(self) -> None:
        self.batches = 0

    def run_batch(self) -> None:
        self.batches += 1
        if self.batches == 2:
            swallowed(signal.SIGTERM)

    def synchronize(self) -> None:
        pass


def test_the_harness_stops_at_the_batch_after_a_lost_signal():
    w = LosesASignal()
    with interrupts.command_signals(), pytest.raises(Terminated):
        harness._run_until(w, seconds=60.0, min_batches=1, clock=iter(np.arange(0, 1e6, 1e-3)).__next__)
    assert w.batches == 2


def test_a_command_that_ran_on_after_a_lost_signal_exits_with_it(monkeypatch, capsys):
    import polythrottle.cli.devices as devices

    def command(args):
        swallowed(signal.SIGTERM)
        return 0

    monkeypatch.setattr(devices, "run", command)
    assert cli.main(["devices"]) == 143
    assert capsys.readouterr().err == "polythrottle: terminated (settings restored)\n"
