"""The ``s3proxy`` command: click options -> :class:`Config` -> :func:`s3proxy.server.run`.

The options are made from the Config's fields (see :mod:`s3proxy.settings`): each keeps the
original proxy's name, short flag and default, and can come from the environment: the
original Docker image's variable (``S3_BUCKET``, ``TTL``...) or ``S3PROXY_<OPTION>``
(``S3PROXY_CACHE_DIR``). A bad value ends startup with one line on stderr that names the flag
or variable it came from, and exit code 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import sys
import tempfile
from typing import Any

import click
import cloup
from click.core import ParameterSource

from s3proxy import __version__
from s3proxy.config import FIELDS, Config, default_cache_dir
from s3proxy.exceptions import ConfigError
from s3proxy.parts import GROUPS
from s3proxy.settings import SettingError, default_of, flag_of, option_of, type_of

_GROUPS = {title: cloup.OptionGroup(title) for title in GROUPS}


class FlagOption(cloup.Option):
    """A boolean shown as a flag (``--spa``), which also takes the original's ``true`` or
    ``false`` (``--console true``, ``CONSOLE=false``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, type=click.BOOL, is_flag=False, flag_value=True, **kwargs)

    def make_metavar(self, ctx: click.Context) -> str:
        return "[true|false]" if self.default else ""


def option(f: dataclasses.Field[Any]) -> click.Option:
    """The command-line option of a Config field: its flags, variables, type, default and
    ``--help`` group."""
    meta = option_of(f)
    kind = type_of(f)
    default = default_of(f)
    show = getattr(kind, "show", None)
    if show is not None and default:  # as typed: 64m, not 67108864
        default = show(default)
    settings: dict[str, Any] = {
        "default": default,
        "envvar": env_names(f),
        "show_envvar": True,
        "show_default": shown_default(meta.shown, default),
        "help": meta.help,
        "group": _GROUPS[meta.group],
    }
    flags = [flag_of(f), *([meta.short] if meta.short else []), f.name]
    if kind is click.BOOL:
        return FlagOption(flags, **settings)
    return cloup.Option(flags, type=kind, **settings)


def env_names(f: dataclasses.Field[Any]) -> list[str]:
    """The original's variable, if it had one, then ``S3PROXY_<OPTION>``."""
    ours = "S3PROXY_" + flag_of(f)[2:].upper().replace("-", "_")
    original = option_of(f).env
    return [original, ours] if original else [ours]


def shown_default(shown: str | None, default: Any) -> str | bool:
    """What ``--help`` shows as the default: a description (``CPU count``), the value, or
    nothing when there is none."""
    if shown is not None:
        return shown
    if isinstance(default, bool):  # a flag is off unless said otherwise
        return "on" if default else False
    return default not in (None, (), "")


def build_config(params: dict[str, Any]) -> Config:
    """Turn click's parameters into a :class:`Config`, and check the sites file it names;
    raises :class:`ConfigError`."""
    if not params.get("bucket") and not params.get("sites_file"):
        raise ConfigError("--bucket (or S3_BUCKET) is required; try --demo for a local sample")
    config = Config.build(**params)
    if config.process.sites_file:
        from s3proxy import sitesfile

        sitesfile.load(config.process.sites_file, config)  # refused here, before serving
    return config


def config_options() -> list[click.Parameter]:
    """Every Config field's option, in ``--help``'s group order: what any command that builds
    a Config (serving, a check) takes, with :func:`build_config` for its parameters."""
    return sorted((option(f) for f in FIELDS.values()), key=_group_order)


def _group_order(param: click.Parameter) -> int:
    group = getattr(param, "group", None)
    return GROUPS.index(group.title) if group is not None else len(GROUPS)


def source_of(ctx: click.Context, param: click.Parameter) -> str:
    """What the user set: the environment variable click read the value from, else the flag."""
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
        envvar = param.envvar if isinstance(param, click.Option) else None
        names = [envvar] if isinstance(envvar, str) else list(envvar or [])
        for name in names:  # click takes the first one that is set and not empty
            if os.environ.get(name):
                return name
    return param.opts[0]


def _fail(message: str) -> None:
    click.echo(f"s3proxy: error: {message}", err=True)
    sys.exit(2)


