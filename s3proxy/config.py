"""Validated, immutable settings. Construction does no I/O; the checks that touch the machine
(directories writable, CPUs present) are :mod:`s3proxy.environment`'s.

:class:`Config` is one frozen part per component (process, logs, cache, origin, site, sinks, group);
each component is built from its part alone. The parts and their fields, each declared once
with its default, help and flags, are in :mod:`s3proxy.parts`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from s3proxy.parts import (
    CacheConfig,
    GroupConfig,
    LogsConfig,
    OriginConfig,
    ProcessConfig,
    SinksConfig,
    SiteConfig,
    default_cache_dir,
)

__all__ = [
    "CacheConfig",
    "Config",
    "GroupConfig",
    "LogsConfig",
    "OriginConfig",
    "ProcessConfig",
    "SinksConfig",
    "SiteConfig",
    "default_cache_dir",
]

Part = (
    ProcessConfig | LogsConfig | CacheConfig | OriginConfig | SiteConfig | SinksConfig | GroupConfig
)
#: Config's parts by attribute name, in the order of ``--help``.
PARTS: dict[str, type[Part]] = {
    "origin": OriginConfig,
    "process": ProcessConfig,
    "cache": CacheConfig,
    "site": SiteConfig,
    "group": GroupConfig,
    "logs": LogsConfig,
    "sinks": SinksConfig,
}
#: Every setting's field, by its flat name, in the order of ``--help``.
FIELDS: dict[str, dataclasses.Field[Any]] = {
    f.name: f for part in PARTS.values() for f in fields(part)
}
#: Each flat setting's part.
PART_OF: dict[str, str] = {f.name: name for name, part in PARTS.items() for f in fields(part)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything s3proxy needs to run, as one frozen part per component: each component is
    built from its own part only. Invalid values raise :class:`~s3proxy.settings.SettingError`.

    :meth:`build` and :meth:`replace` take settings by their flat names (``cache_dir``,
    ``port``), which are also the CLI's option names; each name belongs to exactly one part."""

    origin: OriginConfig = field(default_factory=OriginConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    group: GroupConfig = field(default_factory=GroupConfig)

    @classmethod
    def build(cls, **values: Any) -> Config:
        """A Config from flat settings (``bucket=..., port=...``); the rest take defaults."""
        parts = {name: PARTS[name](**part) for name, part in _split(values).items()}
        return cls(**parts)  # type: ignore[arg-type]

    def replace(self, **values: Any) -> Config:
        """A copy with some flat settings changed (each part revalidated)."""
        changed: dict[str, Part] = {
            name: dataclasses.replace(getattr(self, name), **part_values)
            for name, part_values in _split(values).items()
        }
        return dataclasses.replace(self, **changed)  # type: ignore[arg-type]

    def to_json(self) -> str:
        """Serialise for worker processes (they rebuild the Config from the environment)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Config:
        data: dict[str, dict[str, Any]] = json.loads(text)
        parts = {name: PARTS[name](**values) for name, values in data.items()}
        return cls(**parts)  # type: ignore[arg-type]


def _split(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat settings grouped by part; raises TypeError for a name no part has."""
    parts: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key not in PART_OF:
            raise TypeError(f"no setting named {key!r}")
        parts.setdefault(PART_OF[key], {})[key] = value
    return parts
