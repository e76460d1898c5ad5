"""click parameter types for the settings that are not plain strings or numbers.

Each type turns the text of a flag or environment variable into the value its Config field
holds, and also accepts that value itself (a default, or a value set in code), as click asks
of a :class:`click.ParamType`; :mod:`s3proxy.config` runs the same conversion on every value
it is given, so a setting is checked in one place however it arrives. A bad value fails with
a sentence about the value (``"abc" is not a port number``); the CLI puts the flag or
variable the user set in front of it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from typing import Any

import click

from s3proxy import cors
from s3proxy.cors import CorsPolicy
from s3proxy.website import RoutingRule, parse_rules

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = "bkmgt"
_CPU_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
#: Linux's limit on CPU numbers in a cpuset (CONFIG_NR_CPUS is at most 8192; 4096 is ample).
MAX_CPU = 4095


def parse_size(text: str) -> int | None:
    """``10g``, ``512m``, ``64KiB``, ``1.5g`` (binary units) or plain bytes; ``None`` if it is
    not a size."""
    match = _SIZE.match(text)
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** _UNITS.index(unit or "b"))


class Size(click.ParamType[int]):
    """A byte count: ``10g``, ``512m``, ``64KiB``, ``1.5g`` (binary units) or plain bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        size = parse_size(str(value))
        if size is None:
            self.fail(f'"{value}" is not a size: use a byte count or e.g. 512m, 10g', param, ctx)
        return size

    @staticmethod
    def show(value: int) -> str:
        """The shortest exact spelling: 67108864 -> ``64m``."""
        for power in range(len(_UNITS) - 1, 0, -1):
            if value and value % 1024**power == 0:
                return f"{value // 1024**power}{_UNITS[power]}"
        return str(value)


class Port(click.ParamType[int]):
    """A TCP port number (its range is the field's, checked by the config)."""

    name = "port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            self.fail(f'"{value}" is not a port number', param, ctx)


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """A CPU list as ``taskset -c`` and cpusets write it: ``3``, ``2-3``, ``0,2-3`` -> sorted
    CPU numbers without repeats; empty text is no list. Raises ValueError."""
    if not text.strip():
        return ()
    cpus: set[int] = set()
    for part in text.split(","):
        match = _CPU_RANGE.match(part)
        if not match:
            raise ValueError(f'"{text}" is not a CPU list: use e.g. 3, 2-3 or 0,2-3')
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first or last > MAX_CPU:
            raise ValueError(f'"{part.strip()}" in "{text}" is not a CPU range from low to high')
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


class CpuList(click.ParamType[tuple[int, ...]]):
    """CPU numbers, written as ``taskset -c`` writes them (see :func:`parse_cpu_list`)."""

    name = "cpus"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, ...]:
        if isinstance(value, Sequence) and not isinstance(value, str):
            if not all(isinstance(c, int) and 0 <= c <= MAX_CPU for c in value):
                self.fail(f"{list(value)} is not a list of CPU numbers", param, ctx)
            return tuple(sorted(set(value)))
        try:
            return parse_cpu_list(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    @staticmethod
    def show(value: tuple[int, ...]) -> str:
        return ",".join(map(str, value))


class Origins(click.ParamType[tuple[str, ...]]):
    """CORS origins as the original took them: a JSON array (``["https://a.example"]``, or
    ``["*"]``; see :func:`s3proxy.cors.origin`). Origins are compared lowercase, without a
    trailing slash."""

    name = "json-array"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, str):
            if not value.strip():
                return ()
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                self.fail(
                    f"{value!r} is not a JSON array: write e.g. '[\"https://example.com\"]'",
                    param,
                    ctx,
                )
        if not isinstance(value, Sequence) or not all(isinstance(o, str) for o in value):
            self.fail(f"{json.dumps(value)} is not a JSON array of strings", param, ctx)
        try:
            return tuple(cors.origin(o) for o in value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Networks(click.ParamType[tuple[str, ...]]):
    """Comma-separated IP addresses or networks (``10.0.0.0/8, ::1``)."""

    name = "networks"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [p.strip() for p in value.split(",") if p.strip()]
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                self.fail(f'"{network}" is not an IP address or network', param, ctx)
        return tuple(value)

    @staticmethod
    def show(value: tuple[str, ...]) -> str:
        return ",".join(value)


class OneOf(click.Choice[str]):
    """One of a few words, in any case (``--log-level WARNING``), answered in lowercase."""

    def __init__(self, choices: Sequence[str], what: str) -> None:
        super().__init__(choices, case_sensitive=False)
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, str) and value.lower() in self.choices:
            return value.lower()
        self.fail(f'"{value}" is not a {self.what}: use {", ".join(self.choices)}', param, ctx)


SIZE = Size()
PORT = Port()
CPU_LIST = CpuList()


class RoutingRules(click.ParamType[tuple[RoutingRule, ...]]):
    """``routing_rules``: S3's website routing rules, a JSON text or list
    (:func:`s3proxy.website.parse_rules`)."""

    name = "json"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[RoutingRule, ...]:
        try:
            return parse_rules(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Cors(click.ParamType[CorsPolicy]):
    """``cors``: a site's CORS table, a JSON object or a mapping (:func:`s3proxy.cors.parse`)."""

    name = "json"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> CorsPolicy:
        try:
            return cors.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


ORIGINS = Origins()
CORS = Cors()
ROUTING_RULES = RoutingRules()
NETWORKS = Networks()
