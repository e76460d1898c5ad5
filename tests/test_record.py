"""The client-IP rule of the original (X-Real-IP, else the first X-Forwarded-For, else the
peer), and --trusted-proxies, which makes those headers count only from known proxies; an
X-Request-Id counts only from them."""

from __future__ import annotations

import pytest

from s3proxy.record import client_ip, forwarded_request_id, parse_networks

PROXIES = parse_networks(("10.0.0.0/8", "fd00::/8"))


@pytest.mark.parametrize(
    ("real_ip", "forwarded", "peer", "trusted", "expected"),
    [
        pytest.param(None, None, "127.0.0.1", (), "127.0.0.1", id="peer"),
        pytest.param(None, None, None, (), "-", id="no-peer"),
        pytest.param(b"1.2.3.4", b"5.6.7.8", "127.0.0.1", (), "1.2.3.4", id="real-ip-wins"),
        pytest.param(None, b"5.6.7.8, 10.0.0.1", "127.0.0.1", (), "5.6.7.8", id="first-forwarded"),
        pytest.param(None, b"5.6.7.8:4711", "127.0.0.1", (), "5.6.7.8", id="port-stripped"),
        pytest.param(None, b"[2001:db8::1]:443", "127.0.0.1", (), "2001:db8::1", id="v6-port"),
        pytest.param(None, b"2001:db8::1", "127.0.0.1", (), "2001:db8::1", id="bare-v6"),
        pytest.param(None, b"5.6.7.8", "10.1.2.3", PROXIES, "5.6.7.8", id="trusted-proxy"),
        pytest.param(b"1.2.3.4", None, "fd00::5", PROXIES, "1.2.3.4", id="trusted-v6-proxy"),
        pytest.param(None, b"5.6.7.8", "203.0.113.9", PROXIES, "203.0.113.9", id="forged"),
        pytest.param(b"1.2.3.4", None, "not-an-ip", PROXIES, "not-an-ip", id="odd-peer"),
    ],
)
def test_client_ip(
    real_ip: bytes | None,
    forwarded: bytes | None,
    peer: str | None,
    trusted: tuple[object, ...],
    expected: str,
) -> None:
    """Headers name the client unless trusted proxies are set and the peer is not one."""
    assert client_ip(real_ip, forwarded, peer, trusted) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "peer", "trusted", "expected"),
    [
        pytest.param(b"abc-123", "10.1.2.3", PROXIES, b"abc-123", id="trusted"),
        pytest.param(b"abc-123", "fd00::5", PROXIES, b"abc-123", id="trusted-v6"),
        pytest.param(b"abc-123", "203.0.113.9", PROXIES, None, id="untrusted"),
        pytest.param(b"abc-123", "10.1.2.3", (), None, id="no-trusted-proxies"),
        pytest.param(b"abc-123", None, PROXIES, None, id="no-peer"),
        pytest.param(None, "10.1.2.3", PROXIES, None, id="absent"),
        pytest.param(b"", "10.1.2.3", PROXIES, None, id="empty"),
        pytest.param(b"a, b", "10.1.2.3", PROXIES, None, id="repeated"),
        pytest.param(b"a\x7fb", "10.1.2.3", PROXIES, None, id="control"),
        pytest.param(b"\xe9t\xe9", "10.1.2.3", PROXIES, None, id="not-ascii"),
        pytest.param(b"x" * 128, "10.1.2.3", PROXIES, b"x" * 128, id="longest"),
        pytest.param(b"x" * 129, "10.1.2.3", PROXIES, None, id="too-long"),
    ],
)
def test_forwarded_request_id(
    value: bytes | None,
    peer: str | None,
    trusted: tuple[object, ...],
    expected: bytes | None,
) -> None:
    """X-Request-Id counts only from a trusted proxy, and only as visible ASCII of at most
    128 bytes."""
    assert forwarded_request_id(value, peer, trusted) == expected  # type: ignore[arg-type]
