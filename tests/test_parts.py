"""The content-part helpers the formats share (mux/formats/_parts.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mux import ir
from mux.formats._parts import (
    arguments_object,
    compact_arguments,
    data_url,
    effort_for,
    sniff_image_type,
    sniff_media_type,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.mark.parametrize(
    ("data", "media_type", "image_type"),
    [
        (PNG, "image/png", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg", "image/jpeg"),
        (b"GIF87a\x01\x00", "image/gif", "image/gif"),
        (b"GIF89a..", "image/gif", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp", "image/webp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav", None),
        (b"XXXX\x24\x00\x00\x00WEBPVP8 ", None, None),  # WEBP only counts after RIFF
        (b"%PDF-1.7", "application/pdf", None),
        (b"ID3\x04", "audio/mp3", None),
        (b"", None, None),
    ],
)
def test_sniffing(data: bytes, media_type: str | None, image_type: str | None) -> None:
    assert sniff_media_type(data) == media_type
    assert sniff_image_type(data) == image_type


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", {}),
        ("  ", {}),
        ('{ "a" : [1, 2.5] }', {"a": [1, 2.5]}),
        ("[1]", {"_raw": "[1]"}),
        ('"x"', {"_raw": '"x"'}),
        ("{not json", {"_raw": "{not json"}),
        ('{"a": 1e999}', {"_raw": '{"a": 1e999}'}),
        ('{"a": NaN}', {"_raw": '{"a": NaN}'}),
    ],
)
def test_arguments_object(text: str, value: dict[str, Any]) -> None:
    """F.4: tool arguments go out as an object, never a string."""
    assert arguments_object(text) == value


def test_compact_arguments_round_trips_through_arguments_object() -> None:
    value = {"city": "Paris", "days": [1, 2], "nested": {"ok": True}}
    text = compact_arguments(value)
    assert text == '{"city":"Paris","days":[1,2],"nested":{"ok":true}}'
    assert arguments_object(text) == value


def test_data_url() -> None:
    assert data_url("image/png", b"\x00\x01") == "data:image/png;base64,AAE="
    assert data_url(None, b"") == "data:;base64,"


@pytest.mark.parametrize(
    ("config", "effort"),
    [
        (ir.ReasoningConfig(effort="high", budget_tokens=10), "high"),
        (ir.ReasoningConfig(enabled=False), "none"),
        (ir.ReasoningConfig(budget_tokens=0), "none"),
        (ir.ReasoningConfig(budget_tokens=2048), "low"),
        (ir.ReasoningConfig(budget_tokens=8000), "medium"),
        (ir.ReasoningConfig(budget_tokens=32000), "high"),
        (ir.ReasoningConfig(enabled=True), None),
    ],
)
def test_effort_for(config: ir.ReasoningConfig, effort: str | None) -> None:
    assert effort_for(config) == effort
