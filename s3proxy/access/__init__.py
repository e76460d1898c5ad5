"""Private paths: access rules per site (``[[sites.NAME.access]]``) and their checks.

    rules.py     pure: the rule tables -> frozen Rule values; the first rule matching a key path
    secret.py    reads a rule's secrets ({ env = ... } / { file = ... }) when the site is built
    verdict.py   pure: what a check reads of a request (Asking) and answers (Granted / Answer)
    basic.py     Basic auth against an htpasswd file of bcrypt lines (the bcrypt owner)
    throttle.py  pure: failed attempts per client address
    signed.py    pure: signed, expiring links (HMAC-SHA256)
    jose.py      JWT verification and the sealed session cookie (the joserfc owner)
    session.py   the OIDC cookies: session and login in progress
    oidc.py      the OIDC client: discovery, login, callback, logout, bearer tokens (the
                 authlib and httpx owner)
    links.py     signed links with a site's own rule secret (`s3proxy sign`, applications)
    gate.py      one site's rules with a live check each
    guard.py     the gate in a site's request path: checks, private answers, fallbacks,
                 presigned offload

Imports point down: guard -> gate -> checks (basic, signed, oidc -> session -> jose) -> rules.
"""
