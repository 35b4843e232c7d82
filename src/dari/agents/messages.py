"""How history and images become a model's messages, shared by the model backends."""

from __future__ import annotations

from typing import Any

# A report was not written by the model being asked; the prefix keeps it from taking the report
# as its own words.
REPORT_PREFIX = "[Report from a delegated task]\n"


def report_text(content: str) -> str:
    return REPORT_PREFIX + content


def content_parts(text: str, images: list[str]) -> str | list[dict[str, Any]]:
    """Plain text, or a text part plus one ``image_url`` part per image (data: or http URL).

    The same shape serves OpenAI's chat completions and LangChain's multimodal messages.
    """
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts.extend({"type": "image_url", "image_url": {"url": url}} for url in images)
    return parts
