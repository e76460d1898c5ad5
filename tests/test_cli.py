"""The ``s3proxy`` command: the original proxy's options, flags, defaults and env vars map to
:class:`Config`; bad values end startup with exit code 2 and one line on stderr.

Everything runs through click's ``CliRunner`` with :func:`s3proxy.server.run` replaced by a
recorder, so nothing listens and nothing touches the network; the cache-dir checks run the
real ``run`` (its ``prepare`` fails before uvicorn would start).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import s3proxy
from s3proxy import server
from s3proxy.cli import build_config, main
from s3proxy.config import PART_OF, Config, default_cache_dir

# The original Docker image's variables, and the Config field each one sets.
ORIGINAL_ENV = {
    "S3_BUCKET": "bucket",
    "AWS_REGION": "region",
    "AWS_KEY": "key",
    "AWS_SECRET": "secret",
    "AUTH_KEY": "auth_key",
    "TTL": "ttl",
    "CACHE_DIR": "cache_dir",
    "PORT": "port",
    "THREADS": "threads",
    "LOG_LEVEL": "log_level",
    "MMDB_HOST": "mmdb_host",
    "MMDB_PORT": "mmdb_port",
    "MONGO_URI": "mongo_uri",
    "MONGO_DATABASE": "mongo_database",
    "MONGO_COLLECTION": "mongo_collection",
    "REJECT_QUERY_STRINGS": "reject_query_strings",
    "ALLOWED_ORIGINS": "allowed_origins",
}

# (option, short flag or None, default) for every option the original had, plus ours.
ORIGINAL_OPTIONS = [
    ("auth-key", "-a", None),
    ("key", "-k", None),
    ("secret", "-s", None),
    ("region", "-r", None),
    ("bucket", "-b", None),
    ("port", "-p", 8000),
    ("threads", "-n", os.cpu_count() or 1),
    ("ttl", "-t", 300),
    ("cache-dir", "-d", default_cache_dir()),
    ("reject-query-strings", "-j", False),
    ("console", "-c", False),
    ("log-level", "-l", "info"),
    ("dir", "-o", "logs/"),
    ("mmdb-host", "-m", None),
    ("mmdb-port", "-x", 8010),
    ("akumuli-host", None, None),
    ("akumuli-port", None, 8282),
    ("mongo-uri", "-f", None),
    ("mongo-database", "-g", "metrics"),
    ("mongo-collection", "-i", "request"),
    ("endpoint-url", None, None),
    ("path-style", None, False),
    ("prefix", None, ""),
    ("host", None, "0.0.0.0"),
]

# Per option: a value as it would appear in S3PROXY_<OPTION>, the Config field it sets and
# the value that field should then hold.
ENV_VALUES: dict[str, tuple[str, str, Any]] = {
    "bucket": ("from-env", "bucket", "from-env"),
    "region": ("eu-west-1", "region", "eu-west-1"),
    "key": ("AKIDEXAMPLE", "key", "AKIDEXAMPLE"),
    "secret": ("s3cr3t", "secret", "s3cr3t"),
    "auth-key": ("tok", "auth_key", "tok"),
    "endpoint-url": ("http://127.0.0.1:9", "endpoint_url", "http://127.0.0.1:9"),
    "path-style": ("true", "path_style", True),
    "prefix": ("www", "prefix", "www/"),
    "host": ("127.0.0.1", "host", "127.0.0.1"),
    "port": ("9001", "port", 9001),
    "threads": ("3", "threads", 3),
    "ttl": ("60", "ttl", 60),
    "cache-dir": ("/var/cache/s3proxy-test", "cache_dir", "/var/cache/s3proxy-test"),
    "memory-cache-size": ("2m", "memory_cache_size", 2 * 1024 * 1024),
    "memory-object-size": ("4k", "memory_object_size", 4096),
    "index-document": ("default.htm", "index_document", "default.htm"),
    "reject-query-strings": ("true", "reject_query_strings", True),
    "allowed-origins": ('["https://a.example"]', "allowed_origins", ("https://a.example",)),
    "connect-timeout": ("1.5", "connect_timeout", 1.5),
    "read-timeout": ("7", "read_timeout", 7.0),
    "origin-deadline": ("4", "origin_deadline", 4.0),
    "console": ("true", "console", True),
    "log-level": ("WARNING", "log_level", "warning"),
    "dir": ("/var/log/s3proxy/", "log_dir", "/var/log/s3proxy/"),
    "log-format": ("combined", "log_format", "combined"),
    "log-retention": ("30", "log_retention", 30),
    "mmdb-host": ("geo", "mmdb_host", "geo"),
    "mmdb-port": ("9010", "mmdb_port", 9010),
    "akumuli-host": ("tsdb", "akumuli_host", "tsdb"),
    "akumuli-port": ("9282", "akumuli_port", 9282),
    "mongo-uri": ("mongodb://db:27017", "mongo_uri", "mongodb://db:27017"),
    "mongo-database": ("m", "mongo_database", "m"),
    "mongo-collection": ("r", "mongo_collection", "r"),
}


def _options() -> dict[str, click.Option]:
    """main's options by long name, without --demo, --version and --help."""
    found = {}
    for param in main.params:
        long_names = [o[2:] for o in param.opts if o.startswith("--")]
        if isinstance(param, click.Option) and long_names[0] not in ("demo", "version", "help"):
            found[long_names[0]] = param
    return found


