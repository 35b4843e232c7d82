"""check_images: data: URLs of known types and bounded size, or bounded http(s) URLs on the
hosts limits.image_url_hosts allows (none by default)."""

from __future__ import annotations

import base64

import pytest

from dari.app.images import check_images
from dari.protocol.errors import ErrorCode, ProtocolError
from dari.settings import LimitsSettings

LIMITS = LimitsSettings(max_image_bytes=999, max_images=3, image_url_hosts=["example.com"])
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def data_url(payload: bytes = PNG, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


def refused(images: list[str]) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        check_images(images, LIMITS)
    return caught.value


@pytest.mark.parametrize(
    "images",
    [
        [],
        [data_url(mime="image/png")],
        [data_url(mime="image/jpeg")],
        [data_url(mime="image/gif")],
        [data_url(mime="image/webp")],
        ["https://example.com/cat.png"],
        ["http://EXAMPLE.com./cat.png"],
        ["https://example.com/" + "a" * (2048 - len("https://example.com/"))],
        [data_url(b"x" * 999)],  # exactly max_image_bytes (a multiple of 3: no padding)
        [data_url()] * 3,  # exactly max_images
        ["data:image/png;base64," + base64.encodebytes(PNG).decode()],  # line-wrapped base64
    ],
    ids=[
        "none",
        "png",
        "jpeg",
        "gif",
        "webp",
        "https on an allowed host",
        "http on an allowed host",
        "url of 2048 chars",
        "at the size limit",
        "at the count limit",
        "wrapped base64",
    ],
)
def test_allowed_images_pass(images: list[str]) -> None:
    check_images(images, LIMITS)


@pytest.mark.parametrize(
    ("images", "code"),
    [
        ([data_url(mime="image/svg+xml")], ErrorCode.BAD_REQUEST),
        ([data_url(mime="text/html")], ErrorCode.BAD_REQUEST),
        ([data_url(mime="application/octet-stream")], ErrorCode.BAD_REQUEST),
        ([data_url(b"x" * 1000)], ErrorCode.TOO_LARGE),
        ([data_url(b"x" * 1002)], ErrorCode.TOO_LARGE),
        ([data_url()] * 4, ErrorCode.TOO_LARGE),
        (["data:image/png;base64,abc"], ErrorCode.BAD_REQUEST),  # bad padding
        (["data:image/png;base64,a"], ErrorCode.BAD_REQUEST),
        (["data:image/png;base64,@@@@"], ErrorCode.BAD_REQUEST),
        (["data:image/png," + "x" * 8], ErrorCode.BAD_REQUEST),  # not base64
        (["data:image/png;charset=x;base64,QUJD"], ErrorCode.BAD_REQUEST),
        (["https://example.com/" + "a" * 2048], ErrorCode.BAD_REQUEST),
        (["ftp://example.com/a.png"], ErrorCode.BAD_REQUEST),
        (["file:///etc/passwd"], ErrorCode.BAD_REQUEST),
        (["javascript:alert(1)"], ErrorCode.BAD_REQUEST),
        (["//example.com/a.png"], ErrorCode.BAD_REQUEST),
        (["cat.png"], ErrorCode.BAD_REQUEST),
        ([""], ErrorCode.BAD_REQUEST),
    ],
    ids=[
        "svg",
        "html",
        "octet-stream",
        "one byte too large",
        "too large",
        "too many",
        "bad padding",
        "one character",
        "not base64 alphabet",
        "not base64 encoded",
        "extra parameter",
        "over-long URL",
        "ftp",
        "file",
        "javascript",
        "scheme-relative",
        "relative",
        "empty",
    ],
)
def test_refused_images(images: list[str], code: ErrorCode) -> None:
    assert refused(images).code == code


def test_the_error_names_the_offending_image() -> None:
    error = refused(["https://example.com/ok.png", data_url(mime="image/bmp")])
    assert "images[1]" in error.message


def test_the_count_is_checked_before_any_image_is_decoded() -> None:
    assert refused(["not an image"] * 4).code == ErrorCode.TOO_LARGE


@pytest.mark.parametrize("payload", ["====", "QQ==QQ==", "ab=cd"])
def test_malformed_base64_padding_is_refused(payload: str) -> None:
    assert refused([f"data:image/png;base64,{payload}"]).code == ErrorCode.BAD_REQUEST


def test_empty_image_payload_is_refused() -> None:
    assert refused(["data:image/png;base64,"]).code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("size", "image"),
    [
        (1000, data_url(b"x" * 1000)),  # two '=' of padding
        (1001, data_url(b"x" * 1001)),  # one '=' of padding
        (999, "data:image/png;base64," + base64.encodebytes(b"x" * 990).decode()),  # wrapped
    ],
    ids=["two padding chars", "one padding char", "line-wrapped"],
)
def test_image_within_the_size_limit_is_accepted_however_it_is_encoded(
    size: int, image: str
) -> None:
    check_images([image], LimitsSettings(max_image_bytes=size))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://localhost/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "https://example.com.evil.test/cat.png",
        "https://evil.test/example.com/cat.png",
        "https://example.com@evil.test/cat.png",
        "https://evil.test#@example.com/",
        "http://[::1/cat.png",
    ],
)
def test_urls_off_the_allowed_hosts_are_refused(url: str) -> None:
    error = refused([url])
    assert error.code == ErrorCode.BAD_REQUEST and "data: URL" in error.message


def test_by_default_images_come_only_as_data_urls() -> None:
    limits = LimitsSettings()
    assert limits.image_url_hosts == []
    check_images([data_url()], limits)
    with pytest.raises(ProtocolError, match="not accepted"):
        check_images(["https://example.com/cat.png"], limits)


@pytest.mark.parametrize("host", ["https://cdn.example.com", "cdn.example.com:443", "", "*.x.com"])
def test_image_url_hosts_are_bare_host_names(host: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        LimitsSettings(image_url_hosts=[host])
