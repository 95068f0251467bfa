"""``module:function`` (or ``path/to/file.py:function``): a user's workload.

The function is called with no arguments and returns a WorkloadSpec, a ``(model, make_input)`` tuple,
or a dict with ``model`` and ``make_input`` (see ``polythrottle.workloads.base``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from polythrottle.errors import BadInputError, brief
from polythrottle.workloads.base import WorkloadSpec, coerce_spec


def load(spec: str) -> WorkloadSpec:
    target, _, func_name = spec.rpartition(":")
    if not target or not func_name:
        raise BadInputError(f"workload {brief(spec, 60)}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    name = spec
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            name = f"{path.resolve()}:{func_name}"  # one name whatever the working directory
            if not path.is_file():
                raise BadInputError(f"workload {brief(spec, 60)}: file {path} not found")
            mod_spec = importlib.util.spec_from_file_location(f"_polythrottle_workload_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
            sys.modules[mod_spec.name] = module  # type: ignore[union-attr]
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise BadInputError(f"workload {brief(spec, 60)}: cannot import {e.name!r}") from None
    except SyntaxError as e:
        raise BadInputError(f"workload {brief(spec, 60)}: syntax error in {e.filename}, line {e.lineno}") from None
    except OSError as e:  # the file is there but cannot be read (permission denied): it said PermissionError, exit 1
        raise BadInputError(f"workload {brief(spec, 60)}: cannot read {e.filename or target} "
                            f"({e.strerror or e})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise BadInputError(f"workload {brief(spec, 60)}: {target} has no function {func_name!r}")
    return coerce_spec(func(), name)
