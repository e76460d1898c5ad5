"""Read the secrets access rules name (``{ env = ... }`` or ``{ file = ... }``), once, when
the site is built: a secret that is not there fails startup, not the first request."""

from __future__ import annotations

import os

from s3proxy.access.rules import Rule, RuleError, Secret

#: Secrets that key a signature or a cookie are refused below this length.
MIN_SECRET_BYTES = 16


def reveal(secret: Secret, where: str, *, min_bytes: int = 1) -> bytes:
    """The secret's bytes (a file's trailing newline dropped). Raises :class:`RuleError`
    naming where it was looked for, never its value."""
    if secret.env is not None:
        value = os.environ.get(secret.env, "").encode()
    else:
        assert secret.file is not None
        try:
            with open(secret.file, "rb") as file:
                value = file.read().rstrip(b"\r\n")
        except OSError as exc:
            raise RuleError(f"{where}: cannot read {secret}: {exc.strerror}") from None
    if not value:
        raise RuleError(f"{where}: {secret} is empty or not set")
    if len(value) < min_bytes:
        raise RuleError(f"{where}: {secret} is too short: at least {min_bytes} bytes")
    return value


def check(rules: tuple[Rule, ...], where: str) -> None:
    """Read every secret and look at every htpasswd file ``rules`` name, as the site's gate
    will: a sites file naming one that is not there is refused whole, with the reason.
    Raises :class:`RuleError`."""
    for rule in rules:
        here = f"{where}: access[{rule.index}]"
        if rule.htpasswd is not None and not os.access(rule.htpasswd, os.R_OK):
            raise RuleError(f"{here}: htpasswd: cannot read {rule.htpasswd}")
        if rule.secret is not None:
            reveal(rule.secret, f"{here}: secret", min_bytes=MIN_SECRET_BYTES)
        if rule.oidc is not None:
            if rule.oidc.client_secret is not None:
                reveal(rule.oidc.client_secret, f"{here}: client_secret")
            keyed = rule.oidc.cookie_secret or rule.oidc.client_secret
            if keyed is not None:
                reveal(keyed, f"{here}: cookie_secret", min_bytes=MIN_SECRET_BYTES)
