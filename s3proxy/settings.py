"""How a setting is declared and checked: :func:`setting` makes a dataclass field that carries
its :class:`Option` (help, group, flags, the original proxy's variable, type and bounds), and
:func:`check` runs every field of a part through them. :mod:`s3proxy.config` declares the
fields; :mod:`s3proxy.cli` makes the command's options from the same metadata."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import click

from s3proxy.exceptions import ConfigError


class SettingError(ConfigError):
    """One setting is invalid; ``problem`` says why in words about the value. The message
    names the setting by its long flag; the CLI names the flag or variable the user set."""

    def __init__(self, setting: str, flag: str, problem: str) -> None:
        super().__init__(f"{flag}: {problem}")
        self.setting = setting
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Option:
    """How a field appears on the command line and in ``--help``."""

    help: str
    group: str
    short: str | None = None
    #: The original proxy's environment variable (``S3PROXY_<NAME>`` is always accepted).
    env: str | None = None
    #: How text becomes the value; it also checks values set in code. If not given: click's
    #: type for the default's (bool, int, float, else str).
    type: click.ParamType[Any] | None = None
    #: Inclusive bounds of a number.
    between: tuple[float, float] | None = None
    #: The long flag without dashes, when it is not the field's name (``dir`` for ``log_dir``).
    flag: str | None = None
    #: The default as ``--help`` and the README show it, when not the value itself.
    shown: str | None = None


def setting(
    default: Any = MISSING, *, factory: Any = MISSING, secret: bool = False, **option: Any
) -> Any:
    """A dataclass field with its :class:`Option`; ``secret`` keeps it out of ``repr``."""
    return field(
        default=default,
        default_factory=factory,
        repr=not secret,
        metadata={"option": Option(**option)},
    )


def option_of(f: dataclasses.Field[Any]) -> Option:
    option: Option = f.metadata["option"]
    return option


def flag_of(f: dataclasses.Field[Any]) -> str:
    """``log_dir`` -> ``--dir``: the field's long flag."""
    return "--" + (option_of(f).flag or f.name.replace("_", "-"))


def default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None if f.default is MISSING else f.default


def type_of(f: dataclasses.Field[Any]) -> click.ParamType[Any]:
    """The field's declared type, else click's type for its default's."""
    declared = option_of(f).type
    if declared is not None:
        return declared
    default = default_of(f)
    for kind, click_type in ((bool, click.BOOL), (int, click.INT), (float, click.FLOAT)):
        if isinstance(default, kind):
            return click_type
    return click.STRING


def check(part: Any) -> None:
    """Run every field of the frozen dataclass ``part`` through its type and bounds, so that
    values set in code are checked and normalised as the command's are (``"64k"`` becomes
    65536, a list from JSON a tuple). Raises :class:`SettingError`."""
    for f in fields(part):
        value = getattr(part, f.name)
        if value is None:
            continue
        try:
            value = type_of(f).convert(value, None, None)
        except click.BadParameter as exc:
            raise SettingError(f.name, flag_of(f), exc.message) from None
        object.__setattr__(part, f.name, value)
        between = option_of(f).between
        if between is not None and not between[0] <= value <= between[1]:
            low, high = (int(x) if float(x).is_integer() else x for x in between)
            problem = f"{value} is not between {low} and {high}"
            raise SettingError(f.name, flag_of(f), problem)


def fail(part: Any, name: str, problem: str) -> SettingError:
    """The error for the field ``name`` of ``part``, for checks beyond type and bounds."""
    (f,) = (f for f in fields(part) if f.name == name)
    return SettingError(name, flag_of(f), problem)
