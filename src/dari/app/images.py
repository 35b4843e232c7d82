"""Checks on the ``images`` of a chat: data: URLs of known types and bounded size, or http(s)."""

from __future__ import annotations

import base64
import binascii
import re

from dari.protocol.errors import ErrorCode, ProtocolError
from dari.settings import LimitsSettings

ALLOWED_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>[A-Za-z0-9+/=\s]*)", re.S)
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
            continue
        match = _DATA_URL.fullmatch(image)
        if match is None:
            raise ProtocolError(f"images[{index}]: expected a base64 data: URL or an http(s) URL")
        if match["mime"] not in ALLOWED_TYPES:
            raise ProtocolError(
                f"images[{index}]: type {match['mime']} not allowed (png, jpeg, gif, webp)"
            )
        size = len(match["data"]) * 3 // 4
        if size > limits.max_image_bytes:
            raise ProtocolError(
                f"images[{index}]: larger than {limits.max_image_bytes} bytes",
                code=ErrorCode.TOO_LARGE,
            )
        try:
            base64.b64decode(match["data"], validate=False)
        except (binascii.Error, ValueError):
            raise ProtocolError(f"images[{index}]: invalid base64") from None
