"""The click types of s3proxy's settings: what text each accepts, the value it gives, and the
sentence it fails with (the CLI puts the flag or variable in front)."""

from __future__ import annotations

from typing import Any

import click
import pytest

from s3proxy.params import CPU_LIST, NETWORKS, ORIGINS, PORT, SIZE, OneOf, Size


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        pytest.param(SIZE, "10g", 10 * 1024**3, id="size-g"),
        pytest.param(SIZE, "512m", 512 * 1024**2, id="size-m"),
        pytest.param(SIZE, "64KiB", 64 * 1024, id="size-kib"),
        pytest.param(SIZE, "1.5g", int(1.5 * 1024**3), id="size-fraction"),
        pytest.param(SIZE, "1234", 1234, id="size-bytes"),
        pytest.param(SIZE, 4096, 4096, id="size-int-passes"),
        pytest.param(PORT, "8080", 8080, id="port"),
        pytest.param(PORT, " 9 ", 9, id="port-spaces"),
        pytest.param(CPU_LIST, "", (), id="cpus-empty"),
        pytest.param(CPU_LIST, "0,2-3", (0, 2, 3), id="cpus-list"),
        pytest.param(CPU_LIST, [3, 1, 3], (1, 3), id="cpus-from-json"),
        pytest.param(ORIGINS, '["https://A.example"]', ("https://a.example",), id="origins"),
        pytest.param(ORIGINS, '["*"]', ("*",), id="origins-star"),
        pytest.param(ORIGINS, ["http://x:81"], ("http://x:81",), id="origins-from-json"),
        pytest.param(NETWORKS, "10.0.0.0/8, ::1", ("10.0.0.0/8", "::1"), id="networks"),
        pytest.param(NETWORKS, "", (), id="networks-empty"),
        pytest.param(OneOf(("json", "console"), "log format"), "JSON", "json", id="one-of-case"),
    ],
)
def test_converts(kind: click.ParamType, text: Any, value: Any) -> None:
    """Text (or an already converted value) becomes the field's value."""
    assert kind.convert(text, None, None) == value


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        pytest.param(SIZE, "ten", '"ten" is not a size', id="size-word"),
        pytest.param(PORT, "abc", '"abc" is not a port number', id="port-word"),
        pytest.param(CPU_LIST, "one", '"one" is not a CPU list', id="cpus-word"),
        pytest.param(CPU_LIST, "3-1", "is not a CPU range", id="cpus-backwards"),
        pytest.param(ORIGINS, "not json", "is not a JSON array", id="origins-not-json"),
        pytest.param(ORIGINS, '{"a": 1}', "is not a JSON array of strings", id="origins-object"),
        pytest.param(ORIGINS, '["ftp://x"]', '"ftp://x" is not an origin', id="origins-scheme"),
        pytest.param(NETWORKS, "10.0.0.0/8,nope", '"nope" is not an IP address', id="networks"),
        pytest.param(
            OneOf(("a", "b"), "letter"), "c", '"c" is not a letter: use a, b', id="one-of"
        ),
    ],
)
def test_fails_with_a_sentence(kind: click.ParamType, text: str, message: str) -> None:
    """A bad value fails with a sentence about the value."""
    with pytest.raises(click.BadParameter) as raised:
        kind.convert(text, None, None)
    assert message in raised.value.message


@pytest.mark.parametrize(
    ("value", "shown"),
    [(64 * 1024**2, "64m"), (10 * 1024**3, "10g"), (64 * 1024, "64k"), (1000, "1000")],
)
def test_size_shows_its_shortest_exact_spelling(value: int, shown: str) -> None:
    """Defaults in ``--help`` read as they are typed."""
    assert Size.show(value) == shown
    assert SIZE.convert(shown, None, None) == value
