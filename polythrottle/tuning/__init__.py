"""A tune: the tuner joining a device and an optimizer (``tuner``), the session recording it in the
history store and warm-starting it from there (``session``, the entry point of every face), and its
measurements in order as plots and the live view read them (``trace``)."""

from polythrottle.tuning.tuner import Tuner, TuneRecord, TuneResult

__all__ = ["TuneRecord", "TuneResult", "Tuner"]
