"""Fake Jetson filesystem trees (``/proc``, ``/sys``, debugfs) mirroring real layouts, and a kernel double.

``build(root, board)`` writes a tree for one of ``BOARDS``: AGX Orin on JetPack 5 and 6 paths, Xavier
NX, TX2 and Nano (JetPack 4: INA3221 over iio, tegra210 EMC override on Nano), with per-cluster
cpufreq policies linked from every ``cpuN/cpufreq``, ``/sys/class/devfreq`` links, INA3221 rails
and the BPMP/tegra210 EMC files. Point ``POLYTHROTTLE_ROOT`` at ``root`` to use it.

Kernel semantics a plain file cannot have are enforced by ``FakeKernelIO``, a test double of
``polythrottle.clocks.sysfs.SysfsIO`` (no FUSE, works for a normal user and for root alike):

- EINVAL when a write would put a minimum above the maximum (``min_freq``/``max_freq``,
  ``scaling_min_freq``/``scaling_max_freq``) or is not an integer; ``cur_freq`` follows the limits;
- a cpufreq limit outside the policy's hardware limits (``cpuinfo_min_freq``/``cpuinfo_max_freq``) is taken
  without an error and held at the nearest one, as cpufreq does, and so is a BPMP EMC rate outside the
  clock's ``min_rate``/``max_rate``, as the firmware does;
- EACCES for paths matching ``deny`` in ``ROOT/.fake_kernel.json`` (a non-root user; file modes alone
  cannot show this when tests run as root, which ignores them) and any errno for ``fail`` entries;
- ``clamp`` entries (glob -> highest value): a larger value is taken without an error but the file then
  holds the highest one, as a min/max limit reads back under a thermal or nvpmodel cap;
- every accepted write is appended to ``ROOT/.fake_kernel.log`` ("path value" lines, in order);
- fault hooks at the n-th write attempt of the tree (counted across processes in
  ``ROOT/.fake_kernel.count``, from 0): ``hooks=[{"at": N, "when": "before"|"after", "do": ACTION}]``
  with ACTION ``SIGINT``/``SIGTERM`` (the writing process signals itself: a signal that lands exactly
  there), ``block`` (append N to ``ROOT/.fake_kernel.blocked`` and wait until
  ``ROOT/.fake_kernel.release.N`` exists: a slow write another process can signal meanwhile) or an
  errno name such as ``EINVAL`` (the write is refused: the kernel refusing midway).

``builtin:fake`` workloads (``install()``) measure without torch: a no-op batch and a meter whose energy
follows the clocks in the tree, so a jetson ``tune`` or daemon runs in a fraction of a second. A hook
``{"measure": N, "do": "block"}`` holds the N-th measurement of the tree (counted from 0 in
``ROOT/.fake_kernel.measures``) until ``release_measure(root, N)``: a tune in progress, outside any write.

Run the CLI against a tree in a separate process with the double installed::

    POLYTHROTTLE_ROOT=ROOT python -m tests.fake_jetson apply --device jetson --set gpu_mhz=624.75
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from polythrottle.clocks import sysfs

# ----- boards -------------------------------------------------------------------------------------
ORIN_GPU_HZ = [114750000, 216750000, 318750000, 420750000, 522750000, 624750000, 726750000, 828750000,
               930750000, 1032750000, 1134750000, 1236750000, 1300500000]
ORIN_CPU_KHZ = [115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400, 883200,
                960000, 1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600, 1574400, 1651200,
                1728000, 1804800, 1881600, 1958400, 2035200, 2112000, 2188800, 2201600]
NX_GPU_HZ = [114750000, 204000000, 306000000, 408000000, 510000000, 599250000, 701250000, 752250000,
             803250000, 854250000, 905250000, 956250000, 1007250000, 1058250000, 1109250000]
NX_CPU_KHZ = [115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400, 883200,
              960000, 1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600, 1574400, 1651200,
              1728000, 1804800, 1881600, 1907200]
TX2_GPU_HZ = [114750000, 216750000, 318750000, 420750000, 522750000, 624750000, 726750000, 854250000,
              930750000, 1032750000, 1122000000, 1236750000, 1300500000]
TX2_CPU_KHZ = [345600, 499200, 652800, 806400, 960000, 1113600, 1267200, 1420800, 1574400, 1728000,
               1881600, 2035200]
NANO_GPU_HZ = [76800000, 153600000, 230400000, 307200000, 384000000, 460800000, 537600000, 614400000,
               691200000, 768000000, 844800000, 921600000]
NANO_CPU_KHZ = [102000, 204000, 307200, 403200, 518400, 614400, 710400, 825600, 921600, 1036800, 1132800,
                1224000, 1326000, 1428000, 1479000]


@dataclass(frozen=True)
class FakeBoard:
    """What a fake tree contains. Paths are board paths; rails: i2c device -> (bus dir, labels)."""

    key: str
    profile: str
    model: str
    gpu_dir: str
    gpu_of_name: str
    gpu_hz: tuple[int, ...]
    emc: str  # "bpmp" or "t210"
    emc_rate_hz: int  # rate at boot
    emc_max_hz: int
    clusters: tuple[tuple[int, ...], ...]  # CPUs per policy (policy named after its first CPU)
    cpu_khz: tuple[int, ...]
    power: str  # "hwmon" or "iio"
    rails: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    offline_cpus: tuple[int, ...] = ()

    @property
    def emc_files(self) -> dict[str, str]:
        if self.emc == "bpmp":
            d = "/sys/kernel/debug/bpmp/debug/clk/emc"
            return {"rate": f"{d}/rate", "lock": f"{d}/mrq_rate_locked"}
        d = "/sys/kernel/debug/clk/override.emc"
        return {"rate": f"{d}/clk_update_rate", "lock": f"{d}/clk_state"}

    def policy_dir(self, first_cpu: int) -> str:
        return f"/sys/devices/system/cpu/cpufreq/policy{first_cpu}"

    @property
    def online_policies(self) -> list[str]:
        return [self.policy_dir(c[0]) for c in self.clusters if any(x not in self.offline_cpus for x in c)]


BOARDS: dict[str, FakeBoard] = {
    b.key: b
    for b in [
        FakeBoard(
            "agx-orin-jp5", "jetson-agx-orin", "NVIDIA Jetson AGX Orin Developer Kit",
            "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b", "ga10b", tuple(ORIN_GPU_HZ),
            "bpmp", 3199000000, 3199000000, ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)), tuple(ORIN_CPU_KHZ),
            "hwmon",
            {"1-0040": ("/sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040",
                        ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")),
             "1-0041": ("/sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0041",
                        ("NC", "VDDQ_VDD2_1V8AO", "NC"))},
        ),
        FakeBoard(
            "agx-orin-jp6", "jetson-agx-orin", "NVIDIA Jetson AGX Orin Developer Kit",
            "/sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu", "gpu", tuple(ORIN_GPU_HZ),
            "bpmp", 3199000000, 3199000000, ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)), tuple(ORIN_CPU_KHZ),
            "hwmon",
            {"1-0040": ("/sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040",
                        ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")),
             "1-0041": ("/sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0041",
                        ("NC", "VDDQ_VDD2_1V8AO", "NC"))},
        ),
        FakeBoard(
            "xavier-nx", "jetson-xavier-nx", "NVIDIA Jetson Xavier NX Developer Kit",
            "/sys/devices/17000000.gv11b/devfreq/17000000.gv11b", "gv11b", tuple(NX_GPU_HZ),
            "bpmp", 1866000000, 1866000000, ((0, 1), (2, 3), (4, 5)), tuple(NX_CPU_KHZ),
            "hwmon",
            {"7-0040": ("/sys/devices/3160000.i2c/i2c-0/7-0040", ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"))},
            offline_cpus=(4, 5),
        ),
        FakeBoard(
            "tx2", "jetson-tx2", "quill",
            "/sys/devices/17000000.gp10b/devfreq/17000000.gp10b", "gp10b", tuple(TX2_GPU_HZ),
            "bpmp", 1866000000, 1866000000, ((0, 3, 4, 5), (1, 2)), tuple(TX2_CPU_KHZ),
            "iio",
            {"0-0040": ("/sys/devices/3160000.i2c/i2c-0/0-0040", ("VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI")),
             "0-0041": ("/sys/devices/3160000.i2c/i2c-0/0-0041", ("VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR"))},
        ),
        FakeBoard(
            "nano", "jetson-nano", "NVIDIA Jetson Nano Developer Kit",
            "/sys/devices/57000000.gpu/devfreq/57000000.gpu", "gpu", tuple(NANO_GPU_HZ),
            "t210", 1600000000, 1600000000, ((0, 1, 2, 3),), tuple(NANO_CPU_KHZ),
            "iio",
            {"6-0040": ("/sys/devices/7000c400.i2c/i2c-6/6-0040", ("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"))},
        ),
    ]
}


# ----- building a tree ----------------------------------------------------------------------------
def _write(root: Path, board_path: str, text: str, mode: int | None = None) -> None:
    p = root / board_path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    if mode is not None:
        p.chmod(mode)


def _link(root: Path, board_path: str, target_board_path: str) -> None:
    """A relative symlink, as sysfs makes them (so it resolves inside the fake root)."""
    p = root / board_path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    target = root / target_board_path.lstrip("/")
    p.symlink_to(os.path.relpath(target, p.parent))


def build(root: Path, key: str, *, nonroot: bool = False) -> FakeBoard:
    """Write the fake tree of board ``key`` under ``root``. ``nonroot``: writes refused with EACCES."""
    b = BOARDS[key]
    root.mkdir(parents=True, exist_ok=True)
    rw = 0o444 if nonroot else 0o644
    _write(root, "/proc/device-tree/model", b.model + "\x00")
    _write(root, "/proc/device-tree/compatible", f"nvidia,{b.profile}\x00")

    # GPU devfreq (Hz), its class link and of_node name
    g = b.gpu_dir
    dev = g.rsplit("/devfreq/", 1)[0]
    _write(root, f"{g}/available_frequencies", " ".join(map(str, b.gpu_hz)) + " \n", 0o444)
    _write(root, f"{g}/min_freq", f"{b.gpu_hz[0]}\n", rw)
    _write(root, f"{g}/max_freq", f"{b.gpu_hz[-1]}\n", rw)
    _write(root, f"{g}/cur_freq", f"{b.gpu_hz[0]}\n", 0o644)
    _write(root, f"{g}/governor", "nvhost_podgov\n", rw)
    _write(root, f"{dev}/of_node/name", b.gpu_of_name + "\x00", 0o444)
    _write(root, f"{dev}/railgate_enable", "1\n", rw)
    _link(root, f"{g}/device", dev)
    _link(root, f"/sys/class/devfreq/{g.rsplit('/', 1)[1]}", g)

    # EMC
    if b.emc == "bpmp":
        d = "/sys/kernel/debug/bpmp/debug/clk/emc"
        _write(root, f"{d}/rate", f"{b.emc_rate_hz}\n", rw)
        _write(root, f"{d}/mrq_rate_locked", "0\n", rw)
        _write(root, f"{d}/min_rate", "204000000\n", 0o444)
        _write(root, f"{d}/max_rate", f"{b.emc_max_hz}\n", 0o444)
    else:
        d = "/sys/kernel/debug/clk/override.emc"
        _write(root, f"{d}/clk_update_rate", f"{b.emc_rate_hz}\n", rw)
        _write(root, f"{d}/clk_state", "0\n", rw)
        _write(root, "/sys/kernel/debug/clk/emc/clk_rate", f"{b.emc_rate_hz}\n", 0o444)
        _write(root, "/sys/kernel/debug/tegra_bwmgr/emc_max_rate", f"{b.emc_max_hz}\n", 0o444)
        _write(root, "/sys/kernel/debug/tegra_bwmgr/emc_min_rate", "204000000\n", 0o444)
    _write(root, "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap", f"{b.emc_max_hz}\n", 0o444)

    # CPU: per-cluster policies, every cpuN/cpufreq a link to its policy
    cpus = sorted(c for cl in b.clusters for c in cl)
    _write(root, "/sys/devices/system/cpu/possible", f"0-{cpus[-1]}\n", 0o444)
    online = [c for c in cpus if c not in b.offline_cpus]
    _write(root, "/sys/devices/system/cpu/online", ",".join(map(str, online)) + "\n", 0o444)
    for cl in b.clusters:
        pd = b.policy_dir(cl[0])
        active = [c for c in cl if c not in b.offline_cpus]
        _write(root, f"{pd}/scaling_available_frequencies", " ".join(map(str, b.cpu_khz)) + " \n", 0o444)
        _write(root, f"{pd}/cpuinfo_min_freq", f"{b.cpu_khz[0]}\n", 0o444)
        _write(root, f"{pd}/cpuinfo_max_freq", f"{b.cpu_khz[-1]}\n", 0o444)
        _write(root, f"{pd}/scaling_min_freq", f"{b.cpu_khz[0]}\n", rw)
        _write(root, f"{pd}/scaling_max_freq", f"{b.cpu_khz[-1]}\n", rw)
        _write(root, f"{pd}/scaling_cur_freq", f"{b.cpu_khz[-1]}\n", 0o644)
        _write(root, f"{pd}/scaling_governor", "schedutil\n", rw)
        _write(root, f"{pd}/related_cpus", " ".join(map(str, cl)) + "\n", 0o444)
        _write(root, f"{pd}/affected_cpus", " ".join(map(str, active)) + "\n", 0o444)
        for c in cl:
            cd = f"/sys/devices/system/cpu/cpu{c}"
            if c != 0:
                _write(root, f"{cd}/online", "0\n" if c in b.offline_cpus else "1\n", rw)
            _link(root, f"{cd}/cpufreq", pd)

    # INA3221 power monitors
    for i, (addr, (bus_dir, labels)) in enumerate(sorted(b.rails.items())):
        _link(root, f"/sys/bus/i2c/devices/{addr}", bus_dir)
        _link(root, f"/sys/bus/i2c/drivers/{'ina3221' if b.power == 'hwmon' else 'ina3221x'}/{addr}", bus_dir)
        if b.power == "hwmon":
            _write(root, f"{bus_dir}/name", "ina3221\n", 0o444)
            h = f"{bus_dir}/hwmon/hwmon{i + 1}"
            _write(root, f"{h}/name", "ina3221\n", 0o444)
            for k, label in enumerate(labels, start=1):
                _write(root, f"{h}/in{k}_label", label + "\n", 0o444)
                _write(root, f"{h}/in{k}_input", "5000\n", 0o444)
                _write(root, f"{h}/curr{k}_input", f"{200 * k}\n", 0o444)
                _write(root, f"{h}/in{k + 3}_input", "40\n", 0o444)  # shunt voltage channel, unlabelled
            _write(root, f"{h}/in7_label", "sum of shunt voltages\n", 0o444)
            _write(root, f"{h}/in7_input", "120\n", 0o444)
        else:
            _write(root, f"{bus_dir}/name", "ina3221x\n", 0o444)
            d = f"{bus_dir}/iio:device{i}"
            for k, label in enumerate(labels):
                _write(root, f"{d}/rail_name_{k}", label + "\n", 0o444)
                _write(root, f"{d}/in_voltage{k}_input", "5000\n", 0o444)
                _write(root, f"{d}/in_current{k}_input", f"{200 * (k + 1)}\n", 0o444)
                _write(root, f"{d}/in_power{k}_input", f"{1000 * (k + 1)}\n", 0o444)
    if nonroot:
        set_rules(root, deny=["/sys/*"])
    return b


def set_rules(root: Path, *, deny: list[str] | None = None, fail: dict[str, str] | None = None,
              hooks: list[dict] | None = None, clamp: dict[str, int] | None = None) -> None:
    """Kernel-double rules: ``deny`` (globs -> EACCES on write), ``fail`` (path -> errno name), ``hooks``
    (fault hooks at the n-th write; see the module docstring), ``clamp`` (glob -> highest value the file
    takes silently). Resets the write counter."""
    (root / ".fake_kernel.json").write_text(json.dumps({"deny": deny or [], "fail": fail or {}, "hooks": hooks or [],
                                                        "clamp": clamp or {}}))
    (root / ".fake_kernel.count").write_text("0")
    (root / ".fake_kernel.measures").write_text("0")
    for p in root.glob(".fake_kernel.release.*"):
        p.unlink()
    (root / ".fake_kernel.blocked").unlink(missing_ok=True)
    (root / ".fake_kernel.measure_blocked").unlink(missing_ok=True)


def blocked(root: Path) -> list[int]:
    """Write indices at which a ``block`` hook has stopped a writer (in order)."""
    p = root / ".fake_kernel.blocked"
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def release(root: Path, at: int) -> None:
    """Let the writer blocked at write ``at`` go on."""
    (root / f".fake_kernel.release.{at}").write_text("")


def measures_blocked(root: Path) -> list[int]:
    p = root / ".fake_kernel.measure_blocked"
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def release_measure(root: Path, at: int) -> None:
    (root / f".fake_kernel.release.m{at}").write_text("")


def _count(path: Path) -> int:
    """Increment the counter file ``path``; returns its value before (serialised across processes)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        n = int(os.read(fd, 64) or 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(n + 1).encode())
    finally:
        os.close(fd)
    return n


