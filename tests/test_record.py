"""The client-IP rule of the original (X-Real-IP, else the first X-Forwarded-For, else the
peer), and --trusted-proxies, which makes those headers count only from known proxies."""

from __future__ import annotations

import pytest

from s3proxy.record import client_ip, parse_networks

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