def _env_names(option: click.Option) -> list[str]:
    envvar = option.envvar
    return [envvar] if isinstance(envvar, str) else list(envvar or [])


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable of the machine running the tests may configure the command under test."""
    for option in _options().values():
        for name in _env_names(option):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Replaces ``server.run``: the Configs main would have served, in order."""
    configs: list[Config] = []
    monkeypatch.setattr(server, "run", configs.append)
    return configs


@pytest.fixture
def invoke(captured: list[Config]) -> Iterator[Callable[..., Result]]:
    runner = CliRunner()

    def run(args: list[str], env: dict[str, str] | None = None) -> Result:
        return runner.invoke(main, args, env=env, prog_name="s3proxy")

    yield run


def _config(
    invoke: Callable[..., Result], captured: list[Config], *args: str, **env: str
) -> Config:
    result = invoke(list(args), env=env or None)
    assert result.exit_code == 0, result.stderr
    assert len(captured) == 1
    return captured[0]


@pytest.mark.parametrize(
    ("name", "short", "default"), [pytest.param(*o, id=o[0]) for o in ORIGINAL_OPTIONS]
)
def test_original_option_exists_with_short_flag_and_default(
    name: str, short: str | None, default: Any
) -> None:
    """Each of the original's options keeps its name, short flag and default, and has help."""
    option = _options().get(name)
    assert option is not None, f"--{name} is missing"
    if short is not None:
        assert short in option.opts
    assert _params([])[option.name] == default
    assert option.help


def test_defaults_reach_config(invoke: Callable[..., Result], captured: list[Config]) -> None:
    """With only a bucket, the Config holds the original's defaults."""
    config = _config(invoke, captured, "--bucket", "site")
    assert (config.process.port, config.site.ttl, config.process.threads) == (
        8000,
        300,
        os.cpu_count() or 1,
    )
    assert (config.logs.log_level, config.logs.log_dir, config.logs.console) == (
        "info",
        "logs/",
        False,
    )
    assert (config.sinks.mmdb_host, config.sinks.mmdb_port) == (None, 8010)
    assert (config.sinks.akumuli_host, config.sinks.akumuli_port) == (None, 8282)
    assert (config.sinks.mongo_uri, config.sinks.mongo_database, config.sinks.mongo_collection) == (
        None,
        "metrics",
        "request",
    )
    assert (
        config.process.auth_key,
        config.origin.key,
        config.origin.secret,
        config.origin.region,
    ) == (None,) * 4
    assert config.site.reject_query_strings is False
    assert config.cache.cache_dir == default_cache_dir()
    assert (config.origin.endpoint_url, config.origin.addressing_style) == (None, "auto")
    assert (config.site.prefix, config.process.host, config.site.allowed_origins) == (
        "",
        "0.0.0.0",
        (),
    )


