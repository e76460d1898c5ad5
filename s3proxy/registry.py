"""Sites registered at runtime (``PUT``/``DELETE /_proxy/_private/sites/NAME``), served beside
the sites file's in every worker and kept across restarts.

Registrations are kept in ``<cache-dir>/registry/sites.json`` (``{"sites": {NAME: table}}``,
each table as it was sent: the keys of a ``[sites.NAME]`` table), changed under an ``flock``
and written whole (temporary file, then rename), so every worker reads a complete file. The
worker that answers a change serves it before answering; the others see the directory change
and reload as they do the sites file (:mod:`s3proxy.reload` watches both), so one rule,
:meth:`Registry.serve`, decides what each worker serves: the file's sites, then each
registration that still fits (a registration the file now contradicts, by name, host,
default or server, is kept but not served, and listed with its problem).

A registration is checked by the sites file's own code (:func:`s3proxy.sitesfile.site`,
:func:`~s3proxy.sitesfile.check_claims`). Refusals are JSON ``{"error": {"code", "message"}}``:
``INVALID_SITE`` 400, ``SERVER_NOT_FOUND`` 404, ``SITE_NOT_FOUND`` 404, ``HOST_TAKEN`` 409
(a host or the default another site has), ``SITE_FROM_FILE`` 409 (the file's sites change
only in the file).

In a group (``--redis-url``, :attr:`Registry.shared`), Redis holds the registrations and the
state file is this instance's copy of them, stamped with the group's ``<epoch>:<version>`` of
its last change: a change is stored in Redis first, only if the copy it was checked against
is still current (else the copy is refreshed and the check made again), then here; every
instance refreshes its copy on each change's event and whenever it (re)joins. Redis away, a
change is refused (``GROUP_UNAVAILABLE`` 503: an instance that took it alone would serve a
site its peers do not, and lose it to Redis's copy on its return); the copy still serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol

from s3proxy import logging as log
from s3proxy import sitesfile
from s3proxy.access.rules import RuleError
from s3proxy.access.secret import check as check_access
from s3proxy.config import Config
from s3proxy.exceptions import GroupUnavailable, S3ProxyError
from s3proxy.hosting import Hosting, Served
from s3proxy.sitesfile import DEFAULT_SERVER, Sites, SitesFileError, SiteSpec

STATE_DIR = "registry"
STATE_FILE = "sites.json"
#: Bytes of a registration's JSON body (a site table is far smaller).
MAX_BODY = 64 * 1024
#: Times a change in a group is checked again after another instance's change came first.
ATTEMPTS = 5

_logger = log.get_logger("s3proxy.sites")


class Refused(S3ProxyError):
    """A registration the API refuses: its HTTP status and stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def answer(self) -> tuple[int, dict[str, Any]]:
        return self.status, {"error": {"code": self.code, "message": str(self)}}


class Shared(Protocol):
    """Where a group's instances keep their registrations (:mod:`s3proxy.group.sites`)."""

    async def commit(self, name: str, table: Any, stamp: str) -> tuple[str, Any] | None:
        """Store the change if the group's registrations are as of ``stamp``: the new stamp
        and what to tell the client, else ``None``. Raises
        :class:`~s3proxy.exceptions.GroupUnavailable`."""

    async def sync(self) -> None:
        """Refresh this instance's copy from the group, and serve it."""


