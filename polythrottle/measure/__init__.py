"""Measuring: what one measurement yields (``measurement``), the windowed harness (``harness``) and a live
workload under an energy meter (``live``)."""