def test_short_flags_map_to_config(
    invoke: Callable[..., Result], captured: list[Config], tmp_path: Path
) -> None:
    """Every short flag of the original, and our long-only options, set their Config field."""
    config = _config(
        invoke,
        captured,
        *("-a", "tok", "-k", "AKID", "-s", "sec", "-r", "eu-west-1", "-b", "site"),
        *("-p", "9000", "-n", "3", "-t", "60", "-d", str(tmp_path / "c")),
        *("-j", "true", "-c", "true", "-l", "DEBUG", "-o", str(tmp_path / "l") + "/"),
        *("-m", "geo", "-x", "9010", "--akumuli-host", "ak", "--akumuli-port", "9282"),
        *("-f", "mongodb://m", "-g", "db", "-i", "coll"),
        *("--endpoint-url", "http://127.0.0.1:9", "--path-style", "true"),
        *("--prefix", "/www/", "--host", "127.0.0.1"),
    )
    assert (config.process.auth_key, config.origin.key, config.origin.secret) == (
        "tok",
        "AKID",
        "sec",
    )
    assert (config.origin.region, config.origin.bucket) == ("eu-west-1", "site")
    assert (config.process.port, config.process.threads, config.site.ttl) == (9000, 3, 60)
    assert config.cache.cache_dir == str(tmp_path / "c")
    assert (config.site.reject_query_strings, config.logs.console) == (True, True)
    assert (config.logs.log_level, config.logs.log_dir) == ("debug", str(tmp_path / "l") + "/")
    assert (config.sinks.mmdb_host, config.sinks.mmdb_port) == ("geo", 9010)
    assert (config.sinks.akumuli_host, config.sinks.akumuli_port) == ("ak", 9282)
    assert (config.sinks.mongo_uri, config.sinks.mongo_database, config.sinks.mongo_collection) == (
        "mongodb://m",
        "db",
        "coll",
    )
    assert (config.origin.endpoint_url, config.origin.addressing_style) == (
        "http://127.0.0.1:9",
        "path",
    )
    assert (config.site.prefix, config.process.host) == ("www/", "127.0.0.1")


def test_long_flags_match_short_flags(
    invoke: Callable[..., Result], captured: list[Config]
) -> None:
    """``--port 9000`` and ``-p 9000`` (and the rest) give the same Config."""
    long_args = ["--bucket", "b", "--port", "9000", "--ttl", "5", "--log-level", "error"]
    short_args = ["-b", "b", "-p", "9000", "-t", "5", "-l", "error"]
    assert _config(invoke, captured, *long_args) == build_config(_params(long_args))
    captured.clear()
    assert _config(invoke, captured, *short_args) == build_config(_params(long_args))


def _params(args: list[str]) -> dict[str, Any]:
    """click's parameter dict for ``args``, as main would receive it."""
    ctx = main.make_context("s3proxy", list(args))
    params = dict(ctx.params)
    params.pop("demo")
    return params


