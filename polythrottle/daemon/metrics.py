"""Prometheus metrics of the daemon (prometheus-client), served as text on ``/metrics``.

Energy and CO2 are estimates from the daemon's own measurements:

- ``polythrottle_co2_per_inference_grams`` = energy per inference (J) / 3.6e6 (J per kWh) x grid
  carbon intensity (g/kWh, config ``carbon_intensity_g_per_kwh``, else ``carbon_country``'s from
  ``polythrottle.carbon``'s dataset, else 481 g/kWh, the 2023 global average published by Ember);
  ``polythrottle_grid_carbon_intensity_grams_per_kwh`` carries where it comes from as the labels
  ``country``, ``year`` and ``source`` ("" when not known);
- ``polythrottle_energy_joules_total`` adds, at every serving measurement, the measured board power
  times the time since the previous one (assumes the power holds between measurements; capped at two
  monitor intervals), and ``polythrottle_co2_grams_total`` is that energy times the intensity.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

from polythrottle.carbon import GIVEN_SOURCE, J_PER_KWH, CarbonIntensity, co2_grams
from polythrottle.measure.measurement import Measurement
from polythrottle.space import Value


def power_of(m: Measurement) -> float | None:
    """Board power (W): measured, else energy per inference x throughput; None if neither is known."""
    if m.power_w is not None:
        return m.power_w
    if m.throughput_ips is not None:
        return m.energy_j * m.throughput_ips
    return None


def host_port(address: str, port: int) -> str:
    """``address:port`` as a URL writes it (``[::1]:9347`` for an IPv6 address)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def check_bindable(address: str, port: int) -> None:
    """Bind ``address:port`` as ``DaemonMetrics.serve`` would (the address's family, ``SO_REUSEADDR``), then close
    it at once. Raises OSError: the port taken (EADDRINUSE), an address not of this host (EADDRNOTAVAIL), a
    privileged port for a user (EACCES), a name that does not resolve (socket.gaierror)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(sockaddr)


class DaemonMetrics:
    """The daemon's metrics in their own registry (nothing global); ``serve`` exposes them over HTTP."""

    def __init__(self, slo_ms: float, carbon_g_per_kwh: float | CarbonIntensity, monitor_interval_s: float) -> None:
        self.registry = r = CollectorRegistry()
        self.carbon_g_per_kwh = 0.0
        self._carbon_labels: tuple[str, str, str] | None = None
        self.max_gap_s = 2 * monitor_interval_s if monitor_interval_s > 0 else 60.0
        self._last_serving: float | None = None
        self._knob_labels: set[tuple[str, ...]] = set()
        self._http: Any = None
        p = "polythrottle_"
        self.energy = Gauge(p + "energy_per_inference_joules", "Energy per inference, last measurement", registry=r)
        self.latency = Gauge(p + "latency_seconds", "Latency the SLO is judged on, last measurement", registry=r)
        self.power = Gauge(p + "power_watts", "Board power, last measurement", registry=r)
        self.slo = Gauge(p + "slo_seconds", "Latency SLO", registry=r)
        self.knob = Gauge(p + "knob_value", "Applied value of a numeric knob (MHz for clocks)", ["knob"], registry=r)
        self.knob_info = Gauge(p + "knob_info", "Applied value of a non-numeric knob (value label; 1)",
                               ["knob", "value"], registry=r)
        self.applied = Gauge(p + "config_applied", "1 while a tuned config is applied, 0 at the device's own",
                             registry=r)
        self.tuning = Gauge(p + "tuning", "1 while a tune runs", registry=r)
        self.tunes = Counter(p + "tunes", "Tunes by kind (initial, retune) and outcome", ["kind", "outcome"],
                             registry=r)
        self.saving = Gauge(p + "last_tune_saving_ratio", "Energy saving of the last tune vs its baseline (0.2 = 20%)",
                            registry=r)
        self.measurements = Counter(p + "measurements", "Measurements by phase (serving, tuning)", ["phase"],
                                    registry=r)
        self.violations = Counter(p + "slo_violations", "Measurements over the SLO by phase (serving, tuning)",
                                  ["phase"], registry=r)
        self.carbon = Gauge(p + "grid_carbon_intensity_grams_per_kwh",
                            "Grid carbon intensity used for CO2 (labels: its country, year and source)",
                            ["country", "year", "source"], registry=r)
        self.co2_per_inference = Gauge(p + "co2_per_inference_grams", "Estimated CO2 per inference", registry=r)
        self.energy_total = Counter(p + "energy_joules", "Estimated board energy while serving", registry=r)
        self.co2_total = Counter(p + "co2_grams", "Estimated CO2 while serving", registry=r)
        self.slo.set(slo_ms / 1000.0)
        self.set_carbon(carbon_g_per_kwh)
        for phase in ("serving", "tuning"):
            self.measurements.labels(phase).inc(0)
            self.violations.labels(phase).inc(0)

    def set_slo(self, slo_ms: float) -> None:
        self.slo.set(slo_ms / 1000.0)

    def set_carbon(self, carbon: float | CarbonIntensity) -> None:
        """The grid carbon intensity for CO2 from now on (a bare number counts as given by the user)."""
        if not isinstance(carbon, CarbonIntensity):
            carbon = CarbonIntensity(None, float(carbon), None, GIVEN_SOURCE)
        if self._carbon_labels is not None:
            self.carbon.remove(*self._carbon_labels)
        self._carbon_labels = (carbon.country or "", str(carbon.year or ""), carbon.source)
        self.carbon.labels(*self._carbon_labels).set(carbon.intensity_g_per_kwh)
        self.carbon_g_per_kwh = carbon.intensity_g_per_kwh

    def observe(self, m: Measurement, slo_ms: float, phase: str, now: float | None = None) -> None:
        """Record one measurement made while ``phase`` is ``serving`` (applied config) or ``tuning``."""
        now = time.monotonic() if now is None else now
        self.energy.set(m.energy_j)
        self.latency.set(m.latency_ms / 1000.0)
        self.co2_per_inference.set(co2_grams(m.energy_j, self.carbon_g_per_kwh))
        power = power_of(m)
        if power is not None:
            self.power.set(power)
        self.measurements.labels(phase).inc()
        if m.latency_ms > slo_ms:
            self.violations.labels(phase).inc()
        if phase == "serving" and power is not None:
            if self._last_serving is not None:
                joules = power * min(now - self._last_serving, self.max_gap_s)
                self.energy_total.inc(joules)
                self.co2_total.inc(co2_grams(joules, self.carbon_g_per_kwh))
            self._last_serving = now
        elif phase != "serving":
            self._last_serving = None

    def show_current(self, energy_j: float, latency_ms: float, power_w: float | None = None) -> None:
        """Set the energy/latency/power gauges to the applied config's numbers (its tune's or stored
        estimate) without counting a measurement, so ``/metrics`` and ``status`` agree after an apply."""
        self.energy.set(energy_j)
        self.latency.set(latency_ms / 1000.0)
        self.co2_per_inference.set(co2_grams(energy_j, self.carbon_g_per_kwh))
        if power_w is not None:
            self.power.set(power_w)

    def set_applied(self, config: Mapping[str, Value] | None) -> None:
        """The config now applied (None: the device's own settings, nothing applied by us)."""
        for labels in self._knob_labels:
            (self.knob if len(labels) == 1 else self.knob_info).remove(*labels)
        self._knob_labels.clear()
        self.applied.set(0 if config is None else 1)
        for name, value in (config or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.knob.labels(name).set(float(value))
                self._knob_labels.add((name,))
            else:
                self.knob_info.labels(name, str(value)).set(1)
                self._knob_labels.add((name, str(value)))

    def tune_finished(self, kind: str, outcome: str, saving_pct: float | None) -> None:
        self.tunes.labels(kind, outcome).inc()
        if saving_pct is not None:
            self.saving.set(saving_pct / 100.0)

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, address: str, port: int) -> int:
        """Serve ``/metrics`` on ``address:port`` in a background thread; returns the bound port."""
        self._http, _ = start_http_server(port, address, registry=self.registry)
        return int(self._http.server_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


__all__ = ["J_PER_KWH", "DaemonMetrics", "check_bindable", "co2_grams", "host_port", "power_of"]