class _Command(cloup.Command):
    """Every bad value as one line naming what the user set, and exit code 2, instead of
    click's usage block."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.BadParameter as exc:
            if exc.ctx is None or exc.param is None:
                _fail(exc.format_message())
            else:
                _fail(f"{source_of(exc.ctx, exc.param)}: {exc.message}")
        except ConfigError as exc:
            _fail(str(exc))
        except click.ClickException as exc:
            _fail(exc.format_message())
        except click.Abort:
            sys.exit(1)


class _Serve(_Command):
    """The serving command; ``s3proxy check ...`` is handed to :data:`check`, ``s3proxy
    publish ...`` to :data:`publish`."""

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if argv[:1] == ["check"]:
            kwargs.setdefault("prog_name", "s3proxy check")
            return check.main(argv[1:], *rest, **kwargs)
        if argv[:1] == ["publish"]:
            kwargs.setdefault("prog_name", "s3proxy publish")
            return publish.main(argv[1:], *rest, **kwargs)
        if argv[:1] == ["sign"]:
            kwargs.setdefault("prog_name", "s3proxy sign")
            return sign.main(argv[1:], *rest, **kwargs)
        return super().main(argv, *rest, **kwargs)


@cloup.command(
    cls=_Command,
    params=config_options(),
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
def check(**params: Any) -> None:
    """Check the settings, S3 (endpoint, credentials, bucket), the cache dir and each sink
    without serving: one ✓/✗ line each with its reason; exit 0 when all pass, else 1."""
    from s3proxy.checklist import render, run_checks

    try:
        config = build_config(params)
    except ConfigError as exc:
        click.echo(f"✗ configuration: {exc}")
        sys.exit(1)
    items = run_checks(config)
    click.echo(render(items))
    sys.exit(0 if all(item.ok for item in items) else 1)


@cloup.command(
    cls=_Command,
    # The serving options resolve the sites file as serving would; --prefix is sign's own.
    params=[p for p in config_options() if p.name != "prefix"],
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.argument("url_path", metavar="URL-PATH")
@click.option("--site", "site_name", default="default", show_default=True, help="The site.")
@click.option("--expires", default="1h", show_default=True, help="Validity: 90, 30m, 8h, 1d.")
@click.option("--prefix", is_flag=True, help="Grant every path under URL-PATH (a folder).")
def sign(url_path: str, site_name: str, expires: str, prefix: bool, **params: Any) -> None:
    """Print a signed link to URL-PATH for a site's `allow = "signed"` rule (--config)."""
    import time

    from s3proxy import sitesfile
    from s3proxy.access.links import link_for
    from s3proxy.access.rules import parse_duration
    from s3proxy.keys import percent_decode

    seconds = parse_duration(expires)
    if seconds is None:
        raise ConfigError(f'--expires: "{expires}" is not a duration: e.g. 3600, 30m, 8h, 1d')
    config = build_config(params)
    if not config.process.sites_file:
        raise ConfigError("--config FILE is needed: access rules live in the sites file")
    site = sitesfile.load(config.process.sites_file, config).sites.get(site_name)
    if site is None:
        raise ConfigError(f"--site: no site {site_name} in {config.process.sites_file}")
    decoded = percent_decode(url_path.encode("utf-8"))
    if decoded is None or not url_path.startswith("/"):
        raise ConfigError(f"URL-PATH: {url_path} is not a path like /downloads/a.zip")
    path = decoded.decode("utf-8", "replace")
    link = link_for(site.access, site_name, path, seconds, time.time(), prefix=prefix)
    exact = [host for host in site.hosts if not host.startswith("*.")]
    click.echo(f"https://{exact[0]}{link}" if exact else link)


