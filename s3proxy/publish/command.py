"""The glue of ``s3proxy publish DIR`` below its click options (in :mod:`s3proxy.cli`):
their values -> :class:`~s3proxy.publish.run.Options` -> :func:`~s3proxy.publish.run.publish`
-> the lines on stdout and the exit code.

The S3 options are the server's own (:class:`~s3proxy.config.OriginConfig`'s fields, with
their variables), so one environment serves and publishes the same bucket. A bad option or a
missing directory is one line and exit code 2 (:class:`~s3proxy.exceptions.ConfigError`, which
the CLI prints); a publish that fails is one line and exit code 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import sys
from typing import Any

from s3proxy.config import OriginConfig
from s3proxy.exceptions import ConfigError, PublishError
from s3proxy.keys import normalize_prefix
from s3proxy.publish import S3_SETTINGS
from s3proxy.publish.progress import megabytes
from s3proxy.publish.run import Options, Summary, publish

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``24h``, ``7d`` -> seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not an age like 90s, 30m, 24h or 7d")
    return float(match[1]) * _UNITS[match[2] or "s"]


def run_command(
    directory: str,
    prefix: str,
    dry_run: bool,
    site: str | None = None,
    sites_file: str | None = None,
    **params: Any,
) -> int:
    """Publish with the command's values; print the plan or the summary on stdout, a failure
    as one line on stderr; return the exit code (0; 1 for a failed publish; 130 after
    Ctrl-C). Raises :class:`ConfigError` for a usage error (an unknown site included)."""
    s3 = {f.name: params.pop(f.name) for f in S3_SETTINGS}
    if site is not None:
        origin, normalized = site_target(site, sites_file, s3, prefix)
    else:
        if not s3.get("bucket"):
            raise ConfigError("--bucket (or S3_BUCKET) is required, or --site with --config")
        try:
            normalized = normalize_prefix(prefix)
        except ValueError as exc:
            raise ConfigError(f"--prefix: {exc}") from None
        origin = OriginConfig(**s3)
    options = Options(
        root=os.path.abspath(directory),
        origin=origin,
        prefix=normalized,
        dry_run=dry_run,
        site=site,
        **params,
    )
    try:
        summary = asyncio.run(publish(options, _say))
    except PublishError as exc:
        print(f"s3proxy publish: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: what was sent stays, the state file says where
        print("\ns3proxy publish: interrupted; run it again to resume", file=sys.stderr)
        return 130
    print(render(summary, dry_run))
    return 0


def site_target(
    name: str, path: str | None, s3: dict[str, Any], prefix: str
) -> tuple[OriginConfig, str]:
    """The S3 server (with the bucket) and the prefix of the site ``name`` in the sites file
    at ``path``, whose servers inherit the command line's S3 options ``s3``."""
    from s3proxy.config import Config
    from s3proxy.sitesfile import load

    if path is None:
        raise ConfigError("--site needs --config FILE, the sites file that names it")
    if s3.get("bucket") or prefix:
        raise ConfigError("--site names the bucket and prefix: give no --bucket or --prefix")
    sites = load(path, Config.build(**s3))
    spec = sites.sites.get(name)
    if spec is None:
        raise ConfigError(f"{path}: no site {name!r} (its sites: {', '.join(sorted(sites.sites))})")
    origin = dataclasses.replace(sites.servers[spec.server], bucket=spec.bucket)
    return origin, spec.settings.prefix


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def render(summary: Summary, dry_run: bool) -> str:
    """The plan (a dry run) or the summary, for stdout."""
    plan = summary.plan
    lines = []
    if dry_run:
        lines += [f"upload {f.key} ({f.size} bytes)" for f in plan.uploads]
        lines += [f"delete {key}" for key in plan.deletes]
        lines.append(
            f"plan: {len(plan.uploads)} uploads ({megabytes(plan.upload_bytes)}), "
            f"{len(plan.deletes)} deletes, {plan.unchanged} unchanged"
        )
        return "\n".join(lines)
    line = (
        f"published {summary.uploaded} files ({megabytes(plan.upload_bytes)}) in "
        f"{summary.seconds:.1f}s, deleted {summary.deleted}, {plan.unchanged} unchanged"
    )
    if summary.aborted:
        line += f", aborted {summary.aborted} stale uploads"
    if summary.purged:
        line += f", purged {summary.purged} proxies"
    return line
