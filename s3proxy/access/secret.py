"""Read the secrets access rules name (``{ env = ... }`` or ``{ file = ... }``), once, when
the site is built: a secret that is not there fails startup, not the first request."""

from __future__ import annotations

import os

from s3proxy.access.rules import RuleError, Secret


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