def _wait_for(gate: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def writes_attempted(root: Path) -> int:
    p = root / ".fake_kernel.count"
    return int(p.read_text() or 0) if p.exists() else 0


def write_log(root: Path) -> list[tuple[str, str]]:
    """Every write the double accepted, in order: (board path, value)."""
    p = root / ".fake_kernel.log"
    if not p.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in p.read_text().splitlines() if line]  # type: ignore[misc]


def snapshot(root: Path) -> dict[str, str]:
    """Every regular file of the tree (board path -> text), links not followed, control files excluded."""
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for f in filenames:
            p = Path(dirpath) / f
            if p.is_symlink() or f.startswith(".fake_kernel"):
                continue
            out["/" + str(p.relative_to(root))] = p.read_text(errors="replace")
    return out


def read(root: Path, board_path: str) -> str:
    return (root / board_path.lstrip("/")).read_text().strip()


# ----- INA3221 readings that change over time ---------------------------------------------------------
RAILS = {  # hwmon channel -> (base mA, amplitude mA, period s, phase); every rail at 5000 mV
    1: (1200.0, 500.0, 0.37, 0.0),
    2: (800.0, 300.0, 0.23, 1.0),
    3: (400.0, 150.0, 0.91, 2.0),
}
VOLT_V = 5.0


