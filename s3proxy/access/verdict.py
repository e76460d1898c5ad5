"""What an access check reads from a request, and what it answers. Pure values."""

from __future__ import annotations

from dataclasses import dataclass

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Asking:
    """The parts of a request access checks read."""

    #: ``/`` + the decoded object key below the site's prefix (what rules match).
    path: str
    #: The request's query, as sent (a signed link's parameters are in it).
    query: bytes
    authorization: bytes | None
    cookies: bytes | None
    #: The client's address (behind trusted proxies, the forwarded one).
    address: str
    #: ``https://docs.example.com``: where the browser reached this site.
    origin: str
    #: The raw path and query to come back to after a login.
    target: bytes

    @property
    def secure(self) -> bool:
        return self.origin.startswith("https:")


@dataclass(frozen=True, slots=True)
class Granted:
    """Access is granted: the answer is private to this client, and varies with ``vary``
    (the request header that granted it, if any)."""

    vary: bytes = b""


@dataclass(frozen=True, slots=True)
class Answer:
    """Not (yet) granted, or a page of a login flow: send this instead of the object."""

    status: int
    headers: Headers = ()
    message: str = ""


Verdict = Granted | Answer
