"""Signed links for a site's rules: what ``s3proxy sign`` and applications call. Reads the
rule's secret (:mod:`s3proxy.access.secret`), so the link is signed with exactly the key the
proxy will check it with."""

from __future__ import annotations

from s3proxy.access import signed
from s3proxy.access.rules import Rule, RuleError, first_match
from s3proxy.access.secret import reveal


def link_for(
    rules: tuple[Rule, ...],
    site: str,
    path: str,
    seconds: int,
    now: float,
    *,
    prefix: bool = False,
) -> str:
    """A link to ``path`` (decoded; a folder ending in ``/`` with ``prefix``) valid for
    ``seconds``, signed with the secret of the rule that decides it. Raises
    :class:`RuleError` when that rule is not ``signed``."""
    if prefix and not path.endswith("/"):
        raise RuleError(f"--prefix needs a folder path ending in '/': {path}")
    rule = first_match(rules, path)
    if rule is None or rule.allow != "signed" or rule.secret is None:
        kind = "no rule" if rule is None else f'its rule is allow = "{rule.allow}"'
        raise RuleError(f"{path} is not under a signed rule of site {site} ({kind})")
    secret = reveal(rule.secret, f"site {site}: access[{rule.index}]: secret")
    return signed.link(secret, site, path, seconds, now, prefix=prefix)
