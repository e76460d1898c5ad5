"""The sites file and host routing, without a server: what a file means, every refusal's one
line, and which site a Host names."""

from __future__ import annotations

import timeit
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3proxy import server
from s3proxy.cli import main
from s3proxy.config import Config
from s3proxy.routing import Router, normalize
from s3proxy.sitesfile import SitesFileError, load, namespace

BASE = Config.build(region="eu-west-1", ttl=60, spa=True)

GOOD = """
[servers.aws]
region = "eu-west-2"
max_connections = 8

[servers.minio]
endpoint_url = "http://127.0.0.1:9000"
path_style = true
key = "k"
secret = "s"

[sites.docs]
hosts = ["Docs.Example.com.", "*.docs.example.com"]
server = "aws"
bucket = "docs-site"
prefix = "v2"
error_document = "404.html"
default = true

[[sites.docs.headers]]
paths = ["/assets/*"]
set = { "Cache-Control" = "public, max-age=31536000, immutable" }

[sites.blog]
hosts = ["blog.example.com"]
server = "minio"
bucket = "docs-site"
ttl = 5
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sites.toml"
    path.write_text(text)
    return str(path)


def test_a_file_means_servers_and_sites_that_inherit_the_command_line(tmp_path: Path) -> None:
    """Tables set what they name; the rest is the command line's (region, ttl, spa)."""
    sites = load(write(tmp_path, GOOD), BASE)
    assert set(sites.servers) == {"default", "aws", "minio"}
    assert sites.servers["aws"].region == "eu-west-2"
    assert sites.servers["aws"].s3_max_connections == 8
    assert sites.servers["minio"].region == "eu-west-1"  # the command line's
    assert sites.servers["minio"].addressing_style == "path"
    docs, blog = sites.sites["docs"], sites.sites["blog"]
    assert docs.hosts == ("docs.example.com", "*.docs.example.com")
    assert (docs.settings.prefix, docs.settings.ttl, docs.settings.spa) == ("v2/", 60, True)
    assert docs.settings.error_document == "404.html"
    assert docs.default and not blog.default
    assert docs.headers[0].paths == ("/assets/*",)
    assert docs.headers[0].set == ((b"cache-control", b"public, max-age=31536000, immutable"),)
    assert blog.settings.ttl == 5
    # The same bucket name on two servers: two namespaces.
    assert docs.namespace != blog.namespace
    assert docs.namespace.startswith("docs:") and blog.namespace.startswith("blog:")


def test_a_site_without_a_server_uses_the_command_lines(tmp_path: Path) -> None:
    """``server`` defaults to ``default``: the command line's S3 options; ``bucket`` to
    ``--bucket``."""
    base = BASE.replace(bucket="cli-bucket")
    sites = load(write(tmp_path, '[sites.a]\nhosts = ["a.test"]\n'), base)
    assert sites.sites["a"].server == "default"
    assert sites.sites["a"].bucket == "cli-bucket"
    assert sites.servers["default"].region == "eu-west-1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("[site.a]\n", "site: unknown table", id="unknown-table"),
        pytest.param(
            '[sites.a]\nhosts = ["a.test"]\nbucket = "b"\ncolour = "red"\n',
            "site a: colour: unknown key",
            id="unknown-site-key",
        ),
        pytest.param(
            '[servers.s]\nendpoint = "http://x"\n[sites.a]\nhosts = ["a.test"]\nbucket = "b"\n',
            "server s: endpoint: unknown key",
            id="unknown-server-key",
        ),
        pytest.param(
            '[sites.a]\nhosts = ["a.test"]\nbucket = "b"\nserver = "nope"\n',
            "site a: server: no [servers.nope] table",
            id="missing-server",
        ),
        pytest.param(
            '[sites.a]\nhosts = ["x.test"]\nbucket = "b"\n'
            '[sites.b]\nhosts = ["X.test."]\nbucket = "b"\n',
            "site b: hosts: x.test is already site a's",
            id="two-sites-one-host",
        ),
        pytest.param(
            '[sites.a]\ndefault = true\nbucket = "b"\n[sites.b]\ndefault = true\nbucket = "b"\n',
            "site b: default: site a is already the default",
            id="two-defaults",
        ),
        pytest.param(
            '[sites.a]\nhosts = ["a.test"]\nbucket = "b"\nttl = -1\n',
            "site a: ttl: -1 is not between 0 and 315360000",
            id="bad-site-value",
        ),
        pytest.param(
            '[sites.a]\nhosts = ["a.test"]\nbucket = "b"\nallowed_origins = ["ftp://x"]\n',
            'site a: allowed_origins: "ftp://x" is not an origin',
            id="bad-origins",
        ),
        pytest.param(
            '[servers.s]\nmax_connections = 0\n[sites.a]\nhosts = ["a.test"]\nbucket = "b"\n',
            "server s: max_connections: 0 is not between 1 and 100000",
            id="bad-server-value",
        ),
        pytest.param(
            '[sites.a]\nhosts = ["a.test:80"]\nbucket = "b"\n',
            'site a: hosts: "a.test:80" is not a host name',
            id="host-with-port",
        ),
        pytest.param(
            '[sites.a]\nhosts = ["*.*.test"]\nbucket = "b"\n',
            'site a: hosts: "*.*.test" is not a host name',
            id="two-label-wildcard",
        ),
        pytest.param('[sites.a]\nhosts = ["a.test"]\n', "site a: bucket: missing", id="no-bucket"),
        pytest.param(
            '[sites.a]\nbucket = "b"\n', "site a: hosts: none, and not the default", id="no-host"
        ),
        pytest.param(
            '[sites.a]\nhosts = ["a.test"]\nbucket = "b"\n'
            '[[sites.a.headers]]\npaths = ["assets/*"]\nset = { x = "y" }\n',
            "site a: headers: paths:",
            id="relative-header-glob",
        ),
        pytest.param("", "no [sites.NAME] table", id="no-sites"),
        pytest.param("[sites.a\n", "not TOML", id="not-toml"),
    ],
)
def test_refusals_name_the_file_the_table_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each bad file is one line: the file, the site or server, the key, the problem."""
    path = write(tmp_path, text)
    with pytest.raises(SitesFileError) as raised:
        load(path, BASE)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_command_refuses_a_bad_file_with_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``s3proxy --config FILE`` (or S3PROXY_CONFIG) with a bad file: one line, exit 2,
    nothing served."""
    served: list[Config] = []
    monkeypatch.setattr(server, "run", served.append)
    path = write(tmp_path, '[sites.a]\nhosts = ["a.test"]\nbucket = "b"\nttl = "soon"\n')
    for args, env in (([f"--config={path}"], {}), ([], {"S3PROXY_CONFIG": path})):
        result = CliRunner().invoke(main, args, env=env, prog_name="s3proxy")
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [
            f"s3proxy: error: {path}: site a: ttl: 'soon' is not a valid integer."
        ]
    assert served == []