def current_ma(ch: int, t: float) -> float:
    base, amp, period, phase = RAILS[ch]
    return base + amp * math.sin(2 * math.pi * t / period + phase)


def rail_energy_j(t0: float, t1: float) -> float:
    """Analytic integral of the summed rail power over [t0, t1]."""
    total = 0.0
    for base, amp, period, phase in RAILS.values():
        w = 2 * math.pi / period
        integral_ma_s = base * (t1 - t0) - amp / w * (math.cos(w * t1 + phase) - math.cos(w * t0 + phase))
        total += VOLT_V * integral_ma_s / 1000.0
    return total


class RailWriter(threading.Thread):
    """Writes each rail's current as a function of time.monotonic() every ~1 ms (atomic renames);
    every ``garbage_every``-th update of rail 2 writes garbage, which the sampler must skip."""

    def __init__(self, hwmon_dir, garbage_every=40):
        super().__init__(daemon=True)
        self.dir, self.garbage_every = hwmon_dir, garbage_every
        self.stop = threading.Event()
        self.updates = 0

    def put(self, name, text):
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.dir / name)

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            self.updates += 1
            for ch in RAILS:
                garbage = ch == 2 and self.garbage_every and self.updates % self.garbage_every == 0
                self.put(f"curr{ch}_input", "oops\n" if garbage else f"{current_ma(ch, t):.3f}".split(".")[0] + "\n")
            time.sleep(0.001)



