"""The S3 client's own settings: what S3 sees of it, and how it reads S3's timestamps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from botocore.utils import parse_timestamp

from s3proxy import __version__
from s3proxy.origin import _timestamp
from tests.servers import S3Server


@pytest.mark.parametrize(
    "text",
    [
        "Wed, 02 Dec 2026 07:25:47 GMT",  # IMF-fixdate: Last-Modified, as S3 sends it
        "Wednesday, 02-Dec-26 07:25:47 GMT",  # RFC 850
        "2026-12-02T07:25:47.000Z",  # ISO 8601: ListObjectsV2's LastModified
        "2026-12-02T08:25:47+01:00",
    ],
)
def test_timestamps_read_as_botocore_reads_them(text: str) -> None:
    """Our parser gives the instant botocore's own gives, HTTP-dates without dateutil."""
    ours, theirs = _timestamp(text), parse_timestamp(text)
    assert ours == theirs
    assert ours.utcoffset() is not None


def test_an_asctime_date_is_gmt() -> None:
    """RFC 9110 §5.6.7: all three HTTP-date forms are GMT (dateutil reads asctime as local)."""
    assert _timestamp("Wed Dec  2 07:25:47 2026") == datetime(2026, 12, 2, 7, 25, 47, tzinfo=UTC)


def test_a_bad_timestamp_is_refused_as_botocore_refuses_it() -> None:
    with pytest.raises(ValueError):
        _timestamp("not a date")


def test_s3_sees_our_user_agent(
    s3: S3Server, bucket: str, put: Callable[..., None], http: httpx.Client
) -> None:
    """The User-Agent of GetObject is s3proxy's, made once, then botocore's."""
    put("ua.txt", b"ua")
    assert http.get("/ua.txt").content == b"ua"
    agents = [h["user-agent"] for m, p, h in s3.requests if m == "GET" and p.endswith("/ua.txt")]
    assert agents and agents[-1].startswith(f"s3proxy/{__version__} aiobotocore/")
