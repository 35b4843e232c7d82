"""Checks on the ``images`` of a chat: data: URLs of known types and bounded size, or http(s)
URLs on the hosts ``limits.image_url_hosts`` allows (none by default)."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from dari.protocol.errors import ErrorCode, ProtocolError
from dari.settings import LimitsSettings

ALLOWED_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# Strict base64: letters, then at most two '=' of padding at the very end.
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>[A-Za-z0-9+/]*={0,2})")
_WHITESPACE = re.compile(r"\s+")
_MAX_URL = 2048


def check_images(images: list[str], limits: LimitsSettings) -> None:
    if len(images) > limits.max_images:
        raise ProtocolError(
            f"at most {limits.max_images} images per message", code=ErrorCode.TOO_LARGE
        )
    for index, image in enumerate(images):
        if image.startswith(("http://", "https://")):
            if len(image) > _MAX_URL:
                raise ProtocolError(f"images[{index}]: URL longer than {_MAX_URL} characters")
            if _url_host(image) not in limits.image_url_hosts:
                raise ProtocolError(
                    f"images[{index}]: image URLs from this host are not accepted; "
                    "send the image as a base64 data: URL"
                )
            continue
        # Line-wrapped base64 (RFC 2045) is accepted; browsers send it unwrapped.
        match = _DATA_URL.fullmatch(_WHITESPACE.sub("", image) if "\n" in image else image)
        if match is None:
            raise ProtocolError(f"images[{index}]: expected a base64 data: URL or an http(s) URL")
        if match["mime"] not in ALLOWED_TYPES:
            raise ProtocolError(
                f"images[{index}]: type {match['mime']} not allowed (png, jpeg, gif, webp)"
            )
        payload = match["data"]
        # Refuse the clearly oversized before decoding them (4 characters carry 3 bytes).
        if len(payload) // 4 * 3 > limits.max_image_bytes + 3:
            raise _too_large(index, limits)
        try:
            decoded = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(f"images[{index}]: invalid base64") from None
        if not decoded:
            raise ProtocolError(f"images[{index}]: empty image")
        if len(decoded) > limits.max_image_bytes:
            raise _too_large(index, limits)


def _url_host(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if "@" in parts.netloc:  # https://allowed.example@elsewhere/: refused, not parsed
        return None
    return parts.hostname.rstrip(".") if parts.hostname else None


def _too_large(index: int, limits: LimitsSettings) -> ProtocolError:
    return ProtocolError(
        f"images[{index}]: larger than {limits.max_image_bytes} bytes", code=ErrorCode.TOO_LARGE
    )
