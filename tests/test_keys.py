"""Request path -> S3 object key: decoded exactly once, byte for byte, dot segments refused."""

from __future__ import annotations

import unicodedata

import pytest

from s3proxy.keys import MAX_KEY_BYTES, Key, Rejected, normalize_prefix, path_to_key, percent_decode

E_ACUTE_NFC = unicodedata.normalize("NFC", "é")
E_ACUTE_NFD = unicodedata.normalize("NFD", "é")


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        pytest.param(b"/plain/path.txt", b"/plain/path.txt", id="no-escapes"),
        pytest.param(b"", b"", id="empty"),
        pytest.param(b"/a%2Bb", b"/a+b", id="plus-escaped"),
        pytest.param(b"/a+b", b"/a+b", id="plus-literal"),
        pytest.param(b"/100%25", b"/100%", id="percent"),
        pytest.param(b"/%2541", b"/%41", id="decoded-once-only"),
        pytest.param(b"/a%2Fb", b"/a/b", id="slash"),
        pytest.param(b"/a%2fb", b"/a/b", id="lowercase-hex"),
        pytest.param(b"/a%20b", b"/a b", id="space"),
        pytest.param(b"/%C3%A9", "/é".encode(), id="utf8"),
        pytest.param(b"/%00", b"/\x00", id="nul-is-decoded-not-judged"),
        pytest.param(b"/%", None, id="lone-percent"),
        pytest.param(b"/%2", None, id="one-hex-digit"),
        pytest.param(b"/a%4", None, id="truncated-at-end"),
        pytest.param(b"/%zz", None, id="not-hex"),
        pytest.param(b"/%g0", None, id="first-digit-not-hex"),
        pytest.param(b"/%0g/x", None, id="second-digit-not-hex"),
        pytest.param(b"/ok%20then%", None, id="trailing-percent-after-valid"),
    ],
)
def test_percent_decode(raw: bytes, decoded: bytes | None) -> None:
    """Each %XX escape is decoded once; a malformed escape gives None."""
    assert percent_decode(raw) == decoded


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        pytest.param(b"/index.html", "index.html", id="plain"),
        pytest.param(b"/a%2Bb.txt", "a+b.txt", id="plus-escaped"),
        pytest.param(b"/a+b.txt", "a+b.txt", id="plus-literal-not-space"),
        pytest.param(b"/100%25.txt", "100%.txt", id="percent"),
        pytest.param(b"/%2541.txt", "%41.txt", id="double-encoded-decoded-once"),
        pytest.param(b"/docs%2Fguide.html", "docs/guide.html", id="encoded-slash"),
        pytest.param(b"/hello%20world.txt", "hello world.txt", id="space"),
        pytest.param(b"/a=b.txt", "a=b.txt", id="equals"),
        pytest.param(b"/a%3Db.txt", "a=b.txt", id="equals-escaped"),
        pytest.param(b"/user@host.txt", "user@host.txt", id="at"),
        pytest.param(b"/%22quoted%22.txt", '"quoted".txt', id="double-quotes"),
        pytest.param(b"/it's.txt", "it's.txt", id="single-quote"),
        pytest.param(b"/f(1).txt", "f(1).txt", id="parentheses"),
        pytest.param(b"/f%281%29.txt", "f(1).txt", id="parentheses-escaped"),
        pytest.param(b"/caf%C3%A9.txt", f"caf{E_ACUTE_NFC}.txt", id="utf8-nfc"),
        pytest.param(b"/cafe%CC%81.txt", f"caf{E_ACUTE_NFD}.txt", id="utf8-nfd-kept"),
        pytest.param("/café.txt".encode(), f"caf{E_ACUTE_NFC}.txt", id="utf8-raw-bytes"),
        pytest.param(b"/a//b.txt", "a//b.txt", id="double-slash-kept"),
        pytest.param(b"//a.txt", "/a.txt", id="leading-double-slash-kept"),
        pytest.param(b"/...", "...", id="three-dots-is-a-name"),
        pytest.param(b"/.well-known/x", ".well-known/x", id="dot-prefixed-name"),
        pytest.param(b"/a..b/c.", "a..b/c.", id="dots-inside-names"),
        pytest.param(b"/%7Euser", "~user", id="tilde"),
    ],
)
def test_path_to_key_maps_bytes_exactly(raw: bytes, key: str) -> None:
    """A served path maps to the key S3 stores, byte for byte, without normalisation."""
    assert path_to_key(raw) == Key(key, index=False)