class Registry:
    """One worker's registered sites over ``hosting``; the state file is the truth (in a
    group, this instance's copy of it), this worker's copy is what it read last."""

    def __init__(self, config: Config, hosting: Hosting) -> None:
        self.config = config
        self.hosting = hosting
        self.directory = os.path.join(config.cache.cache_dir, STATE_DIR)
        self.path = os.path.join(self.directory, STATE_FILE)
        os.makedirs(self.directory, exist_ok=True)
        self.file_sites: Sites | None = None
        #: The registrations as last read, and those not served, with why.
        self.tables: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        #: The group's registrations (``None``: no ``--redis-url``).
        self.shared: Shared | None = None
        self._lock = asyncio.Lock()

    async def serve(self, file_sites: Sites | None) -> Served | None:
        """Serve ``file_sites`` (``None``: the last ones) with the registrations the state
        file holds now; the new generation, or ``None`` when that is what is served."""
        async with self._lock:
            if file_sites is not None:
                self.file_sites = file_sites
            assert self.file_sites is not None, "serve() the file's sites first"
            self.tables = (await asyncio.to_thread(self._read))[0]
            sites, skipped = combine(self.file_sites, self.tables, self.config)
            for name, reason in skipped.items():
                if self.skipped.get(name) != reason:
                    _logger.warning("site_registration_not_served", site=name, reason=reason)
            self.skipped = skipped
            with contextlib.suppress(RuntimeError):  # RuntimeError: nothing served yet
                if sites == self.hosting.served.sites:
                    return None
            return await self.hosting.swap(sites)

    async def change(self, name: str, table: Any) -> tuple[bool, dict[str, Any]]:
        """Register ``table`` as site ``name`` (``None``: unregister it) and serve it here;
        whether ``name`` was registered before, and what the group said (``{}`` alone).
        Raises :class:`Refused`."""
        told: dict[str, Any] = {}
        if self.shared is None:
            existed = await asyncio.to_thread(self._change, name, table)
        else:
            existed, told = await self._change_shared(self.shared, name, table)
        await self.serve(None)
        _logger.info("site_registered" if table is not None else "site_unregistered", site=name)
        return existed, told

    def _change(self, name: str, table: Any) -> bool:
        with _locked(self.path + ".lock"):
            tables = self._read()[0]
            existed = self._check(tables, name, table)
            self._write(changed(tables, name, table), "")
        return existed

    async def _change_shared(
        self, shared: Shared, name: str, table: Any
    ) -> tuple[bool, dict[str, Any]]:
        """Checked against this instance's copy, stored in Redis only if the copy is current
        there, then in the copy. Redis's errors are answered as ``GROUP_UNAVAILABLE``."""
        try:
            for _ in range(ATTEMPTS):
                tables, stamp = await asyncio.to_thread(self._read)
                existed = self._check(tables, name, table)
                committed = await shared.commit(name, table, stamp)
                if committed is not None:
                    new_stamp, told = committed
                    await asyncio.to_thread(self.store, changed(tables, name, table), new_stamp)
                    return existed, {"group": told}
                await shared.sync()  # another change came first: check against it
        except GroupUnavailable as exc:
            message = f"redis: {exc}; sites change only while the group's Redis answers"
            raise Refused(503, "GROUP_UNAVAILABLE", message) from None
        raise Refused(503, "GROUP_BUSY", f"site {name}: other changes kept coming first")

    def _check(self, tables: Mapping[str, Any], name: str, table: Any) -> bool:
        """Whether ``name`` is registered in ``tables``, if the change may be made. Raises
        :class:`Refused`."""
        file_sites = self.file_sites
        assert file_sites is not None
        if name in file_sites.sites:
            raise Refused(
                409, "SITE_FROM_FILE", f"site {name} is the sites file's: change it there"
            )
        others = {n: t for n, t in tables.items() if n != name}
        if table is None:
            if name not in tables:
                raise Refused(404, "SITE_NOT_FOUND", f"no registered site named {name!r}")
        else:
            add(combine(file_sites, others, self.config)[0], name, table, self.config)
        return name in tables

    def state(self) -> tuple[dict[str, Any], str]:
        """The registrations in the state file and their group stamp (``""``: none)."""
        return self._read()

    def store(self, tables: Mapping[str, Any], stamp: str) -> bool:
        """Write the group's ``tables`` as of ``stamp`` unless the file is as new or newer
        (a sibling worker stored them first); whether it wrote."""
        with _locked(self.path + ".lock"):
            if not newer(stamp, self._read()[1]):
                return False
            self._write(tables, stamp)
        return True

    def _read(self) -> tuple[dict[str, Any], str]:
        try:
            with open(self.path, encoding="utf-8") as file:
                state = json.load(file)
            tables, stamp = state["sites"], state.get("group", "")
            if not isinstance(tables, dict) or not isinstance(stamp, str):
                raise TypeError("sites: not an object")
        except FileNotFoundError:
            return {}, ""
        except (OSError, ValueError, TypeError, KeyError) as exc:
            _logger.error("site_registrations_unreadable", file=self.path, error=str(exc))
            return {}, ""
        return tables, stamp

    def _write(self, tables: Mapping[str, Any], stamp: str) -> None:
        """``stamp``: the group's, or ``""`` (changed alone: Redis's copy wins on joining)."""
        temporary = f"{self.path}.{os.getpid()}.tmp"
        state = {"sites": tables, **({"group": stamp} if stamp else {})}
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(state, file, indent=1, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)  # readers see the old file or the new, whole

    def listing(self) -> list[dict[str, Any]]:
        """Every site: the file's and the registered, served or not."""
        served = self.hosting.served.sites.sites
        file_names = self.file_sites.sites if self.file_sites is not None else {}
        answer = [
            describe(spec, "file" if name in file_names else "registered")
            for name, spec in served.items()
        ]
        answer += [
            {"name": name, "source": "registered", "served": False, "problem": reason}
            for name, reason in self.skipped.items()
        ]
        return sorted(answer, key=lambda site: str(site["name"]))


