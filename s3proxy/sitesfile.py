"""The sites file (``--config FILE``): named S3 servers and the sites served from them, read
with :mod:`tomllib` into frozen, validated values (:class:`Sites`). Reading the file is the
only I/O; :func:`parse` is pure.

``[servers.NAME]`` takes the command line's S3 options by their names (``endpoint_url``,
``region``, ``path_style``, ``key``, ``secret``, ``connect_timeout``, ``read_timeout``,
``origin_deadline``) and ``max_connections`` (``--s3-max-connections``). ``[sites.NAME]``
takes ``hosts``, ``server``, ``bucket``, ``default``, ``[[sites.NAME.headers]]`` and every
field of :class:`~s3proxy.parts.SiteConfig` by its name (``prefix``, ``ttl``, ``spa``...).
What a table leaves out is the command line's: the options describe the one implicit site
without a file, and are the defaults every server and site inherits with one. A server named
``default`` always exists (the command line's S3 options), and is a site's unless it names
another.

A bad file raises :class:`SitesFileError`, one line naming the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from s3proxy.access.rules import Rule, RuleError
from s3proxy.access.rules import parse as parse_access
from s3proxy.access.secret import check as check_access
from s3proxy.config import Config, OriginConfig, SiteConfig
from s3proxy.exceptions import ConfigError
from s3proxy.settings import SettingError

DEFAULT_SERVER = "default"
#: The implicit site's name (no ``--config``).
IMPLICIT_SITE = "default"
#: A server's keys in the file -> its OriginConfig field.
SERVER_KEYS: dict[str, str] = {
    **{f.name: f.name for f in fields(OriginConfig) if f.name not in ("bucket",)},
    "max_connections": "s3_max_connections",
}
del SERVER_KEYS["s3_max_connections"]
SETTING_KEYS = frozenset(f.name for f in fields(SiteConfig))
SITE_KEYS = frozenset({"hosts", "server", "bucket", "default", "headers", "access"}) | SETTING_KEYS
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")


class SitesFileError(ConfigError):
    """The sites file cannot be used: one line naming the file, the table and the key."""


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """``[[sites.NAME.headers]]``: response headers set on paths matching a glob."""

    #: URL path globs (:mod:`fnmatch`: ``*`` also matches ``/``).
    paths: tuple[str, ...]
    #: Lowercase header names and their values, replacing the response's own.
    set: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteSpec:
    """One site: the names it answers to, where its objects are, and how it answers."""

    name: str
    #: Lowercase, without a trailing dot; ``*.example.com`` is one label of any name.
    hosts: tuple[str, ...] = ()
    server: str = DEFAULT_SERVER
    bucket: str
    #: Serves requests whose Host matches no site.
    default: bool = False
    headers: tuple[HeaderRule, ...] = ()
    #: ``[[sites.NAME.access]]``: who may read which paths (README "Private paths").
    access: tuple[Rule, ...] = ()
    settings: SiteConfig
    #: What the site's cache keys start with: its name and where its objects come from, so
    #: two sites, or one site whose bucket or server changed, never share an entry.
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class Sites:
    """Every server and site a worker serves; ``source`` is the file (``None``: the command
    line's one site)."""

    servers: Mapping[str, OriginConfig]
    sites: Mapping[str, SiteSpec]
    source: str | None = None


def implicit(config: Config) -> Sites:
    """The one site the command line describes (no ``--config``): every request is its, and
    its cache keys are the object keys themselves, as before there were sites."""
    bucket = config.origin.bucket
    if bucket is None:
        raise ConfigError("--bucket (or S3_BUCKET) is required without --config")
    site = SiteSpec(name=IMPLICIT_SITE, bucket=bucket, default=True, settings=config.site)
    return Sites({DEFAULT_SERVER: config.origin}, {IMPLICIT_SITE: site})


def load(path: str, base: Config) -> Sites:
    """Read and check the sites file at ``path``, inheriting ``base``'s options. Raises
    :class:`SitesFileError`."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise SitesFileError(f"{path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SitesFileError(f"{path}: not TOML: {exc}") from None
    sites = parse(data, path, base)
    for name, spec in sites.sites.items():
        try:  # the secrets and files the access rules name are there
            check_access(spec.access, f"{path}: site {name}")
        except RuleError as exc:
            raise SitesFileError(str(exc)) from None
    return sites


def parse(data: Mapping[str, Any], path: str, base: Config) -> Sites:
    """The servers and sites of a parsed sites file (pure). Raises :class:`SitesFileError`."""
    for key in data:
        if key not in ("servers", "sites"):
            raise SitesFileError(f"{path}: {key}: unknown table (use [servers.NAME], [sites.NAME])")
    servers = {DEFAULT_SERVER: dataclasses.replace(base.origin, bucket=None)}
    for name, table in _tables(data, "servers", path).items():
        servers[name] = _server(table, f"{path}: server {name}", servers[DEFAULT_SERVER])
    sites: dict[str, SiteSpec] = {}
    for name, table in _tables(data, "sites", path).items():
        sites[name] = site(name, table, f"{path}: site {name}", base, servers)
    if not sites:
        raise SitesFileError(f"{path}: no [sites.NAME] table: nothing to serve")
    check_claims(sites.values(), path)
    return Sites(servers, sites, path)


def _tables(data: Mapping[str, Any], kind: str, path: str) -> dict[str, Mapping[str, Any]]:
    tables = data.get(kind, {})
    if not isinstance(tables, Mapping):
        raise SitesFileError(f"{path}: {kind}: must be tables like [{kind}.NAME]")
    for name, table in tables.items():
        if not _NAME.match(name):
            raise SitesFileError(f"{path}: {kind}.{name}: a name is letters, digits, - and _")
        if not isinstance(table, Mapping):
            raise SitesFileError(f"{path}: {kind}.{name}: must be a table")
    return dict(tables)


def _server(table: Mapping[str, Any], where: str, base: OriginConfig) -> OriginConfig:
    for key in table:
        if key not in SERVER_KEYS:
            raise SitesFileError(f"{where}: {key}: unknown key (known: {', '.join(SERVER_KEYS)})")
    values = {SERVER_KEYS[key]: value for key, value in table.items()}
    try:
        return OriginConfig(**{**asdict(base), **values})
    except SettingError as exc:
        key = next(k for k, name in SERVER_KEYS.items() if name == exc.setting)
        raise SitesFileError(f"{where}: {key}: {exc.problem}") from None


def site(
    name: str,
    table: Mapping[str, Any],
    where: str,
    base: Config,
    servers: Mapping[str, OriginConfig],
) -> SiteSpec:
    """One ``[sites.NAME]`` table (a file's, or one registered at runtime), without the
    claims of other sites (:func:`check_claims`). Raises :class:`SitesFileError`."""
    if not _NAME.match(name):
        raise SitesFileError(f"{where}: a name is letters, digits, - and _")
    for key in table:
        if key not in SITE_KEYS:
            raise SitesFileError(f"{where}: {key}: unknown key (a site takes {_site_keys()})")
    server = table.get("server", DEFAULT_SERVER)
    if server not in servers:
        raise SitesFileError(f"{where}: server: no [servers.{server}] table")
    bucket = table.get("bucket", base.origin.bucket)
    if bucket is None:
        raise SitesFileError(f"{where}: bucket: missing (and no --bucket to inherit)")
    if not isinstance(bucket, str) or not bucket or "/" in bucket:
        raise SitesFileError(f'{where}: bucket: "{bucket}" is not a bucket name')
    default = table.get("default", False)
    if not isinstance(default, bool):
        raise SitesFileError(f"{where}: default: must be true or false")
    hosts = _hosts(table.get("hosts", []), where)
    if not hosts and not default:
        raise SitesFileError(f"{where}: hosts: none, and not the default site: unreachable")
    cors = table.get("cors")
    if "allowed_origins" in table and isinstance(cors, Mapping) and "allow_origins" in cors:
        raise SitesFileError(f"{where}: cors: allow_origins: allowed_origins says it too: keep one")
    values = {key: value for key, value in table.items() if key in SETTING_KEYS}
    try:
        settings = SiteConfig(**{**asdict(base.site), **values})
    except SettingError as exc:
        raise SitesFileError(f"{where}: {exc.setting}: {exc.problem}") from None
    origin = servers[server]
    return SiteSpec(
        name=name,
        hosts=hosts,
        server=server,
        bucket=bucket,
        default=default,
        headers=tuple(_header_rule(rule, where) for rule in _rules(table, where)),
        access=_access(table, where),
        settings=settings,
        namespace=namespace(name, origin, bucket),
    )


def _access(table: Mapping[str, Any], where: str) -> tuple[Rule, ...]:
    try:
        return parse_access(table.get("access", []), where)
    except RuleError as exc:
        raise SitesFileError(str(exc)) from None


def _site_keys() -> str:
    return ", ".join(sorted(SITE_KEYS))


def namespace(site: str, server: OriginConfig, bucket: str) -> str:
    """``docs:1a2b3c4d:``: the site's name and a digest of where its objects come from."""
    origin = f"{server.endpoint_url or ''}\0{server.region or ''}\0{bucket}"
    return f"{site}:{hashlib.sha256(origin.encode()).hexdigest()[:8]}:"


def _hosts(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise SitesFileError(f'{where}: hosts: must be a list of names, e.g. ["example.com"]')
    hosts = []
    for host in value:
        normal = host.lower().rstrip(".")
        if not _HOST.match(normal):
            raise SitesFileError(
                f'{where}: hosts: "{host}" is not a host name or *.name (no port, no scheme)'
            )
        hosts.append(normal)
    return tuple(hosts)


def _rules(table: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    rules = table.get("headers", [])
    if not isinstance(rules, list) or not all(isinstance(r, Mapping) for r in rules):
        raise SitesFileError(f"{where}: headers: must be [[sites.NAME.headers]] tables")
    return rules


def _header_rule(rule: Mapping[str, Any], where: str) -> HeaderRule:
    if set(rule) != {"paths", "set"}:
        raise SitesFileError(f"{where}: headers: each takes paths = [...] and set = {{...}}")
    paths, values = rule["paths"], rule["set"]
    if (
        not isinstance(paths, list)
        or not paths
        or not all(isinstance(p, str) and p.startswith("/") for p in paths)
    ):
        raise SitesFileError(f'{where}: headers: paths: a list of globs like "/assets/*"')
    if not isinstance(values, Mapping) or not values:
        raise SitesFileError(f"{where}: headers: set: a table of header names and values")
    pairs = []
    for name, value in values.items():
        if not _TOKEN.match(name.lower()):
            raise SitesFileError(f'{where}: headers: set: "{name}" is not a header name')
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise SitesFileError(f"{where}: headers: set: {name}: must be one line of text")
        pairs.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return HeaderRule(tuple(paths), tuple(pairs))


def check_claims(sites: Any, path: str) -> None:
    """Raises :class:`SitesFileError` unless each host belongs to one site, and at most one
    site is the default."""
    owners: dict[str, str] = {}
    default: str | None = None
    for site in sites:
        where = f"{path}: site {site.name}"
        for host in site.hosts:
            if host in owners:
                raise SitesFileError(f"{where}: hosts: {host} is already site {owners[host]}'s")
            owners[host] = site.name
        if site.default:
            if default is not None:
                raise SitesFileError(f"{where}: default: site {default} is already the default")
            default = site.name