# ----- the kernel double ---------------------------------------------------------------------------
_PAIRS = {"min_freq": "max_freq", "scaling_min_freq": "scaling_max_freq"}
_CUR = {"min_freq": "cur_freq", "max_freq": "cur_freq",
        "scaling_min_freq": "scaling_cur_freq", "scaling_max_freq": "scaling_cur_freq"}


def _within_hardware(local: Path, name: str, text: str) -> str:
    """A cpufreq limit clamped to the policy's ``cpuinfo_min_freq``/``cpuinfo_max_freq``, a BPMP EMC rate to the
    clock's ``min_rate``/``max_rate`` (where present), as cpufreq and the firmware hold them; any other write as
    it is."""
    if not text.strip().lstrip("-").isdigit():
        return text
    if name.startswith("scaling_"):
        lo, hi = (local.parent / "cpuinfo_min_freq", local.parent / "cpuinfo_max_freq")
    elif name == "rate" and local.parent.name == "emc":
        lo, hi = (local.parent / "min_rate", local.parent / "max_rate")
    else:
        return text
    if not (lo.is_file() and hi.is_file()):
        return text
    return str(min(max(int(text), int(lo.read_text())), int(hi.read_text())))


class FakeKernelIO(sysfs.SysfsIO):
    """SysfsIO whose writes obey the kernel's rules (see the module docstring)."""

    def _rules(self) -> dict:
        p = self.root / ".fake_kernel.json"
        return json.loads(p.read_text()) if p.exists() else {"deny": [], "fail": {}}

    def _next_index(self) -> int:
        """This write's index in the tree (0, 1, ...), counted across processes."""
        return _count(self.root / ".fake_kernel.count")

    def _hooks(self, rules: dict, index: int, when: str, local: Path) -> None:
        for h in rules.get("hooks", []):
            if h.get("at") != index or h.get("when", "before") != when:
                continue
            do = h["do"]
            if do in ("SIGINT", "SIGTERM", "SIGHUP"):
                os.kill(os.getpid(), getattr(signal, do))
            elif do == "block":
                with open(self.root / ".fake_kernel.blocked", "a") as f:
                    f.write(f"{index}\n")
                _wait_for(self.root / f".fake_kernel.release.{index}", float(h.get("timeout_s", 60)))
            else:
                code = getattr(errno, do)
                raise OSError(code, os.strerror(code), str(local))

    def _write_raw(self, local: Path, text: str) -> None:
        rules = self._rules()
        index = self._next_index()
        self._hooks(rules, index, "before", local)
        self._write_checked(local, text, rules)
        self._hooks(rules, index, "after", local)

    def _write_checked(self, local: Path, text: str, rules: dict) -> None:
        board = self.board_path(local)
        if any(fnmatch.fnmatch(board, pat) for pat in rules.get("deny", [])):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(local))
        if board in rules.get("fail", {}):
            code = getattr(errno, rules["fail"][board])
            raise OSError(code, os.strerror(code), str(local))
        for pattern, highest in rules.get("clamp", {}).items():
            if fnmatch.fnmatch(board, pattern) and text.strip().lstrip("-").isdigit() and int(text) > highest:
                text = str(highest)
        name = local.name
        text = _within_hardware(local, name, text)
        if name in _CUR:
            try:
                value = int(text.strip())
            except ValueError:
                raise OSError(errno.EINVAL, "Invalid argument", str(local)) from None
            lo_name = name if name in _PAIRS else next(k for k, v in _PAIRS.items() if v == name)
            hi_name = _PAIRS[lo_name]
            lo = int((local.parent / lo_name).read_text())
            hi = int((local.parent / hi_name).read_text())
            lo, hi = (value, hi) if name == lo_name else (lo, value)
            if lo > hi:
                raise OSError(errno.EINVAL, "Invalid argument", str(local))
            super()._write_raw(local, text)
            cur = local.parent / _CUR[name]
            if cur.exists():
                c = int(cur.read_text())
                cur.write_text(f"{min(max(c, lo), hi)}\n")
        else:
            super()._write_raw(local, text)
        with open(self.root / ".fake_kernel.log", "a") as f:
            f.write(f"{board} {text.strip()}\n")


