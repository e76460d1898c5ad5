"""The one exception tree of s3proxy.

Foreign exceptions (botocore, aiohttp, OSError from the cache) are translated into these at the
module that imports the foreign library; the site handler turns them into responses in one
place, before the response starts, by :func:`http_status` (after it has started, the
connection is aborted instead)::

    S3ProxyError
    ├── ConfigError            bad settings; the CLI prints one line and exits 2
    ├── OriginError            S3 did not give us the object (or refused a write: its
    │   │                      status and code kept)                       -> 502
    │   ├── ObjectNotFound     no such key (or 403 without ListBucket)     -> 404
    │   ├── ObjectChanged      If-Match failed: the object was replaced meanwhile
    │   ├── OriginTimeout      connect or read timed out                   -> 504
    │   └── OriginBodyError    the body broke off or failed verification; the client's
    │                          connection is aborted, nothing is cached
    ├── CacheError             the local cache could not store or read an entry -> 503
    │   └── BodyGone           a cached body vanished or shrank before the response started
    │                          (the endpoint forgets the entry and asks S3 once more)
    ├── PublishError           ``s3proxy publish`` could not finish; one line, exit 1
    └── GroupUnavailable       Redis (--redis-url) did not answer: the instance goes on alone,
                               purges apply here only; a site change is refused
                               (registry.py answers 503 GROUP_UNAVAILABLE)

A key S3 does not have is not an error by the time it reaches the endpoint: the read-through
answers it as :class:`~s3proxy.outcome.Missing` (404).
"""


class S3ProxyError(Exception):
    """Base class of every error s3proxy raises on purpose."""


class ConfigError(S3ProxyError):
    """A setting is invalid. The message is one line, fit for an operator."""


class OriginError(S3ProxyError):
    """S3 failed to answer usefully (5xx, refused connection, unexpected status).
    ``status`` is S3's HTTP status when it answered one, ``code`` its error code
    (``SlowDown``, ``NoSuchUpload``) when the caller kept it."""

    def __init__(self, message: str, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ObjectNotFound(OriginError):
    """The key does not exist in the bucket (S3 404, or 403 when ListBucket is not granted)."""


class ObjectChanged(OriginError):
    """A GET with If-Match found another version of the object (S3 answered 412)."""


class OriginTimeout(OriginError):
    """Connecting to S3, or reading its answer, took longer than the configured timeout."""


class OriginBodyError(OriginError):
    """The object's body ended early, ran long, or did not match its ETag."""


class CacheError(S3ProxyError):
    """The disk cache could not be written or read (full disk, permissions)."""


class BodyGone(CacheError):
    """A cached body file vanished or shrank before the response started (a cron job, an
    eviction by another worker). ``key`` is the entry's key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"cached body of {key!r} is gone")
        self.key = key


class PublishError(S3ProxyError):
    """A publish could not finish: a file failed after its retries, changed while it was
    sent, or the bucket cannot be written. The message is one line, fit for the user."""


class GroupUnavailable(S3ProxyError):
    """Redis, which a group of instances shares purges and sites through, could not be
    reached or failed a command (the message says how)."""


#: The status and message of a failure before the response started, by exception class; the
#: first class that matches wins, so subclasses come before their bases.
STATUSES: tuple[tuple[type[S3ProxyError], int, str], ...] = (
    (OriginTimeout, 504, "Gateway Timeout"),  # RFC 9110 §15.6.5
    (OriginError, 502, "Bad Gateway"),  # §15.6.3
    (CacheError, 503, "Service Unavailable"),  # §15.6.4
)


def http_status(exc: S3ProxyError) -> tuple[int, str]:
    """The status and short message that answer ``exc`` (500 for one not in :data:`STATUSES`,
    which would be a bug)."""
    for cls, status, message in STATUSES:
        if isinstance(exc, cls):
            return status, message
    return 500, "Internal Server Error"


def timing_outcome(exc: OriginError) -> str:
    """How a GetObject that raised ``exc`` counts in the origin's timings (Prometheus)."""
    if isinstance(exc, ObjectNotFound):
        return "not_found"
    if isinstance(exc, OriginTimeout):
        return "timeout"
    return "error"
