"""What a restore did: the settings put back, those that could not be, and those the hardware holds at another
value than the one put back (``PutBack``).

A restore reads back every file it wrote, as an apply does (``clocks.read_back``): a kernel can take the original
without an error and hold a cap (a thermal or nvpmodel limit). Each such file is one warning line naming the file,
the value wanted and the value read. One held lower than its original leaves the board lower than it was: its
original stays saved, as kept settings (``polythrottle restore`` puts it back once the cap is gone; no later run
takes it for a crash's leftovers, nor refuses to start over it). One held higher is forgotten: a restore cannot
lower it further.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class PutBack:
    """What a control's ``put_back`` did: the keys restored, those it could not put back (key -> reason, ``""``
    when none is known), and those restored that read back another value (key -> (wanted, read))."""

    restored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    held: dict[str, tuple[str, str]] = field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(f"{k} ({why})" if why else k for k, why in self.failed.items())

    def lower(self) -> list[str]:
        """The keys restored that read back lower than the value put back (their originals stay saved)."""
        return [k for k, (want, got) in self.held.items() if _below(got, want)]

    def warn(self, device_arg: str) -> None:
        """One warning line on stderr per key held at another value than the one put back."""
        for key, (want, got) in self.held.items():
            if _below(got, want):
                then = ("the board is left lower than it was; the original stays saved: "
                        f"`polythrottle restore --device {device_arg}` puts it back once the cap is gone")
            else:
                then = "left as it is"
            print(f"polythrottle: warning: restored {want} to {key} but it holds {got} (a cap: a thermal or "
                  f"nvpmodel limit?); {then}", file=sys.stderr)


def _below(got: str, want: str) -> bool:
    try:
        return int(got) < int(want)
    except ValueError:
        return False
