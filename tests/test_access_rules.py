"""Access rules: parsing the tables (one-line errors naming the key) and matching key paths."""

from __future__ import annotations

from typing import Any

import pytest

from s3proxy.access.rules import Oidc, RuleError, Secret, first_match, parse, parse_duration
from s3proxy.keys import Key, path_to_key

WHERE = "sites.toml: site docs"


def _rules(*tables: dict[str, Any]) -> Any:
    return parse(list(tables), WHERE)


RULES = _rules(
    {"paths": ["/internal/public/*"], "allow": "public"},
    {"paths": ["/internal/*"], "allow": "basic", "htpasswd": "/etc/h"},
    {"paths": ["/downloads/*"], "allow": "signed", "secret": {"env": "LINKS"}},
    {
        "paths": ["/staff/*", "/hr/*"],
        "allow": "oidc",
        "issuer": "https://login.example.com/",
        "client_id": "docs",
        "client_secret": {"file": "/run/secret"},
        "groups": ["staff"],
    },
)


def test_parse_builds_frozen_rules() -> None:
    """Each table becomes a Rule with its kind's settings; secrets are named, never held."""
    public, basic, signed, oidc = RULES
    assert public.public and public.paths == ("/internal/public/*",)
    assert basic.htpasswd == "/etc/h" and basic.realm == "restricted"
    assert signed.secret == Secret(env="LINKS")
    assert oidc.oidc == Oidc(
        issuer="https://login.example.com",
        client_id="docs",
        client_secret=Secret(file="/run/secret"),
        groups=("staff",),
        audience="docs",
    )
    assert [r.index for r in RULES] == [0, 1, 2, 3]


def _key_path(raw: bytes) -> str:
    """The key path the site matches: keys.py's one decoding of the raw path."""
    key = path_to_key(raw)
    assert isinstance(key, Key)
    return "/" + key.key


@pytest.mark.parametrize(
    ("raw", "allow"),
    [
        pytest.param(b"/internal/a.html", "basic", id="plain"),
        pytest.param(b"/internal/", "basic", id="folder-index"),
        pytest.param(b"/internal%2Fa.html", "basic", id="encoded-slash"),
        pytest.param(b"/%69nternal/a.html", "basic", id="encoded-letter"),
        pytest.param(b"/internal//a.html", "basic", id="double-slash-inside"),
        pytest.param(b"//internal/a.html", "basic", id="double-slash-leading"),
        pytest.param(b"/Internal/a.html", "basic", id="case-variant"),
        pytest.param(b"/INTERNAL/PUBLIC/a.html", "basic", id="case-variant-of-public"),
        pytest.param(b"/internal/public/a.html", "public", id="public-exception"),
        pytest.param(b"/staff/x", "oidc", id="oidc-first-glob"),
        pytest.param(b"/hr/x", "oidc", id="oidc-second-glob"),
        pytest.param(b"/downloads/big.iso", "signed", id="signed"),
        pytest.param(b"/index.html", None, id="unmatched-is-public"),
        pytest.param(b"/internal", None, id="folder-name-itself"),
    ],
)
def test_first_match_on_the_decoded_key_path(raw: bytes, allow: str | None) -> None:
    """No spelling of a protected path escapes its rule; a public rule opens only its exact
    path."""
    rule = first_match(RULES, _key_path(raw))
    assert (rule.allow if rule else None) == allow


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param({"paths": ["/a/*"]}, "access[0]: allow: must be one of", id="no-allow"),
        pytest.param({"paths": ["/a/*"], "allow": "maybe"}, "allow: must be one", id="bad-allow"),
        pytest.param({"allow": "public"}, "access[0]: paths: a list of path globs", id="no-paths"),
        pytest.param({"allow": "public", "paths": ["a/*"]}, "paths: a list", id="relative-glob"),
        pytest.param(
            {"allow": "public", "paths": ["/a"], "htpasswd": "/x"},
            "htpasswd: unknown key for allow = 'public'",
            id="key-of-another-kind",
        ),
        pytest.param({"allow": "basic", "paths": ["/a"]}, "htpasswd: missing", id="no-htpasswd"),
        pytest.param(
            {"allow": "signed", "paths": ["/a"], "secret": "hunter2hunter2hunter2"},
            'secret: must be { env = "NAME" } or { file = "/path" }, never the value',
            id="inline-secret",
        ),
        pytest.param({"allow": "signed", "paths": ["/a"]}, "secret: missing", id="no-secret"),
        pytest.param(
            {"allow": "public", "paths": ["/a"], "presign_over": "big"},
            'presign_over: "big" is not a size',
            id="bad-size",
        ),
        pytest.param(
            {"allow": "oidc", "paths": ["/a"], "issuer": "login", "client_id": "c"},
            "issuer: must be an https:// URL",
            id="bad-issuer",
        ),
        pytest.param(
            {"allow": "oidc", "paths": ["/a"], "issuer": "https://l", "client_id": "c"},
            "cookie_secret: needed when there is no client_secret",
            id="no-secret-for-cookie",
        ),
        pytest.param(
            {
                "allow": "oidc",
                "paths": ["/a"],
                "issuer": "https://l",
                "client_id": "c",
                "cookie_secret": {"env": "C"},
                "session_lifetime": "forever",
            },
            'session_lifetime: "forever" is not a duration',
            id="bad-lifetime",
        ),
    ],
)
def test_bad_tables_are_refused_naming_the_key(table: dict[str, Any], message: str) -> None:
    """A bad rule is one line naming the file, the site, the rule and the key."""
    with pytest.raises(RuleError) as caught:
        _rules(table)
    assert str(caught.value).startswith(f"{WHERE}: access[0]: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_access_must_be_a_list_of_tables() -> None:
    """``access = "basic"`` is not ``[[sites.NAME.access]]``."""
    with pytest.raises(RuleError, match="access: must be"):
        parse("basic", WHERE)


def test_presign_over_takes_sizes() -> None:
    """``presign_over`` is a byte count or a size with a binary unit."""
    (rule,) = _rules({"allow": "public", "paths": ["/*"], "presign_over": "100m"})
    assert rule.presign_over == 100 * 1024 * 1024


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("90", 90), ("30m", 1800), ("1h", 3600), ("1d", 86400), ("0", None), (-1, None)],
)
def test_parse_duration(value: Any, seconds: int | None) -> None:
    """Durations are seconds, or a number with s, m, h or d."""
    assert parse_duration(value) == seconds