def test_original_env_vars_map_to_config(
    invoke: Callable[..., Result], captured: list[Config], tmp_path: Path
) -> None:
    """The original Docker image's variables configure everything without a flag."""
    env = {
        "S3_BUCKET": "envsite",
        "AWS_REGION": "ap-south-1",
        "AWS_KEY": "AKID",
        "AWS_SECRET": "sec",
        "AUTH_KEY": "abc123",
        "TTL": "42",
        "CACHE_DIR": str(tmp_path / "data"),
        "PORT": "8123",
        "THREADS": "2",
        "LOG_LEVEL": "error",
        "MMDB_HOST": "mmdb",
        "MMDB_PORT": "8011",
        "MONGO_URI": "mongodb://mongo",
        "MONGO_DATABASE": "mdb",
        "MONGO_COLLECTION": "mcoll",
        "REJECT_QUERY_STRINGS": "true",
        "ALLOWED_ORIGINS": '["http://127.0.0.1:8080", "https://Example.com"]',
    }
    assert set(env) == set(ORIGINAL_ENV)
    config = _config(invoke, captured, **env)
    assert (
        config.origin.bucket,
        config.origin.region,
        config.origin.key,
        config.origin.secret,
    ) == (
        "envsite",
        "ap-south-1",
        "AKID",
        "sec",
    )
    assert (
        config.process.auth_key,
        config.site.ttl,
        config.process.port,
        config.process.threads,
    ) == ("abc123", 42, 8123, 2)
    assert config.cache.cache_dir == str(tmp_path / "data")
    assert (config.logs.log_level, config.sinks.mmdb_host, config.sinks.mmdb_port) == (
        "error",
        "mmdb",
        8011,
    )
    assert (config.sinks.mongo_uri, config.sinks.mongo_database, config.sinks.mongo_collection) == (
        "mongodb://mongo",
        "mdb",
        "mcoll",
    )
    assert config.site.reject_query_strings is True
    assert config.site.allowed_origins == ("http://127.0.0.1:8080", "https://example.com")


@pytest.mark.parametrize(("variable", "field"), ORIGINAL_ENV.items())
def test_each_original_env_var_is_declared(variable: str, field: str) -> None:
    """The option behind each original variable lists it first, before S3PROXY_<OPTION>."""
    declaring = [o for o in _options().values() if variable in _env_names(o)]
    assert len(declaring) == 1, f"{variable} should configure exactly one option"
    (option,) = declaring
    assert option.name == field
    names = _env_names(option)
    assert names[0] == variable
    assert names[1] == "S3PROXY_" + option.opts[0].lstrip("-").upper().replace("-", "_")


def test_every_option_has_an_s3proxy_env_var() -> None:
    """Every option, ours and the original's, can be set by ``S3PROXY_<OPTION>``."""
    missing = [
        name
        for name, option in _options().items()
        if "S3PROXY_" + name.upper().replace("-", "_") not in _env_names(option)
    ]
    assert not missing


@pytest.mark.parametrize("name", sorted(ENV_VALUES))
def test_s3proxy_env_var_sets_its_option(
    name: str, invoke: Callable[..., Result], captured: list[Config]
) -> None:
    """``S3PROXY_<OPTION>`` sets each option (the bucket comes from S3PROXY_BUCKET too)."""
    value, field, expected = ENV_VALUES[name]
    variable = "S3PROXY_" + name.upper().replace("-", "_")
    assert variable in _env_names(_options()[name])
    env = {"S3PROXY_BUCKET": "b", variable: value}
    config = _config(invoke, captured, **env)
    assert getattr(getattr(config, PART_OF[field]), field) == expected