def changed(tables: Mapping[str, Any], name: str, table: Any) -> dict[str, Any]:
    """``tables`` with ``name`` set to ``table`` (``None``: removed)."""
    others = {n: t for n, t in tables.items() if n != name}
    return others if table is None else {**others, name: table}


def newer(stamp: str, than: str) -> bool:
    """Whether the group stamp ``stamp`` (``<epoch>:<version>``) is newer than ``than``: any
    stamp is newer than none, and than one of another epoch (Redis lost its data since)."""
    epoch, _, version = stamp.rpartition(":")
    old_epoch, _, old_version = than.rpartition(":")
    return bool(stamp) and (not than or epoch != old_epoch or int(version) > int(old_version))


def combine(
    file_sites: Sites, tables: Mapping[str, Any], base: Config
) -> tuple[Sites, dict[str, str]]:
    """The file's sites and every registration that fits them (in name order), and the
    problem of each that does not."""
    sites, skipped = file_sites, {}
    for name in sorted(tables):
        try:
            sites = add(sites, name, tables[name], base)
        except Refused as exc:
            skipped[name] = str(exc)
    return sites, skipped


def add(sites: Sites, name: str, table: Any, base: Config) -> Sites:
    """``sites`` and site ``name`` from ``table``. Raises :class:`Refused`."""
    if name in sites.sites:
        raise Refused(409, "SITE_FROM_FILE", f"site {name} is the sites file's: change it there")
    if not isinstance(table, Mapping):
        raise Refused(400, "INVALID_SITE", "the body must be a JSON object: a site's table")
    server = table.get("server", DEFAULT_SERVER)
    if not isinstance(server, str):
        raise Refused(400, "INVALID_SITE", f"site {name}: server: must be a server's name")
    if server not in sites.servers:
        message = f"site {name}: server: no [servers.{server}] table in the sites file"
        raise Refused(404, "SERVER_NOT_FOUND", message)
    where = f"site {name}"
    try:
        spec = sitesfile.site(name, table, where, base, sites.servers)
        check_access(spec.access, where)  # its secrets and files are here too
    except (SitesFileError, RuleError) as exc:
        raise Refused(400, "INVALID_SITE", str(exc)) from None
    merged = {**sites.sites, name: spec}
    try:
        sitesfile.check_claims(merged.values(), "registration")
    except SitesFileError as exc:
        raise Refused(409, "HOST_TAKEN", str(exc)) from None
    return Sites(sites.servers, merged, sites.source)


def describe(spec: SiteSpec, source: str) -> dict[str, Any]:
    return {
        "name": spec.name,
        "source": source,
        "served": True,
        "hosts": list(spec.hosts),
        "default": spec.default,
        "server": spec.server,
        "bucket": spec.bucket,
        "prefix": spec.settings.prefix,
    }


async def answer(
    registry: Registry | None, method: str, name: str | None, body: AsyncIterator[bytes]
) -> tuple[int, Any]:
    """The status and JSON of ``GET /_proxy/_private/sites[/NAME]``, ``PUT`` and ``DELETE
    .../sites/NAME`` (``body``: the request's; the caller checked the token)."""
    try:
        if registry is None:
            raise Refused(404, "NO_SITES_FILE", "sites are registered beside a --config file")
        if method == "GET":
            sites = registry.listing()
            if name is None:
                return 200, {"sites": sites}
            found = [site for site in sites if site["name"] == name]
            if not found:
                raise Refused(404, "SITE_NOT_FOUND", f"no site named {name!r}")
            return 200, found[0]
        assert name is not None  # the routes with a method other than GET have one
        if method == "DELETE":
            told = (await registry.change(name, None))[1]
            return 200, {"deleted": name, **told}
        existed, told = await registry.change(name, await _table(body))
        (site,) = [site for site in registry.listing() if site["name"] == name]
        return 200 if existed else 201, {**site, **told}
    except Refused as exc:
        return exc.answer()


async def _table(chunks: AsyncIterator[bytes]) -> Any:
    body = b""
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY:
            raise Refused(400, "INVALID_SITE", f"the body is over {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise Refused(400, "INVALID_SITE", f"the body is not JSON: {exc}") from None


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: one change at a time among the workers."""
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
