"""What an access check reads from a request, and what it answers. Pure values."""

from __future__ import annotations

from dataclasses import dataclass

from s3proxy.access.signed import strip

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True)
class Asking:
    """The parts of a request a check's slow path reads (:meth:`decide`; the hit path's
    :meth:`quick` reads the request's headers as they are)."""

    #: ``/`` + the decoded object key below the site's prefix (what rules match).
    path: str
    #: The request's query, as sent (a signed link's parameters are in it).
    query: bytes
    authorization: bytes | None
    cookies: bytes | None
    #: The client's address (behind trusted proxies, the forwarded one).
    address: str
    scheme: str = "http"
    host: bytes = b""
    raw_path: bytes = b"/"

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def origin(self) -> str:
        """``https://docs.example.com``: where the browser reached this site."""
        return f"{self.scheme}://{self.host.decode('latin-1')}"

    @property
    def target(self) -> bytes:
        """The raw path and query to come back to after a login, without a signed link's
        parameters."""
        query = strip(self.query)
        return self.raw_path + b"?" + query if query else self.raw_path


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

# Made once: a frozen dataclass costs microseconds to build, and the hit path grants often.
GRANTED = Granted()
BY_AUTHORIZATION = Granted(b"Authorization")
BY_COOKIE = Granted(b"Cookie")
