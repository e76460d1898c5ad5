"""What we know about an object without its body: the S3 headers we keep and pass on; what
S3 answered to a probe of one."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """An object's size and representation headers, as S3 sent them.

    ``etag`` keeps its quotes (``'"9b2cf..."'``) so it can be sent as it is; ``last_modified``
    is epoch seconds. The optional headers are passed through to clients verbatim.
    """

    size: int
    etag: str | None = None
    last_modified: float | None = None
    content_type: str | None = None
    cache_control: str | None = None
    content_encoding: str | None = None
    content_disposition: str | None = None
    content_language: str | None = None
    expires: str | None = None
    #: ``x-amz-website-redirect-location``: the object answers a redirect there
    #: (:func:`s3proxy.website.object_redirect` decides whether it is honoured).
    website_redirect_location: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectMeta:
        return cls(**data)

    @classmethod
    def from_response(cls, response: dict[str, Any]) -> ObjectMeta:
        """The metadata of a GetObject response (botocore's dict)."""
        last_modified = response.get("LastModified")
        return cls(
            size=int(response.get("ContentLength") or 0),
            etag=response.get("ETag"),
            last_modified=last_modified.timestamp() if last_modified is not None else None,
            content_type=response.get("ContentType"),
            cache_control=response.get("CacheControl"),
            content_encoding=response.get("ContentEncoding"),
            content_disposition=response.get("ContentDisposition"),
            content_language=response.get("ContentLanguage"),
            expires=response.get("ExpiresString"),
            website_redirect_location=response.get("WebsiteRedirectLocation"),
        )


def md5_verifiable(response: dict[str, Any]) -> bool:
    """Only a single-part object stored without SSE-KMS/SSE-C has an ETag that is its MD5."""
    etag = response.get("ETag") or ""
    if "-" in etag or len(etag) != 34:
        return False
    if response.get("SSECustomerAlgorithm"):
        return False
    return response.get("ServerSideEncryption") in (None, "AES256")


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """What S3 said to one request, for :func:`s3proxy.startup.classify`: its HTTP status
    (``None`` when no answer came) and its error code (``NoSuchBucket``), or the failure's
    name when no answer came (``EndpointConnectionError``, ``NoCredentialsError``)."""

    status: int | None
    code: str = ""
