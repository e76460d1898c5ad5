"""A real OpenID provider for the access tests: npm's ``oidc-provider`` on node, with one
client and two users in different groups (``alice``: staff, ``bob``: guests).

The package is installed once into a cache directory named by a digest of
``tests/oidc/package.json`` (``$S3PROXY_TEST_CACHE`` or ``~/.cache/s3proxy-tests``); the
provider's script is copied beside it, since node resolves ESM imports from the script's own
folder. The signing key is made here and handed to the provider, so tests can also mint
tokens it would (expired, for another audience) and know they are checked against the
issuer's published key set, not trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.servers import free_port

HERE = Path(__file__).resolve().parent / "oidc"
USERS = {
    "alice": {"email": "alice@example.com", "groups": ["staff"]},
    "bob": {"email": "bob@example.com", "groups": ["guests"]},
}
CLIENT_ID, CLIENT_SECRET = "docs", "docs-client-secret-for-tests"


class ProviderMissing(Exception):
    """node or npm is not installed, or the package could not be installed."""


def install() -> Path:
    """The folder holding node_modules/oidc-provider and the provider script."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise ProviderMissing("node and npm are needed (Debian: apt-get install nodejs npm)")
    manifest = (HERE / "package.json").read_bytes()
    root = Path(os.environ.get("S3PROXY_TEST_CACHE", Path.home() / ".cache/s3proxy-tests"))
    target = root / f"oidc-provider-{hashlib.sha256(manifest).hexdigest()[:12]}"
    if not (target / "node_modules/oidc-provider/package.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        (target / "package.json").write_bytes(manifest)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise ProviderMissing(f"npm install failed: {done.stderr[-2000:]}")
    shutil.copyfile(HERE / "provider.mjs", target / "provider.mjs")
    return target


@dataclass
class OidcProvider:
    """The running provider: its issuer URL and the key it signs with."""

    issuer: str
    key: RSAKey
    proc: subprocess.Popen[str]

    def mint(self, claims: dict[str, Any]) -> str:
        """A JWT signed with the provider's own key (for tests of the claims checks)."""
        now = int(time.time())
        base = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300}
        return jwt.encode({"alg": "RS256", "kid": self.key.kid}, {**base, **claims}, self.key)


@contextmanager
def running(redirect_uri: str, post_logout_uri: str, tmp: Path) -> Iterator[OidcProvider]:
    """Start the provider on a free port for a proxy whose callback is ``redirect_uri``."""
    folder = install()
    port = free_port()
    # "localhost", not 127.0.0.1 like the proxy: cookies ignore ports, so one name each keeps
    # the provider's cookies and the proxy's apart in the browser.
    issuer = f"http://localhost:{port}"
    key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig"}, private=True)
    settings = {
        "port": port,
        "issuer": issuer,
        "jwks": {"keys": [key.as_dict(private=True)]},
        "client": {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect_uri],
            "post_logout_redirect_uris": [post_logout_uri],
        },
        "users": USERS,
    }
    settings_file = tmp / "oidc-provider.json"
    settings_file.write_text(json.dumps(settings))
    log = tmp / "oidc-provider.log"
    with log.open("w") as output:
        proc = subprocess.Popen(
            ["node", "provider.mjs", str(settings_file)],
            cwd=folder,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, log, issuer)
        yield OidcProvider(issuer, key, proc)
    finally:
        proc.terminate()
        with suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen[str], log: Path, issuer: str, timeout: float = 60) -> None:
    """Until the provider said it listens and answers its discovery document."""
    deadline = time.monotonic() + timeout
    discovery = f"{issuer}/.well-known/openid-configuration"
    while True:
        if proc.poll() is not None:
            raise ProviderMissing(f"oidc-provider exited: {log.read_text()[-2000:]}")
        if "listening" in log.read_text():
            with suppress(OSError), urllib.request.urlopen(discovery, timeout=5) as answer:
                if answer.status == 200:
                    return
        if time.monotonic() > deadline:
            raise ProviderMissing(f"oidc-provider did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