def test_flag_beats_env_var(invoke: Callable[..., Result], captured: list[Config]) -> None:
    """A command-line flag overrides the environment."""
    config = _config(invoke, captured, "-p", "9002", "-b", "flag", S3_BUCKET="env", PORT="9001")
    assert (config.process.port, config.origin.bucket) == (9002, "flag")


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param(["--console", "true"], {}, True, id="console-true"),
        pytest.param(["--console"], {}, True, id="console-alone-last"),
        pytest.param(["--console", "--ttl", "5"], {}, True, id="console-alone-before-option"),
        pytest.param(["-c", "false"], {}, False, id="console-false"),
        pytest.param([], {"S3PROXY_CONSOLE": "true"}, True, id="console-env"),
    ],
)
def test_console_flag(
    args: list[str],
    env: dict[str, str],
    expected: bool,
    invoke: Callable[..., Result],
    captured: list[Config],
) -> None:
    """``--console true`` (the original's form) and ``--console`` alone both turn it on."""
    assert _config(invoke, captured, "-b", "b", *args, **env).logs.console is expected


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param(["--reject-query-strings", "true"], {}, True, id="flag-true"),
        pytest.param(["--reject-query-strings"], {}, True, id="flag-alone"),
        pytest.param(["-j", "false"], {}, False, id="short-false"),
        pytest.param([], {"REJECT_QUERY_STRINGS": "true"}, True, id="original-env"),
        pytest.param([], {"REJECT_QUERY_STRINGS": "false"}, False, id="original-env-false"),
    ],
)
def test_reject_query_strings_flag(
    args: list[str],
    env: dict[str, str],
    expected: bool,
    invoke: Callable[..., Result],
    captured: list[Config],
) -> None:
    """``--reject-query-strings true`` turns on the 400 for query strings."""
    config = _config(invoke, captured, "-b", "b", *args, **env)
    assert config.site.reject_query_strings is expected