def test_the_command_takes_a_good_file_without_a_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--bucket is not needed when the file names each site's."""
    served: list[Config] = []
    monkeypatch.setattr(server, "run", served.append)
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(main, ["--config", path], prog_name="s3proxy")
    assert result.exit_code == 0, result.output
    assert served[0].process.sites_file == path


def test_help_mentions_config() -> None:
    result = CliRunner().invoke(main, ["--help"], prog_name="s3proxy")
    assert "--config" in result.output and "S3PROXY_CONFIG" in result.output


@pytest.mark.parametrize(
    ("host", "normal"),
    [
        pytest.param(b"Docs.Example.COM", "docs.example.com", id="case"),
        pytest.param(b"docs.example.com:8080", "docs.example.com", id="port"),
        pytest.param(b"docs.example.com.", "docs.example.com", id="trailing-dot"),
        pytest.param(b"docs.example.com.:443", "docs.example.com", id="dot-and-port"),
        pytest.param(b"[::1]:8000", "[::1]", id="ipv6-port"),
        pytest.param(b"127.0.0.1:80", "127.0.0.1", id="ipv4-port"),
    ],
)
def test_hosts_are_compared_without_port_case_or_trailing_dot(host: bytes, normal: str) -> None:
    assert normalize(host) == normal


ROUTER = Router(
    [("docs.example.com", "docs"), ("*.docs.example.com", "preview"), ("a.b.test", "ab")],
    default="fallback",
)


@pytest.mark.parametrize(
    ("host", "site"),
    [
        pytest.param(b"docs.example.com", "docs", id="exact"),
        pytest.param(b"DOCS.example.com.:8080", "docs", id="exact-normalised"),
        pytest.param(b"pr-1.docs.example.com", "preview", id="wildcard-one-label"),
        pytest.param(b"a.pr-1.docs.example.com", "fallback", id="wildcard-not-two-labels"),
        pytest.param(b"other.test", "fallback", id="no-match-default"),
        pytest.param(None, "fallback", id="no-host-header"),
        pytest.param(b"", "fallback", id="empty-host"),
    ],
)
def test_routing(host: bytes | None, site: str) -> None:
    """Exact names first, then a one-label wildcard, then the default."""
    assert ROUTER.route(host) == site
    assert ROUTER.route(host) == site  # remembered


def test_an_exact_name_wins_over_a_wildcard() -> None:
    router = Router([("*.example.com", "wild"), ("www.example.com", "www")])
    assert router.route(b"www.example.com") == "www"
    assert router.route(b"api.example.com") == "wild"


def test_without_a_default_no_match_is_none() -> None:
    assert Router([("a.test", "a")]).route(b"b.test") is None


def test_the_memo_stays_bounded() -> None:
    """Random Host values from a scanner do not grow memory without bound."""
    router = Router([("a.test", "a")], default="d")
    for n in range(10_000):
        router.route(f"{n}.test".encode())
    assert len(router._memo) <= 4096


def test_routing_a_remembered_host_costs_the_same_with_50_sites() -> None:
    """A routed request is one dict lookup however many sites there are (timeit, in-process;
    generous bound against a loaded machine: the point is no per-site scan)."""
    one = Router([("site0.example.com", 0)])
    fifty = Router([(f"site{n}.example.com", n) for n in range(50)])
    host = b"site0.example.com:8080"
    one.route(host), fifty.route(host)
    t_one = min(timeit.repeat(lambda: one.route(host), number=20_000, repeat=5))
    t_fifty = min(timeit.repeat(lambda: fifty.route(host), number=20_000, repeat=5))
    assert t_fifty < t_one * 3


def test_namespaces_differ_by_site_server_and_bucket() -> None:
    a = BASE.origin
    b = Config.build(endpoint_url="http://minio:9000").origin
    assert len({namespace("s", a, "x"), namespace("s", b, "x"), namespace("t", a, "x")}) == 3
    assert namespace("s", a, "x") == namespace("s", a, "x")
