"""Where a Jetson's clocks and power monitors live: the board is detected, its profile turned into paths.

The board is identified from ``/proc/device-tree/model`` and matched to a profile under
``device_profiles/`` (``polythrottle.boards.profiles.match_model``); ``jetson:PROFILE`` forces one. The
profile gives candidate paths per L4T generation, units, the EMC protocol, fallback steps and the
rails that make up board power; the first candidate that exists under the filesystem root is used,
and the GPU falls back to a ``/sys/class/devfreq`` entry whose ``of_node`` names a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from polythrottle.boards.profiles import list_profiles, load_profile, match_model
from polythrottle.boards.schema import ClockSpec, DeviceProfile, PowerSpec
from polythrottle.clocks.emc import EmcProtocol
from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.energy.ina3221 import RailPlace
from polythrottle.errors import DeviceError, DeviceNotFoundError

MODEL_PATH = "/proc/device-tree/model"
SERIAL_PATH = "/proc/device-tree/serial-number"
CPU_ROOT = "/sys/devices/system/cpu"
DEVFREQ_CLASS = "/sys/class/devfreq"
GPU_OF_NAMES = ("ga10b", "gv11b", "gp10b", "gm20b", "gb10b", "gpu")
"""devfreq ``device/of_node/name`` values of Jetson integrated GPUs (as jetson-stats matches them)."""


@dataclass(frozen=True)
class JetsonLayout:
    """Paths and units of one board. Steps are MHz; the kernel's own lists win where it has them.

    gpu_dirs: devfreq directory candidates; emc: protocol candidates (the first whose files exist);
    board_rails: INA3221 rail labels summed for board power; rail_places: where the profile puts each rail
    (one per rail and interface, in the profile's order).
    """

    profile: str
    description: str = ""
    gpu_dirs: tuple[str, ...] = ()
    gpu_unit: str = "Hz"
    gpu_files: dict[str, str] = field(default_factory=dict)
    gpu_steps_mhz: tuple[float, ...] = ()
    emc: tuple[EmcProtocol, ...] = ()
    emc_steps_mhz: tuple[float, ...] = ()
    cpu_root: str = CPU_ROOT
    cpu_steps_mhz: tuple[float, ...] = ()
    board_rails: tuple[str, ...] = ()
    rail_places: tuple[RailPlace, ...] = ()


def _rail_places(power: PowerSpec) -> tuple[RailPlace, ...]:
    """Every rail of ``power`` on every interface: the sensor glob (its I2C address filled in) and the
    channel's files (its number in the interface's own numbering)."""
    return tuple(
        RailPlace(rail.name, iface.sensor_glob(rail), iface.file("label", rail), iface.file("voltage_mv", rail),
                  iface.file("current_ma", rail), iface.file("power_mw", rail) if "power_mw" in iface.files else None)
        for rail in power.rails for iface in power.interfaces
    )


def _emc_protocols(ctl: ClockSpec) -> tuple[EmcProtocol, ...]:
    out = []
    for v in ctl.variants:
        d = v.path.rstrip("/")
        caps = tuple(p for p in (f"{d}/{ctl.files['max']}" if "max" in ctl.files else None,
                                 ctl.paths.get("emc_cap")) if p)
        floors = (f"{d}/{ctl.files['min']}",) if "min" in ctl.files else ()
        if ctl.interface == "bpmp-debugfs":
            out.append(EmcProtocol(
                rate_path=f"{d}/{ctl.files.get('rate', 'rate')}",
                lock_path=f"{d}/{ctl.files.get('lock', 'mrq_rate_locked')}",
                lock_first=True, unit=ctl.unit, cap_paths=caps, floor_paths=floors,
            ))
        elif ctl.interface == "tegra-bwmgr":
            override = ctl.paths.get("override", "/sys/kernel/debug/clk/override.emc")
            out.append(EmcProtocol(
                rate_path=ctl.paths.get("override_rate", f"{override}/clk_update_rate"),
                lock_path=ctl.paths.get("override_state", f"{override}/clk_state"),
                lock_first=False, unit=ctl.unit, cap_paths=caps, cur_rate_path=ctl.paths.get("current"),
                floor_paths=floors,
            ))
    return tuple(out)


def layout_from_profile(profile: DeviceProfile) -> JetsonLayout:
    """A JetsonLayout from a board profile."""
    gpu = profile.control_for("gpu_mhz")
    emc = profile.control_for("emc_mhz") if "emc_mhz" in profile.knobs else None
    cpu = profile.control_for("cpu_mhz") if "cpu_mhz" in profile.knobs else None
    cpu_root = CPU_ROOT
    if cpu is not None and cpu.variants:
        cpu_root = cpu.variants[0].path.rstrip("/").removesuffix("/cpufreq") or CPU_ROOT
    return JetsonLayout(
        profile=profile.name,
        description=profile.description,
        gpu_dirs=tuple(v.path.rstrip("/") for v in gpu.variants),
        gpu_unit=gpu.unit,
        gpu_files={k: v for k, v in gpu.files.items() if k in ("available", "min", "max", "current")},
        gpu_steps_mhz=profile.steps("gpu_mhz"),
        emc=_emc_protocols(emc) if emc is not None else (),
        emc_steps_mhz=profile.steps("emc_mhz") if emc is not None else (),
        cpu_root=cpu_root,
        cpu_steps_mhz=profile.steps("cpu_mhz") if cpu is not None else (),
        board_rails=tuple(profile.power.board_power),
        rail_places=_rail_places(profile.power),
    )


def read_model(io: SysfsIO) -> str | None:
    """``/proc/device-tree/model`` (NULs stripped), or None where there is none."""
    if not io.is_file(MODEL_PATH):
        return None
    try:
        return io.read(MODEL_PATH) or None
    except DeviceError:
        return None


def read_serial(io: SysfsIO) -> str | None:
    """``/proc/device-tree/serial-number`` (NULs stripped), or None where there is none or it is unreadable."""
    if not io.is_file(SERIAL_PATH):
        return None
    try:
        return io.read(SERIAL_PATH) or None
    except DeviceError:
        return None


def find_gpu_devfreq(io: SysfsIO) -> str | None:
    """The devfreq directory of an integrated GPU found through ``/sys/class/devfreq``, or None."""
    for entry in io.listdir(DEVFREQ_CLASS):
        link = f"{DEVFREQ_CLASS}/{entry}"
        name_file = f"{link}/device/of_node/name"
        if io.is_file(name_file) and io.read(name_file) in GPU_OF_NAMES:
            return io.resolve(link)
    return None


def profile_layout(name: str) -> JetsonLayout:
    """The layout of built-in profile (or YAML path) ``name``. Raises ProfileError (exit 2)."""
    return layout_from_profile(load_profile(name))


def detect_layout(io: SysfsIO, forced: str = "") -> tuple[JetsonLayout, str | None]:
    """The board's layout and its model string. ``forced``: a profile name that overrides detection.

    Raises DeviceError("no Jetson found ...") where there is no device-tree model or no profile
    matches it; ProfileError for a bad forced profile.
    """
    model = read_model(io)
    if forced:
        return profile_layout(forced), model
    where = "" if io.is_real_root else f" under {io.root}"
    if model is None:
        raise DeviceNotFoundError(f"no Jetson found: {MODEL_PATH} does not exist{where}")
    profile = match_model(model)
    if profile is None:
        raise DeviceNotFoundError(
            f"no Jetson found: board model {model!r} matches no profile; force one with "
            f"jetson:PROFILE ({', '.join(list_profiles())})"
        )
    return layout_from_profile(profile), model