def _assert_one_line_error(result: Result, mentions: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert mentions.lower() in lines[0].lower()


@pytest.mark.parametrize(
    ("args", "env", "mentions"),
    [
        pytest.param(["-b", "b", "--ttl", "-1"], {}, "ttl", id="negative-ttl"),
        pytest.param(["-b", "b"], {"TTL": "-5"}, "ttl", id="negative-ttl-env"),
        pytest.param(["-b", "b", "--port", "70000"], {}, "port", id="port-70000"),
        pytest.param(["-b", "b", "--ttl", "soon"], {}, "ttl", id="ttl-not-a-number"),
        pytest.param(
            ["-b", "b"], {"ALLOWED_ORIGINS": "not json"}, "ALLOWED_ORIGINS", id="origins-not-json"
        ),
        pytest.param(
            ["-b", "b"], {"ALLOWED_ORIGINS": '{"a":1}'}, "ALLOWED_ORIGINS", id="origins-object"
        ),
        pytest.param(["-b", "b"], {"ALLOWED_ORIGINS": '["ftp://x"]'}, "ftp://x", id="origins-ftp"),
        pytest.param([], {}, "bucket", id="missing-bucket"),
        pytest.param(["-b", "b", "--log-level", "loud"], {}, "log level", id="bad-log-level"),
        pytest.param(["-b", "b"], {"LOG_LEVEL": "verbose"}, "log level", id="bad-log-level-env"),
        pytest.param(["-b", "b", "--sink-cpus", "one"], {}, "CPU list", id="sink-cpus-word"),
        pytest.param(["-b", "b", "--sink-cpus", "3-1"], {}, "CPU range", id="sink-cpus-backwards"),
    ],
)
def test_bad_value_exits_2_with_one_line(
    args: list[str],
    env: dict[str, str],
    mentions: str,
    invoke: Callable[..., Result],
    captured: list[Config],
) -> None:
    """A bad value ends the command with exit code 2 and one line on stderr naming it."""
    result = invoke(args, env=env or None)
    _assert_one_line_error(result, mentions)
    assert captured == []


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """If startup checks wrongly pass, fail the test instead of serving forever."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("uvicorn started: the startup check did not fail")

    monkeypatch.setattr(server.uvicorn, "run", refuse)


@pytest.mark.parametrize(
    "cache_dir",
    [
        pytest.param(lambda f: f, id="a-regular-file"),
        pytest.param(lambda f: f / "cache", id="under-a-regular-file"),
    ],
)
def test_unwritable_cache_dir_exits_2_with_one_line(
    cache_dir: Callable[[Path], Path], tmp_path: Path, no_uvicorn: None
) -> None:
    """The real ``run`` checks the cache dir first: one line, exit code 2, nothing served."""
    regular_file = tmp_path / "not-a-dir"
    regular_file.write_text("x")
    args = ["-b", "b", "-p", "0", "-n", "1", "-d", str(cache_dir(regular_file))]
    args += ["-o", str(tmp_path / "logs")]
    result = CliRunner().invoke(main, args, prog_name="s3proxy")
    _assert_one_line_error(result, "--cache-dir")
    assert not (tmp_path / "logs").exists()


def _run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3PROXY_")}
    for name in ORIGINAL_ENV:
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "s3proxy", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=30,
    )


def test_python_m_help(tmp_path: Path) -> None:
    """``python -m s3proxy --help`` lists the options and their env vars."""
    done = _run_module("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--bucket" in done.stdout and "S3_BUCKET" in done.stdout
    assert "--cache-dir" in done.stdout and "S3PROXY_CACHE_DIR" in done.stdout


def test_python_m_version(tmp_path: Path) -> None:
    """``--version`` prints the package version."""
    done = _run_module("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert s3proxy.__version__ in done.stdout


def test_python_m_bad_value_has_no_traceback(tmp_path: Path) -> None:
    """In a real process too, a bad value is one line on stderr and exit code 2."""
    done = _run_module("--bucket", "b", "--ttl", "-1", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        pytest.param("", (), id="empty"),
        pytest.param("3", (3,), id="one"),
        pytest.param("2-3", (2, 3), id="range"),
        pytest.param(" 0, 2-3 ,5", (0, 2, 3, 5), id="list"),
        pytest.param("3,1-3", (1, 2, 3), id="overlap-sorted"),
    ],
)
def test_sink_cpus_take_taskset_lists(
    text: str, cpus: tuple[int, ...], invoke: Callable[..., Result], captured: list[Config]
) -> None:
    """``--sink-cpus`` reads CPU lists as ``taskset -c`` writes them."""
    result = invoke(["-b", "b", "--sink-cpus", text])
    assert result.exit_code == 0, result.output
    assert captured[-1].sinks.sink_cpus == cpus


# -- the README's option table ------------------------------------------------------------------

_TABLE_HEAD = "| option | env | default | meaning |"


def option_table() -> list[str]:
    """The README's option table as ``--help`` describes the options: flags, the original's
    variable, the default shown, the help text."""
    rows = [_TABLE_HEAD, "|---|---|---|---|"]
    ctx = click.Context(main, info_name="s3proxy")
    for option in _options().values():
        flags = ", ".join(sorted(option.opts, key=len))
        original = [n for n in _env_names(option) if not n.startswith("S3PROXY_")]
        env = ", ".join(f"`{n}`" for n in original)
        default = option.get_help_extra(ctx).get("default", "")
        meaning = (option.help or "").replace("|", "\\|")
        rows.append(f"| `{flags}` | {env} | {default} | {meaning} |")
    return rows


def test_readme_option_table_matches_help() -> None:
    """README.md's option table lists every option with --help's flags, variable, default and
    help, in --help's order; on failure the message is the table to paste."""
    readme = (Path(__file__).parents[1] / "README.md").read_text().splitlines()
    start = readme.index(_TABLE_HEAD)
    end = next(i for i in range(start, len(readme)) if not readme[i].startswith("|"))
    expected = option_table()
    assert readme[start:end] == expected, "\n" + "\n".join(expected)


# -- help and errors ----------------------------------------------------------------------------

HELP_GROUPS = [
    "Server", "S3", "Cache", "Website", "Management", "Group of instances", "Logging",
    "Metrics sinks", "GeoIP", "Akumuli sink", "MongoDB sink", "Line protocol sink",
]  # fmt: skip


def _help() -> str:
    result = CliRunner().invoke(main, ["--help"], prog_name="s3proxy", terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def _sections(text: str) -> dict[str, str]:
    """``--help``'s sections by heading (``Server:``) -> their text."""
    sections: dict[str, str] = {}
    heading = ""
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            heading = line[:-1]
            sections[heading] = ""
        elif heading:
            sections[heading] += line + "\n"
    return sections


def test_help_groups_the_options() -> None:
    """``--help`` shows the options in groups, in this order, each option in its own."""
    sections = _sections(_help())
    assert [h for h in sections if h in HELP_GROUPS] == HELP_GROUPS
    placed = {
        "Server": ["--port", "--threads", "--host"],
        "S3": ["--bucket", "--endpoint-url", "--path-style"],
        "Cache": ["--cache-dir", "--ttl", "--cache-max-size"],
        "Website": ["--prefix", "--spa", "--allowed-origins"],
        "Management": ["--auth-key", "--prometheus"],
        "Logging": ["--log-level", "--dir", "--console"],
        "Akumuli sink": ["--akumuli-host", "--metric-prefix"],
        "MongoDB sink": ["--mongo-uri"],
        "Line protocol sink": ["--ilp-host"],
        "GeoIP": ["--mmdb-host", "--mmdb-file"],
    }
    for heading, flags in placed.items():
        for flag in flags:
            assert flag in sections[heading], (flag, heading)


@pytest.mark.parametrize("flag", ["--spa", "--console", "--path-style", "--prometheus"])
def test_help_shows_booleans_as_flags(flag: str) -> None:
    """A boolean that is off by default reads as a flag: no value after it in ``--help``."""
    (line,) = [line for line in _help().splitlines() if f"{flag} " in line and "  " in line]
    after = line.split(flag, 1)[1]
    assert after.startswith("  "), line
    assert "BOOLEAN" not in _help()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--spa"], True, id="alone"),
        pytest.param(["--spa", "true"], True, id="true"),
        pytest.param(["--spa", "false"], False, id="false"),
        pytest.param([], False, id="default"),
    ],
)
def test_boolean_flags_also_take_true_or_false(
    args: list[str], expected: bool, invoke: Callable[..., Result], captured: list[Config]
) -> None:
    """``--spa`` alone turns it on; ``--spa true|false`` works as the original's did."""
    assert _config(invoke, captured, "-b", "b", *args).site.spa is expected


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        pytest.param(["--port", "abc"], {}, '--port: "abc" is not a port number', id="port-flag"),
        pytest.param([], {"PORT": "abc"}, 'PORT: "abc" is not a port number', id="port-original"),
        pytest.param(
            [], {"S3PROXY_PORT": "abc"}, 'S3PROXY_PORT: "abc" is not a port number', id="port-ours"
        ),
        pytest.param(
            ["--port", "70000"], {}, "--port: 70000 is not between 0 and 65535", id="port-range"
        ),
        pytest.param([], {"TTL": "-5"}, "TTL: -5 is not between 0 and 315360000", id="ttl-env"),
        pytest.param(
            ["--memory-cache-size", "lots"],
            {},
            '--memory-cache-size: "lots" is not a size: use a byte count or e.g. 512m, 10g',
            id="size",
        ),
        pytest.param(
            [], {"LOG_LEVEL": "loud"}, 'LOG_LEVEL: "loud" is not a log level', id="log-level"
        ),
        pytest.param(
            ["--trusted-proxies", "10.0.0.0/8,nope"],
            {},
            '--trusted-proxies: "nope" is not an IP address or network',
            id="networks",
        ),
        pytest.param(["--prefix", "a/../b"], {}, "--prefix: ", id="prefix-checked-after-parsing"),
    ],
)
def test_errors_name_what_the_user_set(
    args: list[str],
    env: dict[str, str],
    line: str,
    invoke: Callable[..., Result],
    captured: list[Config],
) -> None:
    """A bad value's one line names the flag or the variable it came from, then says why."""
    result = invoke(["-b", "b", *args], env=env or None)
    _assert_one_line_error(result, line)
    assert result.stderr.startswith(f"s3proxy: error: {line}")