def test_nfc_and_nfd_paths_are_different_keys() -> None:
    """The NFC and NFD spellings of the same text name two different objects."""
    nfc = path_to_key(b"/caf%C3%A9")
    nfd = path_to_key(b"/cafe%CC%81")
    assert isinstance(nfc, Key) and isinstance(nfd, Key)
    assert nfc.key != nfd.key
    assert unicodedata.normalize("NFC", nfd.key) == nfc.key


@pytest.mark.parametrize(
    ("raw", "kwargs", "expected"),
    [
        pytest.param(b"/", {}, Key("index.html", True), id="root"),
        pytest.param(b"/docs/", {}, Key("docs/index.html", True), id="folder"),
        pytest.param(b"/a//", {}, Key("a//index.html", True), id="folder-double-slash"),
        pytest.param(b"/docs%2F", {}, Key("docs/index.html", True), id="folder-encoded-slash"),
        pytest.param(b"/docs", {}, Key("docs", False), id="no-slash-no-index"),
        pytest.param(
            b"/", {"index_document": "default.htm"}, Key("default.htm", True), id="custom-index"
        ),
        pytest.param(
            b"/docs/",
            {"index_document": "default.htm"},
            Key("docs/default.htm", True),
            id="custom-index-folder",
        ),
        pytest.param(b"/a.txt", {"prefix": "public/"}, Key("public/a.txt"), id="prefix"),
        pytest.param(b"/", {"prefix": "public/"}, Key("public/index.html", True), id="prefix-root"),
        pytest.param(
            b"/d/", {"prefix": "a/b/"}, Key("a/b/d/index.html", True), id="nested-prefix-folder"
        ),
        pytest.param(b"//x", {"prefix": "p/"}, Key("p//x"), id="prefix-double-slash-stays-inside"),
    ],
)
def test_path_to_key_index_and_prefix(raw: bytes, kwargs: dict[str, str], expected: Key) -> None:
    """A trailing slash names the index document; the prefix is prepended to every key."""
    assert path_to_key(raw, **kwargs) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"/..", id="dotdot"),
        pytest.param(b"/../secret.txt", id="dotdot-leading"),
        pytest.param(b"/a/../b", id="dotdot-middle"),
        pytest.param(b"/a/..", id="dotdot-trailing"),
        pytest.param(b"/a/../", id="dotdot-folder"),
        pytest.param(b"/.", id="dot"),
        pytest.param(b"/./a", id="dot-leading"),
        pytest.param(b"/a/./b", id="dot-middle"),
        pytest.param(b"/a/.", id="dot-trailing"),
        pytest.param(b"/%2e%2e/secret", id="encoded-dotdot-lower"),
        pytest.param(b"/%2E%2E/secret", id="encoded-dotdot-upper"),
        pytest.param(b"/%2E./secret", id="half-encoded-first"),
        pytest.param(b"/.%2e/secret", id="half-encoded-second"),
        pytest.param(b"/%2e/secret", id="encoded-dot"),
        pytest.param(b"/..%2fsecret", id="encoded-slash-after-dotdot"),
        pytest.param(b"/a%2f..%2fsecret", id="all-encoded-slashes"),
        pytest.param(b"/a%2F%2E%2E", id="encoded-trailing-dotdot"),
    ],
)
def test_dot_segments_are_rejected(raw: bytes) -> None:
    """A '.' or '..' segment, raw or percent-encoded, is refused with 400."""
    result = path_to_key(raw, prefix="public/")
    assert isinstance(result, Rejected)
    assert result.status == 400


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"/a%00", id="nul-encoded"),
        pytest.param(b"/a\x00", id="nul-raw"),
        pytest.param(b"/a%0Ab", id="lf"),
        pytest.param(b"/a%0db", id="cr"),
        pytest.param(b"/a%09b", id="tab"),
        pytest.param(b"/a%1Fb", id="unit-separator"),
        pytest.param(b"/a%7Fb", id="del"),
        pytest.param(b"/a\x7fb", id="del-raw"),
    ],
)
def test_control_characters_are_rejected(raw: bytes) -> None:
    """NUL and other C0 controls or DEL, raw or encoded, are refused with 400."""
    result = path_to_key(raw)
    assert isinstance(result, Rejected)
    assert result.status == 400


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"/%", id="lone-percent"),
        pytest.param(b"/%2", id="one-digit"),
        pytest.param(b"/%zz", id="not-hex"),
        pytest.param(b"/a%2", id="one-digit-at-end"),
        pytest.param(b"/%C3", id="truncated-utf8"),
        pytest.param(b"/%FF", id="invalid-utf8-byte"),
        pytest.param(b"/%C0%AF", id="overlong-slash"),
        pytest.param(b"/%ED%A0%80", id="utf8-surrogate"),
        pytest.param(b"/\xc3", id="raw-invalid-utf8"),
        pytest.param(b"a.txt", id="relative"),
        pytest.param(b"", id="empty"),
        pytest.param(b"*", id="asterisk-form"),
        pytest.param(b"http://example.com/a", id="absolute-form"),
    ],
)
def test_malformed_paths_are_rejected(raw: bytes) -> None:
    """Malformed escapes, invalid UTF-8 and targets not starting with '/' are refused with
    400."""
    result = path_to_key(raw)
    assert isinstance(result, Rejected)
    assert result.status == 400
    assert result.reason