def _parsed(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """``--cache-control`` rules and the ``--abort-stale`` age, parsed by publish's own
    functions; their ValueError is a bad value of this option."""
    from s3proxy.publish.command import parse_age
    from s3proxy.publish.headers import CacheRule

    try:
        if param.name == "cache_rules":
            return tuple(CacheRule.parse(rule) for rule in value)
        return None if value is None else parse_age(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _publish_options() -> list[click.Parameter]:
    """The server's S3 options, its token (for --purge) and sites file (for --site), in
    publish's own ``--help`` groups: cloup keeps a group's options in the group object, which
    serving also uses."""
    from s3proxy.publish import S3_SETTINGS

    groups: dict[str, cloup.OptionGroup] = {}
    names = (*S3_SETTINGS, FIELDS["auth_key"], FIELDS["sites_file"])
    params: list[click.Parameter] = [option(f) for f in names]
    for param in params:
        title = param.group.title  # type: ignore[attr-defined]
        param.group = groups.setdefault(title, cloup.OptionGroup(title))  # type: ignore[attr-defined]
    return params


@cloup.command(
    cls=_Command,
    params=_publish_options(),
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, readable=True))
@click.option("--prefix", default="", help="Publish under this folder of the bucket.")
@click.option(
    "--site", metavar="NAME", help="Publish to this site of --config (its bucket, prefix)."
)
@click.option("--delete", is_flag=True, help="Delete objects under the prefix with no file.")
@click.option("--dry-run", is_flag=True, help="Print the plan (uploads, deletes, bytes) only.")
@click.option("--jobs", "-J", default=8, type=click.IntRange(1, 256), help="Requests at once.")
@click.option(
    "--cache-control",
    "cache_rules",
    multiple=True,
    callback=_parsed,
    metavar="GLOB=VALUE",
    help="Cache-Control for matching files; repeatable, the first match wins "
    "(e.g. 'assets/*=public, max-age=31536000, immutable' '*.html=max-age=60').",
)
@click.option("--stats", "stats_path", type=click.Path(dir_okay=False), help="JSON lines per file.")
@click.option(
    "--abort-stale",
    metavar="AGE",
    callback=_parsed,
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
def publish(**params: Any) -> None:
    """Upload DIRECTORY to the bucket by content (new and changed files only), resumably;
    --delete removes the objects whose files are gone, --purge the proxies' copies."""
    from s3proxy.publish.command import run_command

    sys.exit(run_command(**params))


@cloup.command(
    cls=_Serve,
    params=config_options(),
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.option(
    "--demo",
    is_flag=True,
    help="Serve a sample site from a local S3 emulator (moto): no AWS account needed.",
)
@click.version_option(__version__, "-V", "--version")
def main(demo: bool, **params: Any) -> None:
    """Serve a private S3 bucket as a static website through a local disk cache.

    `s3proxy check [OPTIONS]` checks the same options without serving (S3, the cache dir,
    each sink) as a checklist, and exits 0 when every check passes, else 1.
    `s3proxy publish DIR --bucket B` uploads a site to the bucket (see its --help).
    `s3proxy sign URL-PATH --config FILE --site NAME --expires 1h` prints a signed link."""
    from s3proxy import server

    try:
        if demo:
            return _serve_demo(params)
        server.run(build_config(params))
    except SettingError as exc:  # name what the user set: the flag or the variable
        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == exc.setting)
        raise click.BadParameter(exc.problem, ctx=ctx, param=param) from None
    return None


def _serve_demo(params: dict[str, Any]) -> None:
    """``--demo``: start the local S3 emulator with the sample site and serve it, with the
    other options as given (a throwaway cache unless ``--cache-dir`` was, a random management
    token unless ``--auth-key`` was), and print how to try it."""
    from s3proxy import server
    from s3proxy.demo import instructions, run_demo_origin

    ctx = click.get_current_context()
    # The emulator needs no AWS settings, and a profile that does not exist breaks moto.
    os.environ.pop("AWS_PROFILE", None)
    with run_demo_origin() as origin, tempfile.TemporaryDirectory(prefix="s3proxy-demo-") as tmp:
        config = build_config({**params, "bucket": origin.bucket}).replace(
            endpoint_url=origin.endpoint_url,
            region=origin.region,
            key=origin.key_id,
            secret=origin.secret,
            path_style=True,
            error_document=params["error_document"] or "404.html",
            # A random management token, unless one was given, so the API can be tried.
            auth_key=params["auth_key"] or secrets.token_urlsafe(18),
        )
        if ctx.get_parameter_source("cache_dir") is ParameterSource.DEFAULT:
            config = config.replace(cache_dir=tmp)  # the demo's objects are not yours to keep
        listen = config.process
        host = "127.0.0.1" if listen.host in ("0.0.0.0", "::") else listen.host
        host = f"[{host}]" if ":" in host else host
        token = config.process.auth_key or ""
        print(instructions(f"http://{host}:{listen.port}", token), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.run(config)
