"""``s3proxy publish DIR``: click options -> :class:`~s3proxy.publish.run.Options` ->
:func:`~s3proxy.publish.run.publish`; nothing else.

The S3 options are the server's own (:class:`~s3proxy.config.OriginConfig`'s fields, with
their variables), so one environment serves and publishes the same bucket. A bad option or a
missing directory is one line and exit code 2; a publish that fails is one line and exit 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from typing import Any

import click
import cloup

from s3proxy.cli import _Command, option
from s3proxy.config import FIELDS, OriginConfig, default_cache_dir
from s3proxy.exceptions import ConfigError, PublishError
from s3proxy.keys import normalize_prefix
from s3proxy.publish.headers import CacheRule
from s3proxy.publish.progress import megabytes
from s3proxy.publish.run import Options, Summary, publish

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``24h``, ``7d`` -> seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not an age like 90s, 30m, 24h or 7d")
    return float(match[1]) * _UNITS[match[2] or "s"]


def _rules(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    try:
        return tuple(CacheRule.parse(value) for value in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _age(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    try:
        return None if value is None else parse_age(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


_GROUPS: dict[str, cloup.OptionGroup] = {}


def _regrouped(param: Any) -> click.Parameter:
    """``param`` in this command's own ``--help`` group of the same title: cloup keeps a
    group's options in the group object, which the server's command also uses."""
    title = param.group.title
    param.group = _GROUPS.setdefault(title, cloup.OptionGroup(title))
    return param  # type: ignore[no-any-return]


#: The server's S3 options (not its deadline per GetObject: publish times each request by
#: its bytes), and its management token for ``--purge``.
_S3 = [f for f in dataclasses.fields(OriginConfig) if f.name != "origin_deadline"]
_PARAMS: list[click.Parameter] = [_regrouped(option(f)) for f in [*_S3, FIELDS["auth_key"]]]


@cloup.command(
    cls=_Command,
    params=_PARAMS,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, readable=True))
@click.option("--prefix", default="", help="Publish under this folder of the bucket.")
@click.option("--delete", is_flag=True, help="Delete objects under the prefix with no file.")
@click.option("--dry-run", is_flag=True, help="Print the plan (uploads, deletes, bytes) only.")
@click.option("--jobs", "-J", default=8, type=click.IntRange(1, 256), help="Requests at once.")
@click.option(
    "--cache-control",
    "cache_rules",
    multiple=True,
    callback=_rules,
    metavar="GLOB=VALUE",
    help="Cache-Control for matching files; repeatable, the first match wins "
    "(e.g. 'assets/*=public, max-age=31536000, immutable' '*.html=max-age=60').",
)
@click.option("--stats", "stats_path", type=click.Path(dir_okay=False), help="JSON lines per file.")
@click.option(
    "--abort-stale",
    metavar="AGE",
    callback=_age,
    help="First abort multipart uploads under the prefix older than AGE (90s, 30m, 24h, 7d).",
)
@click.option(
    "--state-dir",
    default=default_cache_dir,
    show_default="the cache dir",
    type=click.Path(file_okay=False),
    help="Where resume state and remembered digests are kept.",
)
@click.option("--purge", "purge_urls", multiple=True, metavar="URL", help="Proxy to purge after.")
def publish_command(directory: str, prefix: str, dry_run: bool, **params: Any) -> None:
    """Upload DIR to the bucket, by content: new and changed files only, resumable after
    an interruption; --delete removes what DIR no longer has."""
    s3 = {f.name: params.pop(f.name) for f in _S3}
    if not s3.get("bucket"):
        raise ConfigError("--bucket (or S3_BUCKET) is required")
    try:
        normalized = normalize_prefix(prefix)
    except ValueError as exc:
        raise ConfigError(f"--prefix: {exc}") from None
    options = Options(
        root=directory, origin=OriginConfig(**s3), prefix=normalized, dry_run=dry_run, **params
    )
    try:
        summary = asyncio.run(publish(options, _say))
    except PublishError as exc:
        click.echo(f"s3proxy publish: error: {exc}", err=True)
        sys.exit(1)
    click.echo(render(summary, dry_run))


def _say(line: str) -> None:
    click.echo(line, err=True)


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