@pytest.mark.parametrize(
    ("raw", "kwargs", "status"),
    [
        pytest.param(b"/" + b"a" * MAX_KEY_BYTES, {}, None, id="exactly-1024-bytes"),
        pytest.param(b"/" + b"a" * (MAX_KEY_BYTES + 1), {}, 414, id="1025-bytes"),
        pytest.param(b"/" + b"%C3%A9" * 512, {}, None, id="1024-utf8-bytes"),
        pytest.param(b"/" + b"%C3%A9" * 512 + b"a", {}, 414, id="1025-utf8-bytes"),
        pytest.param(b"/" + b"%41" * MAX_KEY_BYTES, {}, None, id="escapes-count-decoded"),
        pytest.param(
            b"/" + b"a" * (MAX_KEY_BYTES - 7), {"prefix": "public/"}, None, id="prefix-at-limit"
        ),
        pytest.param(
            b"/" + b"a" * (MAX_KEY_BYTES - 6), {"prefix": "public/"}, 414, id="prefix-counts"
        ),
        pytest.param(
            b"/" + b"a" * (MAX_KEY_BYTES - 11) + b"/", {}, None, id="index-document-at-limit"
        ),
        pytest.param(
            b"/" + b"a" * (MAX_KEY_BYTES - 10) + b"/", {}, 414, id="index-document-counts"
        ),
    ],
)
def test_key_length_limit(raw: bytes, kwargs: dict[str, str], status: int | None) -> None:
    """A key longer than S3's 1,024 UTF-8 bytes (prefix and index included) is refused with
    414."""
    result = path_to_key(raw, **kwargs)
    if status is None:
        assert isinstance(result, Key)
        assert len(result.key.encode()) == MAX_KEY_BYTES
    else:
        assert isinstance(result, Rejected)
        assert result.status == status


@pytest.mark.parametrize(
    ("prefix", "normalized"),
    [
        pytest.param("", "", id="empty"),
        pytest.param("/", "", id="slash"),
        pytest.param("//", "", id="slashes"),
        pytest.param("public", "public/", id="bare"),
        pytest.param("public/", "public/", id="trailing-slash"),
        pytest.param("/public", "public/", id="leading-slash"),
        pytest.param("/public//", "public/", id="both"),
        pytest.param("a/b", "a/b/", id="nested"),
        pytest.param("...", ".../", id="three-dots-is-a-name"),
        pytest.param(".well-known", ".well-known/", id="dot-prefixed-name"),
        pytest.param("caf\u00e9", "caf\u00e9/", id="unicode"),
    ],
)
def test_normalize_prefix(prefix: str, normalized: str) -> None:
    """A prefix gets no leading slash and exactly one trailing slash, unless it is empty."""
    assert normalize_prefix(prefix) == normalized


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("..", id="dotdot"),
        pytest.param("../other", id="dotdot-leading"),
        pytest.param("a/../b", id="dotdot-middle"),
        pytest.param("a/..", id="dotdot-trailing"),
        pytest.param(".", id="dot"),
        pytest.param("./a", id="dot-leading"),
        pytest.param("a/./b", id="dot-middle"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\x7fb", id="del"),
    ],
)
def test_normalize_prefix_rejects(prefix: str) -> None:
    """A prefix with a dot segment or a control character raises ValueError."""
    with pytest.raises(ValueError, match="invalid prefix"):
        normalize_prefix(prefix)
