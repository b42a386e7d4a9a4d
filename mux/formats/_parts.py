"""Content-part helpers several formats share: tool-argument encoding (protocols.md F.4),
media types and data URLs (F.5), and the reasoning effort heuristic (F.6)."""

from __future__ import annotations

import base64
from typing import Any

from mux import ir
from mux.formats._json import finite
from mux.framing import FramingError, dumps, loads

__all__ = [
    "arguments_object",
    "compact_arguments",
    "data_url",
    "effort_for",
    "sniff_image_type",
    "sniff_media_type",
]

# The leading bytes of the media types models take inline: images, PDF, audio. Each entry:
# (offset, magic, media type); offset 8 entries sit after "RIFF" and a length.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),
    (8, b"WAVE", "audio/wav"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"ID3", "audio/mp3"),
)


def sniff_media_type(data: bytes) -> str | None:
    """The media type ``data`` starts like (PNG, JPEG, GIF, WebP, PDF, WAV, MP3), or None."""
    for offset, magic, media_type in _MAGIC:
        if data[offset : offset + len(magic)] == magic and (offset == 0 or data[:4] == b"RIFF"):
            return media_type
    return None


def sniff_image_type(data: bytes) -> str | None:
    """The image media type ``data`` starts like (PNG, JPEG, GIF, WebP), or None."""
    media_type = sniff_media_type(data)
    return media_type if media_type and media_type.startswith("image/") else None


def data_url(media_type: str | None, data: bytes) -> str:
    """Inline bytes as a base64 ``data:`` URL."""
    return f"data:{media_type or ''};base64,{base64.b64encode(data).decode()}"


def compact_arguments(value: dict[str, Any]) -> str:
    """A tool call's arguments object as the IR's compact JSON text."""
    return dumps(value).decode()


def arguments_object(text: str) -> dict[str, Any]:
    """The IR's arguments JSON text as the object Anthropic, Gemini and Ollama need (F.4):
    ``""`` is ``{}``; text that is not a JSON object (or holds numbers JSON cannot write
    back, like ``1e999``) is ``{"_raw": text}``, never a string where an object belongs."""
    if not text.strip():
        return {}
    try:
        value = loads(text)
    except FramingError:
        return {"_raw": text}
    return value if isinstance(value, dict) and finite(value) else {"_raw": text}


# F.6's effort <-> budget heuristic (not standardised): the highest budget of each level.
_EFFORT_CEILINGS = ((0, "none"), (2048, "low"), (8192, "medium"))


def effort_for(config: ir.ReasoningConfig) -> str | None:
    """A reasoning effort level for ``config``: its own, or one derived from its budget."""
    if config.effort is not None:
        return config.effort
    if config.enabled is False:
        return "none"
    if config.budget_tokens is None:
        return None
    return next((e for top, e in _EFFORT_CEILINGS if config.budget_tokens <= top), "high")
