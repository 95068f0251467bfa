"""Neutral checks of arguments for callers that build objects directly rather than through
``polythrottle.spec.TuneSpec`` (which names the flag, YAML path or keyword): seeds, numbers (a knob list:
``polythrottle.spec.knob_list``). Each raises ``BadInputError`` with one line naming the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

from polythrottle.errors import BadInputError, brief

MAX_SEED = 2**32 - 1


def is_real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def check_seed(seed: Any) -> None:
    """BadInputError unless ``seed`` is None or an integer in [0, 2**32 - 1] (what every RNG accepts)."""
    if seed is not None and (not is_int(seed) or not 0 <= seed <= MAX_SEED):
        raise BadInputError(f"seed must be an integer from 0 to {MAX_SEED}, got {brief(seed, 40)}")
