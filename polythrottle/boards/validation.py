"""Declared validation of YAML documents (board profiles, twin parameters) with pydantic v2, and one-line errors.

Models derive from ``Section`` (unknown fields refused, ``null`` counts as absent, frozen) and use the
scalar types here (``Str``, ``Int``, ``Number``, ``Bool``: no coercion between them). ``one_line`` turns
a ``ValidationError`` into ``ProfileError("profile FILE: field a.b[2].c: what is wrong")``: the first
error only, values shown cut to ``SHOWN_CHARS`` characters. Checks that need a message of their own
raise ``fail(message, at=(...))``; ``at`` is a path below the place the check runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, model_validator
from pydantic.types import Strict
from pydantic_core import PydanticCustomError

from polythrottle.errors import SHOWN_CHARS, ProfileError, shown

Str = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1)]
"""A non-empty string (surrounding whitespace stripped)."""
Int = Annotated[int, Strict()]
"""An integer (not a bool, not a float)."""
Number = Annotated[float, Strict()]
"""A finite number (int or float in the file, float here; not a bool)."""
Bool = Annotated[bool, Strict()]
"""``true`` or ``false``."""

Loc = tuple[str | int, ...]
Model = TypeVar("Model", bound=BaseModel)


def fail(message: str, at: Loc = ()) -> PydanticCustomError:
    """An error for a validator to raise; ``at``: the field below the validated value it is about."""
    return PydanticCustomError("polythrottle", "{message}", {"message": message, "at": at})


def one_of(choices: Sequence[str]) -> Callable[[str], str]:
    """A validator admitting only ``choices``."""

    def check(value: str) -> str:
        if value not in choices:
            raise fail(f"{shown(value)} is not one of: {', '.join(choices)}")
        return value

    return check


def non_empty(message: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A validator refusing an empty list with ``message``."""

    def check(value: tuple[Any, ...]) -> tuple[Any, ...]:
        if not value:
            raise fail(message)
        return value

    return check


class Section(BaseModel):
    """A mapping in a YAML document: unknown keys refused (naming the allowed ones), ``key: null`` = absent.

    ``derived``: fields filled in by the loader (a name from the mapping key, the file path), not
    written in the document.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, protected_namespaces=())
    derived: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise fail(f"expected a mapping, got {type(data).__name__}")
        allowed = [name for name in cls.model_fields if name not in cls.derived]
        extra = [key for key in data if key not in allowed]
        if extra:
            raise fail(f"unknown field; expected one of: {', '.join(sorted(allowed))}", at=(str(extra[0]),))
        return {key: value for key, value in data.items() if value is not None}


# ----- one-line errors --------------------------------------------------------------------------
def dotted(loc: Loc) -> str:
    """``("knobs", "gpu_mhz", "steps", 1)`` -> ``knobs.gpu_mhz.steps[1]`` (names cut to SHOWN_CHARS)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if len(part) <= SHOWN_CHARS else part[: SHOWN_CHARS - 3] + "..."
            out += f".{name}" if out else name
    return out


_MESSAGES: dict[str, Callable[[Any], str]] = {
    "missing": lambda v: "missing",
    "string_type": lambda v: f"expected a non-empty string, got {shown(v)}",
    "string_too_short": lambda v: f"expected a non-empty string, got {shown(v)}",
    "int_type": lambda v: f"expected an integer, got {shown(v)}",
    "int_from_float": lambda v: f"expected an integer, got {shown(v)}",
    "float_type": lambda v: f"expected a number, got {shown(v)}",
    "finite_number": lambda v: f"expected a number, got {shown(v)}",
    "bool_type": lambda v: f"expected true or false, got {shown(v)}",
    "list_type": lambda v: f"expected a list, got {type(v).__name__}",
    "tuple_type": lambda v: f"expected a list, got {type(v).__name__}",
    "dict_type": lambda v: f"expected a mapping, got {type(v).__name__}",
    "model_type": lambda v: f"expected a mapping, got {type(v).__name__}",
}


def message(error: Mapping[str, Any]) -> tuple[Loc, str]:
    """Where (relative to the validated document) and what, in this project's words, of one pydantic error."""
    loc: Loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if loc[-1:] == ("[key]",):  # pydantic's marker for a bad mapping key, after the key
        return loc[:-2], f"keys must be strings, got {shown(loc[-2])}"
    if error["type"] == "polythrottle":
        return loc + tuple(ctx.get("at", ())), str(ctx["message"])
    to_text = _MESSAGES.get(error["type"])
    if to_text is not None:
        return loc, to_text(error.get("input"))
    text = str(error["msg"]).removeprefix("Value error, ")
    return loc, (text[:1].lower() + text[1:])[: 4 * SHOWN_CHARS]


def one_line(file: Path | str, error: ValidationError, prefix: Loc = ()) -> ProfileError:
    """``error``'s first problem as ``ProfileError("profile FILE: field WHERE: WHAT")``.

    ``prefix``: where the validated value sits in the file (``("sim",)`` for a profile's sim block).
    """
    loc, text = message(error.errors(include_url=False)[0])
    return ProfileError(f"profile {file}: field {dotted(prefix + loc) or '<top>'}: {text}")


def validate(model: type[Model], data: Any, file: Path | str, prefix: Loc = (), context: Any = None) -> Model:
    """``model.model_validate(data)``; a ValidationError becomes a one-line ProfileError (exit 2)."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise one_line(file, e, prefix) from None