# ----- a torch-free workload: ``builtin:fake`` -----------------------------------------------------------
class _FakeRunner:
    batch_size = 1

    def run_batch(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _FakeLive:
    """Stands in for ``LiveWorkload``: one software knob (batch_size), batches that do nothing."""

    device = "cpu"

    def __init__(self, name: str) -> None:
        from polythrottle.space import Knob, KnobStatus

        self.knobs = [Knob("batch_size", (1, 2, 4))]
        self.knob_status = [KnobStatus("batch_size", True)]
        self.spec = type("Spec", (), {"name": name})()
        self.runner = _FakeRunner()

    def default_config(self) -> dict:
        return {"batch_size": 1}

    def details(self) -> dict:
        return {}

    def set_config(self, config) -> None:
        self.runner.batch_size = int(config.get("batch_size", 1))

    def close(self) -> None:
        pass


class _FakeMeter:
    """Energy of a window from the clocks in the tree (lower clocks, less energy), read through the control."""

    name = "fake-meter"

    def __init__(self, control) -> None:
        self.control = control

    def begin(self) -> None:
        root = self.control.io.root
        rules = json.loads((root / ".fake_kernel.json").read_text()) if (root / ".fake_kernel.json").exists() else {}
        n = _count(root / ".fake_kernel.measures")
        for h in rules.get("hooks", []):
            if h.get("measure") == n and h.get("do") == "block":
                with open(root / ".fake_kernel.measure_blocked", "a") as f:
                    f.write(f"{n}\n")
                _wait_for(root / f".fake_kernel.release.m{n}", float(h.get("timeout_s", 60)))
        self.t0 = time.perf_counter()

    def end(self):
        from polythrottle.energy.base import EnergyWindow

        mhz = sum(self.control.current().get(k, 1000.0) for k in ("gpu_mhz", "emc_mhz", "cpu_mhz"))
        return EnergyWindow(energy_j=1.0 + mhz / 1000.0, duration_s=max(time.perf_counter() - self.t0, 1e-6))

    def close(self) -> None:
        pass


def _install_fake_workload(put) -> None:
    from polythrottle.devices import jetson
    from polythrottle.measure.harness import HarnessSettings
    from polythrottle.measure.live import LiveMeasurer, observed

    original = jetson.live_measurer
    if getattr(original, "_fake", False):
        return

    def live_measurer(control, options):
        if not (options.workload or "").startswith("builtin:fake"):
            return original(control, options)
        harness = HarnessSettings(window_s=0.001, warmup_s=0.0, warmup_batches=0, repeats=1, min_batches=1)
        return LiveMeasurer(_FakeLive(options.workload), _FakeMeter(control), harness, energy="fake-meter",
                            observe=lambda: observed(control.current()))

    live_measurer._fake = True  # type: ignore[attr-defined]
    put(jetson, "live_measurer", live_measurer)


def install(setattr_fn=None) -> None:
    """Make ``polythrottle.clocks.sysfs.open_io`` return FakeKernelIO in this process; ``builtin:fake`` workloads
    measure without torch. ``setattr_fn``: e.g. pytest's ``monkeypatch.setattr``, to undo it after a test."""
    put = setattr_fn or setattr
    put(sysfs, "IO_CLASS", FakeKernelIO)
    _install_fake_workload(put)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.fake_jetson ARGS``: the polythrottle CLI with the kernel double installed."""
    install()
    from polythrottle.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
