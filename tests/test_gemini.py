"""mux.formats.gemini: round trips against the projection, the schema cleaner, validation,
and what google-genai needs (driven over a mock transport).

The properties check ``parse(render(x)) == projection(x)`` for generated requests, responses
and streams (both stream framings, the bytes split at random places); the tables check the
mapping rules one by one; the SDK tests run the real ``google-genai`` client against bodies
and streams this module renders, and read the requests it sends.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mux import ir
from mux.errors import MuxError, RequestError, UpstreamError
from mux.formats import gemini
from mux.formats.gemini import StreamParser, StreamRenderer, clean_schema
from mux.framing import SSEDecoder, dumps
from tests import strategies as strats
from tests.strategies import feed, splits, wire
from tests.conftest import FIXTURES
from tests.projections import gemini as projection

fast = settings(deadline=None)  # examples: the profile's (conftest)


def render_stream(events: Sequence[ir.Event], sse: bool = True) -> bytes:
    renderer = StreamRenderer(ir.Request(model="m", stream=True), sse=sse)
    return b"".join(renderer.render(e) for e in events)


def parse_stream(pieces: Sequence[bytes], sse: bool = True) -> list[ir.Event]:
    return feed(StreamParser(sse=sse), pieces)


def note_features(value: object) -> None:
    for label in sorted(strats.features(value)):
        event(label)


SIGNATURE = base64.b64encode(b"\xfa\xfb\xfc signature").decode()  # holds + and /

# --------------------------------------------------------------------------------------------
# Round trips


@fast
@given(strats.requests())
def test_request_round_trip(request: ir.Request) -> None:
    """parse_request(render_request(r)) is the Gemini projection of r."""
    note_features(request)
    assert gemini.parse_request(wire(gemini.render_request(request))) == projection.request(request)


@fast
@given(strats.requests())
def test_request_render_is_stable(request: ir.Request) -> None:
    """What Gemini can say survives any number of trips: projecting twice changes nothing."""
    once = projection.request(request)
    assert projection.request(once) == once
    assert gemini.parse_request(wire(gemini.render_request(once))) == once


@fast
@given(strats.responses())
def test_response_round_trip(response: ir.Response) -> None:
    """parse_response(render_response(r)) is the Gemini projection of r."""
    note_features(response)
    parsed = gemini.parse_response(wire(gemini.render_response(response)))
    assert parsed == projection.response(response)


@fast
@given(strats.event_streams(), st.booleans(), st.data())
def test_stream_round_trip(events: list[ir.Event], sse: bool, data: st.DataObject) -> None:
    """Rendered (SSE or JSON array), split anywhere and parsed, a stream is its Gemini
    projection, and both follow the IR grammar."""
    note_features(events)
    request = ir.Request(model="m", stream=True)
    pieces = data.draw(splits(render_stream(events, sse)))
    parsed = parse_stream(pieces, sse)
    strats.check_stream(parsed)
    assert parsed == projection.events(events, request)


# --------------------------------------------------------------------------------------------
# The schema cleaner (F.7)


SCHEMA_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "refs inlined from $defs and definitions, siblings kept",
        {
            "type": "object",
            "properties": {
                "a": {"$ref": "#/$defs/A", "description": "an A"},
                "b": {"$ref": "#/definitions/B"},
            },
            "$defs": {"A": {"type": "string", "title": "A"}},
            "definitions": {"B": {"type": "integer"}},
        },
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "title": "A", "description": "an A"},
                "b": {"type": "integer"},
            },
        },
    ),
    (
        "a reference cycle is cut to an object",
        {
            "type": "object",
            "properties": {"node": {"$ref": "#/$defs/Node"}},
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}
                    },
                }
            },
        },
        {
            "type": "object",
            "properties": {
                "node": {
                    "type": "object",
                    "properties": {"children": {"type": "array", "items": {"type": "object"}}},
                }
            },
        },
    ),
    (
        "an unknown ref is dropped",
        {"type": "object", "properties": {"x": {"$ref": "https://example.com/s.json"}}},
        {"type": "object", "properties": {"x": {}}},
    ),
    (
        "const is a one-value string enum",
        {"type": "object", "properties": {"k": {"const": 3}}},
        {"type": "object", "properties": {"k": {"enum": ["3"], "type": "string"}}},
    ),
    (
        "enum values stringified, the type made string (uppercase kept)",
        {"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "enum": [1, 2, True, None]}}},
        {
            "type": "OBJECT",
            "properties": {"n": {"type": "STRING", "enum": ["1", "2", "true", "null"]}},
        },
    ),
    (
        "type [T, null] is nullable T; other type lists an anyOf",
        {
            "type": "object",
            "properties": {
                "a": {"type": ["string", "null"]},
                "b": {"type": ["string", "integer"]},
                "c": {"type": "null"},
            },
        },
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "nullable": True},
                "b": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "c": {"nullable": True},
            },
        },
    ),
    (
        "oneOf is anyOf; a null member is nullable and one member left is merged",
        {
            "type": "object",
            "properties": {
                "a": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                "b": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "B"},
            },
        },
        {
            "type": "object",
            "properties": {
                "a": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                "b": {"description": "B", "nullable": True, "type": "string"},
            },
        },
    ),
    (
        "allOf merged: properties and required join",
        {
            "type": "object",
            "allOf": [
                {"properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "number"}}, "required": ["b"]},
            ],
        },
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    ),
    (
        "unsupported keys dropped, required limited to declared properties",
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "x",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "s": {
                    "type": "string",
                    "format": "date-time",
                    "minLength": 1,
                    "pattern": "^a",
                    "examples": ["a"],
                    "x-vendor": 1,
                },
                "n": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 2, "maximum": 9},
                "l": {"type": "array", "items": {"type": "string"}, "uniqueItems": True,
                      "prefixItems": [{"type": "string"}], "minItems": 1},  # fmt: skip
            },
            "required": ["s", "ghost"],
            "not": {"type": "null"},
            "if": {}, "then": {}, "else": {},  # fmt: skip
            "patternProperties": {},
            "$comment": "c",
        },
        {
            "type": "object",
            "properties": {
                "s": {"type": "string", "format": "date-time", "minLength": 1, "pattern": "^a"},
                "n": {"type": "number", "maximum": 9},
                "l": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            },
            "required": ["s"],
        },
    ),
    (
        "Gemini's own schema passes unchanged",
        {
            "type": "OBJECT",
            "properties": {
                "r": {"type": "STRING", "description": "why", "nullable": True},
                "s": {"type": "INTEGER", "minimum": 1, "maximum": 100},
            },
            "required": ["r", "s"],
            "propertyOrdering": ["r", "s"],
        },
        {
            "type": "OBJECT",
            "properties": {
                "r": {"type": "STRING", "description": "why", "nullable": True},
                "s": {"type": "INTEGER", "minimum": 1, "maximum": 100},
            },
            "required": ["r", "s"],
            "propertyOrdering": ["r", "s"],
        },
    ),
]


@pytest.mark.parametrize(
    ("name", "schema", "cleaned"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES]
)
def test_clean_schema(name: str, schema: dict[str, Any], cleaned: dict[str, Any]) -> None:
    """Each rule of F.7's sanitizer; the cleaner never changes its input."""
    before = json.dumps(schema, sort_keys=True)
    assert clean_schema(schema) == cleaned
    assert json.dumps(schema, sort_keys=True) == before
    assert clean_schema(cleaned) == cleaned


_SCHEMA_LEAVES = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["string", "integer", ["number", "null"], "null", "OBJECT"]),
        "const": strats.json_values(),
        "enum": st.lists(strats.json_values(), max_size=3),
        "description": strats.short_texts,
        "additionalProperties": st.booleans(),
        "$ref": st.sampled_from(["#/$defs/A", "#/$defs/missing", "#/definitions/B"]),
    },
)


def _json_schemas() -> st.SearchStrategy[Any]:
    return st.recursive(
        _SCHEMA_LEAVES,
        lambda children: st.fixed_dictionaries(
            {},
            optional={
                "properties": st.dictionaries(strats.names, children, max_size=3),
                "items": children,
                "anyOf": st.lists(children, max_size=3),
                "oneOf": st.lists(children, max_size=2),
                "allOf": st.lists(children, max_size=2),
                "required": st.lists(strats.names, max_size=2),
                "$defs": st.fixed_dictionaries({"A": children}),
                "definitions": st.fixed_dictionaries({"B": children}),
            },
        ),
        max_leaves=8,
    )


_ACCEPTED = {
    "type", "format", "title", "description", "nullable", "enum", "items", "properties",
    "required", "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum",
    "maximum", "minProperties", "maxProperties", "anyOf", "propertyOrdering", "default",
    "example",
}  # fmt: skip


_KEYWORDS = [*sorted(_ACCEPTED), "$ref", "$defs", "definitions", "allOf", "oneOf", "const",
             "additionalProperties", "any_of", "x"]  # fmt: skip


def _wild_schemas() -> st.SearchStrategy[Any]:
    """Objects of schema keywords holding anything at all."""
    return st.recursive(
        strats.json_values() | st.sampled_from(["#/$defs/x", "null", "object"]),
        lambda children: st.dictionaries(st.sampled_from(_KEYWORDS), children, max_size=4)
        | st.lists(children, max_size=3),
        max_leaves=12,
    )


def _check_subset(schema: dict[str, Any]) -> None:
    assert set(schema) <= _ACCEPTED, set(schema) - _ACCEPTED
    assert all(isinstance(v, str) for v in schema.get("enum", ()))
    assert "type" not in schema or isinstance(schema["type"], str)
    for sub in [*schema.get("properties", {}).values(), *schema.get("anyOf", ())]:
        _check_subset(sub)
    if "items" in schema:
        _check_subset(schema["items"])


@fast
@given(st.one_of(_json_schemas(), strats.schemas(), _wild_schemas()))
def test_clean_schema_gives_the_subset_and_is_idempotent(schema: dict[str, Any]) -> None:
    """Whatever JSON Schema comes in, only F.7's accepted keys come out, enums are strings,
    and cleaning a cleaned schema changes nothing."""
    cleaned = clean_schema(schema)
    _check_subset(cleaned)
    assert clean_schema(cleaned) == cleaned


def test_zero_argument_functions_send_no_parameters() -> None:
    """F.7: omit parameters for zero-argument functions; a client's parametersJsonSchema goes
    back untouched."""
    tools = [
        ir.Tool(name="now", parameters={"type": "object", "properties": {}}),
        ir.Tool(name="ping", parameters={"type": "object", "additionalProperties": False}),
        ir.Tool(name="f", parameters={"type": "object", "properties": {"a": {"const": "x"}}}),
    ]
    body = gemini.render_request(ir.Request(model="m", tools=tools))
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "now"},
                {"name": "ping"},
                {
                    "name": "f",
                    "parameters": {
                        "type": "object",
                        "properties": {"a": {"enum": ["x"], "type": "string"}},
                    },
                },
            ]
        }
    ]
    full = {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {}}}
    client = {
        "contents": [],
        "tools": [
            {"functionDeclarations": [{"name": "g", "parametersJsonSchema": full}]},
            {"googleSearch": {}},
        ],
    }
    assert gemini.render_request(gemini.parse_request(client)) == client


# --------------------------------------------------------------------------------------------
# Requests: mapping rules


def test_snake_case_request_reads_like_camel_case() -> None:
    """D.1: official samples use both spellings; the IR is the same."""
    camel = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Look"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"mimeType": "application/pdf", "fileUri": "https://x/a.pdf"}},
                ],
            },
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "f", "response": {"output": "ok"}}}],
            },
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        "generationConfig": {
            "maxOutputTokens": 9,
            "topP": 0.5,
            "topK": 3,
            "stopSequences": ["END"],
            "candidateCount": 2,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.2,
            "responseMimeType": "application/json",
            "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
        },
    }
    snake = {
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Look"},
                    {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"file_data": {"mime_type": "application/pdf", "file_uri": "https://x/a.pdf"}},
                ],
            },
            {"role": "model", "parts": [{"function_call": {"name": "f", "args": {"a": 1}}}]},
            {
                "role": "user",
                "parts": [{"function_response": {"name": "f", "response": {"output": "ok"}}}],
            },
        ],
        "tool_config": {
            "function_calling_config": {"mode": "ANY", "allowed_function_names": ["f"]}
        },
        "generation_config": {
            "max_output_tokens": 9,
            "top_p": 0.5,
            "top_k": 3,
            "stop_sequences": ["END"],
            "candidate_count": 2,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "response_mime_type": "application/json",
            "thinking_config": {"thinking_budget": 1024, "include_thoughts": True},
        },
    }
    request = gemini.parse_request(camel)
    assert gemini.parse_request(snake) == request
    assert request == ir.Request(
        model="",
        messages=[
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="Be brief.")]),
            ir.Message(
                role=ir.Role.USER,
                content=[
                    ir.Text(text="Look"),
                    ir.Image(media_type="image/png", data=b"\x89PNG\r\n\x1a\n"),
                    ir.Document(media_type="application/pdf", url="https://x/a.pdf"),
                ],
            ),
            ir.Message(
                role=ir.Role.ASSISTANT,
                content=[ir.ToolCall(id="call_0", name="f", arguments='{"a":1}')],
            ),
            ir.Message(
                role=ir.Role.TOOL,
                content=[ir.ToolResult(call_id="call_0", content=[ir.Text(text="ok")], name="f")],
            ),
        ],
        tool_choice=ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name="f"),
        max_tokens=9,
        top_p=0.5,
        top_k=3,
        stop=["END"],
        n=2,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        response_format=ir.ResponseFormat(type=ir.ResponseFormatType.JSON_OBJECT),
        reasoning=ir.ReasoningConfig(budget_tokens=1024, include_thoughts=True),
        extra=ir.Extra(format="gemini", fields={}),
    )
    rendered = gemini.render_request(request)
    assert rendered["generationConfig"] == camel["generationConfig"]
    assert rendered["toolConfig"] == camel["toolConfig"]


def test_parts_by_media_type() -> None:
    """inlineData: image/* an image, audio/* audio (subtype as format), else a document;
    fileData: an image by type or URL extension, else a document."""
    parts = [
        {"inlineData": {"mimeType": "image/webp", "data": "AAAA"}},
        {"inlineData": {"mimeType": "audio/mpeg", "data": "AAAA"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "AAAA"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "AAAA"}},
        {"inlineData": {"mimeType": "video/mp4", "data": "-_8="}},  # URL-safe, as the SDK sends
        {"fileData": {"fileUri": "https://x/cat.JPG?size=2"}},
        {"fileData": {"fileUri": "https://www.youtube.com/watch?v=1"}},
        {"fileData": {"mimeType": "image/png", "fileUri": "files/abc"}},
        {"executableCode": {"language": "PYTHON", "code": "1"}},  # no IR form: dropped
    ]
    request = gemini.parse_request({"contents": [{"parts": parts}]})
    assert request.messages[0].content == (
        ir.Image(media_type="image/webp", data=b"\0\0\0"),
        ir.Audio(data=b"\0\0\0", format="mp3"),
        ir.Audio(data=b"\0\0\0", format="wav"),
        ir.Document(media_type="application/pdf", data=b"\0\0\0"),
        ir.Document(media_type="video/mp4", data=b"\xfb\xff"),
        ir.Image(url="https://x/cat.JPG?size=2"),
        ir.Document(url="https://www.youtube.com/watch?v=1"),
        ir.Image(media_type="image/png", url="files/abc"),
    )


def test_inline_parts_without_a_type_are_sniffed() -> None:
    body = gemini.render_request(
        ir.Request(
            model="m",
            messages=[
                ir.Message(
                    role=ir.Role.USER,
                    content=[
                        ir.Image(data=b"\xff\xd8\xff\xe0"),
                        ir.Image(data=b"?"),
                        ir.Document(data=b"%PDF-1.7"),
                        ir.Document(data=b"?"),
                        ir.Document(file_id="file-1"),  # nothing Gemini can read: dropped
                    ],
                )
            ],
        )
    )
    assert [p["inlineData"]["mimeType"] for p in body["contents"][0]["parts"]] == [
        "image/jpeg", "image/png", "application/pdf", "application/octet-stream",
    ]  # fmt: skip


def test_parts_by_url_get_a_mime_type() -> None:
    """fileData needs a mimeType: a part's own; else its URL extension's; else image/jpeg
    for an image, so that an image reads back as an image; a document whose URL says
    nothing (Files API, YouTube) goes without one and reads back as a document."""
    parts: list[ir.Part] = [
        ir.Image(url="https://example.com/cat"),
        ir.Image(url="https://example.com/cat.PNG?size=2"),
        ir.Image(url="https://example.com/cat.webp#top"),
        ir.Image(url="https://example.com/scan.pdf"),  # says an image: sent as one
        ir.Image(media_type="image/gif", url="https://example.com/cat.png"),
        ir.Document(url="https://example.com/report.pdf"),
        ir.Document(url="https://example.com/notes.txt"),
        ir.Document(url="https://generativelanguage.googleapis.com/v1beta/files/abc"),
        ir.Document(url="https://www.youtube.com/watch?v=1"),
    ]
    request = ir.Request(model="m", messages=[ir.Message(role=ir.Role.USER, content=parts)])
    body = gemini.render_request(request)
    assert [p["fileData"] for p in body["contents"][0]["parts"]] == [
        {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat"},
        {"mimeType": "image/png", "fileUri": "https://example.com/cat.PNG?size=2"},
        {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp#top"},
        {"mimeType": "image/jpeg", "fileUri": "https://example.com/scan.pdf"},
        {"mimeType": "image/gif", "fileUri": "https://example.com/cat.png"},
        {"mimeType": "application/pdf", "fileUri": "https://example.com/report.pdf"},
        {"mimeType": "text/plain", "fileUri": "https://example.com/notes.txt"},
        {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"},
        {"fileUri": "https://www.youtube.com/watch?v=1"},
    ]
    parsed = gemini.parse_request(wire(body))
    assert [type(p) for p in parsed.messages[0].content] == [type(p) for p in parts]
    assert parsed.messages[0].content[0] == ir.Image(
        media_type="image/jpeg", url="https://example.com/cat"
    )
    assert parsed == attrs.evolve(projection.request(request), model="")


@pytest.mark.parametrize(
    ("url", "media_type"),
    [
        ("https://x/a.png", "image/png"),
        ("https://x/a.JPG?s=1#f", "image/jpeg"),
        ("https://x/a.jpeg", "image/jpeg"),
        ("https://x/a.gif", "image/gif"),
        ("https://x/a.webp", "image/webp"),
        ("https://x/a.heic", "image/heic"),
        ("https://x/a.pdf", "application/pdf"),
        ("https://x/a.md", "text/markdown"),
        ("gs://bucket/clip.mp4", "video/mp4"),
        ("https://x/a.tiff", "image/tiff"),  # Python's table
        ("https://x/a", None),
        ("https://x/a.nosuchtype", None),
        ("https://x/dir.d/", None),
        ("https://www.youtube.com/watch?v=a.b", None),
    ],
)
def test_url_media_type(url: str, media_type: str | None) -> None:
    assert gemini.url_media_type(url) == media_type


def test_call_ids_are_minted_and_results_linked_by_name() -> None:
    """F.4: calls without ids get call_<n>; a response without an id answers the oldest
    unanswered call of its name; ids the client gave are kept."""
    request = gemini.parse_request(
        {
            "contents": [
                {"role": "user", "parts": [{"text": "go"}]},
                {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "a", "args": {}}},
                        {"functionCall": {"name": "b"}},
                        {"functionCall": {"name": "a", "args": {"x": 1}, "id": "mine"}},
                    ],
                },
                {
                    "role": "function",
                    "parts": [
                        {"functionResponse": {"name": "b", "response": {"error": "no"}}},
                        {"functionResponse": {"name": "a", "response": {"output": "1"}}},
                        {"functionResponse": {"name": "a", "id": "mine", "response": {"x": [1]}}},
                        {"functionResponse": {"name": "c", "response": {}}},
                    ],
                },
            ]
        }
    )
    calls = request.messages[1].content
    assert [(c.id, c.name, c.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("call_0", "a", "{}"), ("call_1", "b", "{}"), ("mine", "a", '{"x":1}'),
    ]  # fmt: skip
    assert request.messages[2] == ir.Message(
        role=ir.Role.TOOL,
        content=[
            ir.ToolResult(call_id="call_1", content=[ir.Text(text="no")], is_error=True, name="b"),
            ir.ToolResult(call_id="call_0", content=[ir.Text(text="1")], name="a"),
            ir.ToolResult(call_id="mine", content=[ir.Text(text='{"x":[1]}')], name="a"),
            ir.ToolResult(call_id="call_2", name="c"),
        ],
    )


def test_results_merge_into_one_turn_with_rebuilt_names() -> None:
    """F.4: OpenAI-style tool messages (one per result, no names) become one user content,
    one functionResponse per call, in order, named after the calls; media ride in parts."""
    calls = [
        ir.ToolCall(id="call_a", name="get_weather", arguments='{"city":"Paris"}'),
        ir.ToolCall(id="call_b", name="get_time", arguments=""),
    ]
    request = ir.Request(
        model="m",
        messages=[
            ir.Message(role=ir.Role.USER, content=[ir.Text(text="hi")]),
            ir.Message(role=ir.Role.ASSISTANT, content=[ir.Text(text=""), *calls]),
            ir.Message(
                role=ir.Role.TOOL,
                content=[
                    ir.ToolResult(
                        call_id="call_a",
                        content=[
                            ir.Text(text="sunny"), ir.Image(media_type="image/png", data=b"1"),
                        ],
                    )
                ],
            ),
            ir.Message(role=ir.Role.TOOL, content=[ir.ToolResult(call_id="call_b", is_error=True)]),
            ir.Message(role=ir.Role.USER, content=[]),  # empty: never sent
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="late system")]),
        ],
    )
    body = gemini.render_request(request)
    assert body["systemInstruction"] == {"role": "user", "parts": [{"text": "late system"}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "id": "call_a", "name": "get_weather", "args": {"city": "Paris"},
                    }
                },
                {"functionCall": {"id": "call_b", "name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": "call_a",
                        "name": "get_weather",
                        "response": {"output": "sunny"},
                        "parts": [{"inlineData": {"mimeType": "image/png", "data": "MQ=="}}],
                    }
                },
                {
                    "functionResponse": {
                        "id": "call_b", "name": "get_time", "response": {"error": ""},
                    }
                },
            ],
        },
    ]


def assistant(*parts: ir.Part) -> ir.Request:
    return ir.Request(model="m", messages=[ir.Message(role=ir.Role.ASSISTANT, content=parts)])


def test_signatures_go_back_on_their_parts() -> None:
    """G.2: a call's signature on its functionCall part, a reasoning's on its thought part, a
    text's (an empty reasoning part after it) on the text part."""
    request = gemini.parse_request(
        {
            "contents": [
                {
                    "role": "model",
                    "parts": [
                        {"text": "hm", "thought": True, "thoughtSignature": "AAAA"},
                        {"text": "Checking.", "thoughtSignature": "BBBB"},
                        {"functionCall": {"name": "f", "id": "c"}, "thoughtSignature": "CCCC"},
                        {"text": "", "thoughtSignature": "DDDD"},
                    ],
                }
            ]
        }
    )
    assert request.messages[0].content == (
        ir.Reasoning(text="hm", signature="AAAA"),
        ir.Text(text="Checking."),
        ir.Reasoning(signature="BBBB"),
        ir.ToolCall(id="c", name="f", signature="CCCC"),
        ir.Reasoning(signature="DDDD"),
    )
    assert gemini.render_request(request)["contents"][0]["parts"] == [
        {"text": "hm", "thought": True, "thoughtSignature": "AAAA"},
        {"text": "Checking.", "thoughtSignature": "BBBB"},
        {"functionCall": {"id": "c", "name": "f", "args": {}}, "thoughtSignature": "CCCC"},
        {"text": "", "thought": True, "thoughtSignature": "DDDD"},
    ]


def test_a_trailing_signature_goes_to_the_reasoning_before_it() -> None:
    """An empty text part carrying only a signature signs the reasoning part before it."""
    response = gemini.parse_response(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {"text": "thinking", "thought": True},
                            {"text": "", "thoughtSignature": SIGNATURE},
                        ]
                    }
                }
            ]
        }
    )
    assert response.content == (ir.Reasoning(text="thinking", signature=SIGNATURE),)


def test_signatures_of_other_origins_never_reach_gemini() -> None:
    """G.2: only a request of Gemini origin sends signatures, and only base64 ones."""
    parts = (
        ir.Reasoning(text="t", signature="EqQBCkYIBxgCKkB="),  # an Anthropic signature
        ir.ToolCall(id="c", name="f", signature=SIGNATURE),
    )
    foreign = assistant(*parts)
    assert gemini.render_request(foreign)["contents"][0]["parts"] == [
        {"text": "t", "thought": True},
        {"functionCall": {"id": "c", "name": "f", "args": {}}},
    ]
    for marked in (
        attrs.evolve(foreign, extra=ir.Extra(format="gemini")),
        attrs.evolve(foreign, origin=ir.Origin(format="gemini", body={})),
    ):
        sent = gemini.render_request(marked)["contents"][0]["parts"]
        assert [p.get("thoughtSignature") for p in sent] == ["EqQBCkYIBxgCKkB=", SIGNATURE]
    anthropic = attrs.evolve(foreign, origin=ir.Origin(format="anthropic", body={}))
    assert "thoughtSignature" not in str(gemini.render_request(anthropic))
    not_base64 = attrs.evolve(
        assistant(ir.ToolCall(id="c", name="f", signature="skip thought!")),
        extra=ir.Extra(format="gemini"),
    )
    assert "thoughtSignature" not in str(gemini.render_request(not_base64))


def test_url_safe_signatures_are_normalised() -> None:
    """The SDK sends bytes as URL-safe base64; signatures come back in the standard alphabet
    they were given in, so a signature from another provider stays byte-exact."""
    url_safe = SIGNATURE.replace("+", "-").replace("/", "_")
    assert url_safe != SIGNATURE
    request = gemini.parse_request(
        {"contents": [{"role": "model", "parts": [{"text": "x", "thought": True,
                                                   "thought_signature": url_safe}]}]}  # fmt: skip
    )
    assert request.messages[0].content == (ir.Reasoning(text="x", signature=SIGNATURE),)
    stand_in = "skip_thought_signature_validator"  # Google's, for foreign histories (G.2)
    call = {"functionCall": {"name": "f", "id": "c"}, "thoughtSignature": stand_in}
    replayed = gemini.parse_request({"contents": [{"role": "model", "parts": [call]}]})
    assert replayed.messages[0].content == (ir.ToolCall(id="c", name="f", signature=stand_in),)
    assert gemini.render_request(replayed)["contents"][0]["parts"] == [
        {"functionCall": {"id": "c", "name": "f", "args": {}}, "thoughtSignature": stand_in}
    ]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (ir.ToolChoice(mode=ir.ToolChoiceMode.AUTO), {"mode": "AUTO"}),
        (ir.ToolChoice(mode=ir.ToolChoiceMode.NONE), {"mode": "NONE"}),
        (ir.ToolChoice(mode=ir.ToolChoiceMode.REQUIRED), {"mode": "ANY"}),
        (
            ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name="f"),
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
        (ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL), {"mode": "ANY"}),
    ],
)
def test_tool_choice(choice: ir.ToolChoice, config: dict[str, Any]) -> None:
    body = gemini.render_request(ir.Request(model="m", tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_tool_configs_the_ir_cannot_say_travel_in_extra() -> None:
    for config in (
        {"mode": "ANY", "allowedFunctionNames": ["f", "g"]},
        {"mode": "VALIDATED"},
        {"mode": "AUTO", "allowedFunctionNames": []},
    ):
        body = {"contents": [], "toolConfig": {"functionCallingConfig": config}}
        assert gemini.render_request(gemini.parse_request(body)) == body


@pytest.mark.parametrize(
    ("config", "thinking"),
    [
        (ir.ReasoningConfig(enabled=False, effort="high"), {"thinkingBudget": 0}),
        (ir.ReasoningConfig(effort="none"), {"thinkingBudget": 0}),
        (ir.ReasoningConfig(effort="low", budget_tokens=99), {"thinkingLevel": "LOW"}),
        (ir.ReasoningConfig(effort="xhigh"), {"thinkingLevel": "HIGH"}),
        (ir.ReasoningConfig(budget_tokens=2048), {"thinkingBudget": 2048}),
        (ir.ReasoningConfig(enabled=True), {"thinkingBudget": -1}),
        (
            ir.ReasoningConfig(include_thoughts=True, summary="auto"),
            {"includeThoughts": True},
        ),
        (ir.ReasoningConfig(summary="auto"), None),
    ],
)
def test_thinking_config(config: ir.ReasoningConfig, thinking: dict[str, Any] | None) -> None:
    """F.6: disabled is a 0 budget, an effort a level, a budget a budget, enabled alone
    dynamic (-1)."""
    body = gemini.render_request(ir.Request(model="m", reasoning=config))
    assert body.get("generationConfig", {}).get("thinkingConfig") == thinking


@pytest.mark.parametrize(
    ("thinking", "config"),
    [
        ({"thinkingBudget": 0}, ir.ReasoningConfig(enabled=False)),
        ({"thinkingBudget": -1}, ir.ReasoningConfig(enabled=True)),
        ({"thinkingBudget": 512}, ir.ReasoningConfig(budget_tokens=512)),
        (
            {"thinkingLevel": "MINIMAL", "includeThoughts": False},
            ir.ReasoningConfig(effort="minimal", include_thoughts=False),
        ),
        ({}, None),
    ],
)
def test_thinking_config_read(thinking: dict[str, Any], config: ir.ReasoningConfig | None) -> None:
    body = {"contents": [], "generationConfig": {"thinkingConfig": thinking}}
    assert gemini.parse_request(body).reasoning == config


def test_response_formats() -> None:
    """json_schema is application/json + a cleaned responseSchema, json_object
    application/json, text text/plain; enum output stays in Extra."""
    schema = {"type": "object", "properties": {"a": {"type": ["string", "null"]}}}
    cases = [
        (
            ir.ResponseFormat(type=ir.ResponseFormatType.JSON_SCHEMA, schema=schema),
            {
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "object",
                    "properties": {"a": {"type": "string", "nullable": True}},
                },
            },
        ),
        (
            ir.ResponseFormat(type=ir.ResponseFormatType.JSON_OBJECT),
            {"responseMimeType": "application/json"},
        ),
        (ir.ResponseFormat(type=ir.ResponseFormatType.TEXT), {"responseMimeType": "text/plain"}),
    ]
    for format_, generation in cases:
        assert gemini.render_request(ir.Request(model="m", response_format=format_)) == {
            "contents": [],
            "generationConfig": generation,
        }
    enum = {
        "contents": [],
        "generationConfig": {
            "responseMimeType": "text/x.enum",
            "responseSchema": {"type": "STRING", "enum": ["a", "b"]},
        },
    }
    parsed = gemini.parse_request(enum)
    assert parsed.response_format is None
    assert gemini.render_request(parsed) == enum


def test_unknown_fields_come_back_in_place() -> None:
    """Fields the IR does not model, at the top level and inside the objects it does, come
    back where they were on a same-format hop."""
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "cachedContent": "cachedContents/1",
        "a.b": 1,  # keys are names, never paths
        "@type": "x",  # nor reserved words
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "f",
                        "parameters": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
                        "behavior": "NON_BLOCKING",
                    },
                ]
            },
            {"codeExecution": {}},
        ],
        "toolConfig": {"retrievalConfig": {"languageCode": "en"}},
        "generationConfig": {
            "responseModalities": ["TEXT"],
            "mediaResolution": "MEDIA_RESOLUTION_LOW",
            "thinkingConfig": {"thinkingBudget": 8, "futureKnob": 1},
        },
    }
    request = gemini.parse_request(body)
    assert request.extra is not None and request.extra.fields == {
        "safetySettings": body["safetySettings"],
        "cachedContent": "cachedContents/1",
        "@tools": [{"codeExecution": {}}],
        "@declarations": {"f": {"behavior": "NON_BLOCKING"}},
        "@toolConfig": {"retrievalConfig": {"languageCode": "en"}},
        "@generationConfig": {
            "responseModalities": ["TEXT"], "mediaResolution": "MEDIA_RESOLUTION_LOW",
        },
        "@thinkingConfig": {"futureKnob": 1},
        "a.b": 1,
        "@@type": "x",
    }
    assert gemini.render_request(request) == body


def test_real_gemini_cli_request_renders_back_whole() -> None:
    """Gemini CLI's captured request parses, and renders back with every field it carried
    (responseJsonSchema under its own name, systemInstruction's role)."""
    captured = json.loads((FIXTURES / "gemini-cli-generate.json").read_text())
    assert captured["path"].endswith(":generateContent")
    body = captured["body"]
    request = gemini.parse_request(body)
    assert [m.role for m in request.messages] == [ir.Role.SYSTEM, ir.Role.USER, ir.Role.USER]
    assert request.messages[2].content == (ir.Text(text="say hi"),)
    assert request.reasoning == ir.ReasoningConfig(effort="high", include_thoughts=True)
    assert request.response_format is not None
    assert request.response_format.schema == body["generationConfig"]["responseJsonSchema"]
    assert (request.temperature, request.top_p, request.top_k) == (1.0, 0.95, 64)
    assert gemini.render_request(request) == body


# --------------------------------------------------------------------------------------------
# Request validation

CONTENT = {"role": "user", "parts": [{"text": "hi"}]}


def with_parts(*parts: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": list(parts)}]}


INVALID: list[tuple[object, str | None, str]] = [
    ([], None, "request body: expected an object, got an array"),
    ({"contents": {}}, "contents", "contents: expected an array, got an object"),
    ({"contents": ["hi"]}, "contents[0]", "contents[0]: expected an object, got a string"),
    (
        {"contents": [CONTENT, {"role": "assistant", "parts": []}]},
        "contents[1].role",
        "contents[1].role: expected one of 'user', 'model', 'function', got 'assistant'",
    ),
    ({"contents": [{"role": "user"}]}, "contents[0].parts", "expected an array, got nothing"),
    (with_parts(3), "contents[0].parts[0]", "expected an object, got a number"),
    (
        with_parts({}),
        "contents[0].parts[0]",
        "expected a part with text, inlineData, fileData, functionCall or functionResponse",
    ),
    (with_parts({"text": 1}), "contents[0].parts[0].text", "expected a string, got a number"),
    (
        with_parts({"text": "x", "thought": "yes"}),
        "contents[0].parts[0].thought",
        "expected a boolean, got a string",
    ),
    (
        with_parts({"text": "x", "thoughtSignature": "not base64!"}),
        "contents[0].parts[0].thoughtSignature",
        "expected base64 data, got a string that is not base64",
    ),
    (
        with_parts({"inlineData": {"data": "AAAA"}}),
        "contents[0].parts[0].inlineData.mimeType",
        "expected a string, got nothing",
    ),
    (
        with_parts({"inline_data": {"mime_type": "image/png", "data": "@@"}}),
        "contents[0].parts[0].inline_data.data",
        "expected base64 data",
    ),
    (
        with_parts({"fileData": {"mimeType": "image/png"}}),
        "contents[0].parts[0].fileData.fileUri",
        "expected a string, got nothing",
    ),
    (
        with_parts({"functionCall": {"args": {}}}),
        "contents[0].parts[0].functionCall.name",
        "expected a string, got nothing",
    ),
    (
        with_parts({"functionCall": {"name": "f", "args": "{}"}}),
        "contents[0].parts[0].functionCall.args",
        "expected an object, got a string",
    ),
    (
        with_parts({"functionResponse": {"name": "f", "response": "ok"}}),
        "contents[0].parts[0].functionResponse.response",
        "expected an object, got a string",
    ),
    (
        with_parts({"functionResponse": {"name": "f", "response": {}, "parts": [{"text": "x"}]}}),
        "contents[0].parts[0].functionResponse.parts[0]",
        "expected a part with inlineData or fileData",
    ),
    (
        {"contents": [], "systemInstruction": {"parts": "x"}},
        "systemInstruction.parts",
        "expected an array, got a string",
    ),
    (
        {"contents": [], "generationConfig": []},
        "generationConfig",
        "generationConfig: expected an object, got an array",
    ),
    (
        {"contents": [], "generationConfig": {"maxOutputTokens": 0}},
        "generationConfig.maxOutputTokens",
        "expected an integer of at least 1, got 0",
    ),
    (
        {"contents": [], "generation_config": {"temperature": "hot"}},
        "generation_config.temperature",
        "expected a number, got a string",
    ),
    (
        {"contents": [], "generationConfig": {"stopSequences": ["a", 1]}},
        "generationConfig.stopSequences[1]",
        "expected a string, got a number",
    ),
    (
        {"contents": [], "generationConfig": {"thinkingConfig": {"thinkingBudget": 1.5}}},
        "generationConfig.thinkingConfig.thinkingBudget",
        "expected an integer, got 1.5",
    ),
    (
        {"contents": [], "generationConfig": {"responseSchema": []}},
        "generationConfig.responseSchema",
        "expected an object, got an array",
    ),
    ({"contents": [], "tools": {}}, "tools", "tools: expected an array, got an object"),
    (
        {"contents": [], "tools": [{"functionDeclarations": [{"description": "d"}]}]},
        "tools[0].functionDeclarations[0].name",
        "expected a string, got nothing",
    ),
    (
        {"contents": [], "tools": [{"functionDeclarations": [{"name": "f", "parameters": 1}]}]},
        "tools[0].functionDeclarations[0].parameters",
        "expected an object, got a number",
    ),
    (
        {"contents": [], "toolConfig": {"functionCallingConfig": {"mode": 1}}},
        "toolConfig.functionCallingConfig.mode",
        "expected a string, got a number",
    ),
    (
        {"contents": [], "toolConfig": {"functionCallingConfig": {"allowedFunctionNames": [1]}}},
        "toolConfig.functionCallingConfig.allowedFunctionNames[0]",
        "expected a string, got a number",
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), INVALID)
def test_invalid_requests_name_the_field(body: object, param: str | None, message: str) -> None:
    """A malformed request is a 400 RequestError whose message and param name the field."""
    with pytest.raises(RequestError) as raised:
        gemini.parse_request(body)
    assert raised.value.status == 400
    assert raised.value.param == param
    assert message in raised.value.message


@fast
@given(strats.json_values())
def test_any_json_parses_or_is_a_request_error(body: object) -> None:
    """Whatever JSON arrives (here, inside a plausible envelope), parse_request raises
    nothing but RequestError."""
    for candidate in (body, {"contents": body}, {"contents": [{"parts": body}]},
                      {"contents": [{"parts": [body]}]}, {"generationConfig": body}):  # fmt: skip
        try:
            gemini.parse_request(candidate)
        except RequestError:
            pass


# --------------------------------------------------------------------------------------------
# Responses


PROTOCOLS_RESPONSE = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "…", "thought": True},
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "CpQB",
                    },
                ],
            },
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": [],
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 20,
        "candidatesTokenCount": 12,
        "thoughtsTokenCount": 55,
        "totalTokenCount": 87,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mD.x/1",
}


def test_parse_response_reads_protocols_example() -> None:
    """D.3's example: STOP with a call is a tool turn; output = candidates + thoughts; ids
    minted from the response id; unknown fields kept where they were."""
    response = gemini.parse_response(PROTOCOLS_RESPONSE)
    assert response == ir.Response(
        id="mD.x/1",
        model="gemini-2.5-flash",
        content=[
            ir.Reasoning(text="…"),
            ir.ToolCall(
                id="call_mDx1_0", name="get_weather", arguments='{"city":"Paris"}', signature="CpQB"
            ),
        ],
        stop_reason=ir.StopReason.TOOL_USE,
        usage=ir.Usage(input_tokens=20, output_tokens=67, reasoning_tokens=55),
        extra=ir.Extra(
            format="gemini",
            fields={
                "@candidate": {"safetyRatings": []},
                "@usageMetadata": {"promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20}]},
            },
        ),
    )
    rendered = gemini.render_response(response)
    assert rendered["candidates"][0]["safetyRatings"] == []
    assert rendered["usageMetadata"] == PROTOCOLS_RESPONSE["usageMetadata"]


@pytest.mark.parametrize(
    ("finish", "calls", "stop"),
    [
        ("STOP", False, ir.StopReason.END_TURN),
        ("STOP", True, ir.StopReason.TOOL_USE),
        (None, False, ir.StopReason.END_TURN),
        ("MAX_TOKENS", True, ir.StopReason.MAX_TOKENS),
        ("SAFETY", False, ir.StopReason.CONTENT_FILTER),
        ("RECITATION", False, ir.StopReason.CONTENT_FILTER),
        ("BLOCKLIST", False, ir.StopReason.CONTENT_FILTER),
        ("PROHIBITED_CONTENT", False, ir.StopReason.CONTENT_FILTER),
        ("SPII", False, ir.StopReason.CONTENT_FILTER),
        ("IMAGE_SAFETY", False, ir.StopReason.CONTENT_FILTER),
        ("IMAGE_SOMETHING_NEW", False, ir.StopReason.CONTENT_FILTER),
        ("MALFORMED_FUNCTION_CALL", False, ir.StopReason.ERROR),
        ("OTHER", False, ir.StopReason.ERROR),
        ("stop", False, ir.StopReason.END_TURN),  # enums are case-insensitive
    ],
)
def test_finish_reasons(finish: str | None, calls: bool, stop: ir.StopReason) -> None:
    """F.2."""
    parts = [{"functionCall": {"name": "f"}}] if calls else [{"text": "x"}]
    candidate = {"content": {"parts": parts}} | ({"finishReason": finish} if finish else {})
    assert gemini.parse_response({"candidates": [candidate]}).stop_reason is stop


def test_blocked_prompt_is_an_empty_filtered_answer() -> None:
    """G.11: 200 with no candidates: empty content, content filter, never a crash."""
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    response = gemini.parse_response(body)
    assert response.content == ()
    assert response.stop_reason is ir.StopReason.CONTENT_FILTER
    assert response.usage == ir.Usage(input_tokens=4)
    assert gemini.parse_response({}).stop_reason is ir.StopReason.END_TURN


def test_usage_counts() -> None:
    """F.3: prompt includes cached and tool-use prompt tokens; candidates exclude thoughts."""
    usage = {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 60,
        "candidatesTokenCount": 10,
        "thoughtsTokenCount": 5,
        "toolUsePromptTokenCount": 7,
        "totalTokenCount": 122,
    }
    assert gemini.parse_response({"usageMetadata": usage}).usage == ir.Usage(
        input_tokens=107, output_tokens=15, cache_read_tokens=60, reasoning_tokens=5
    )
    rendered = gemini.render_response(
        ir.Response(
            id="r",
            model="m",
            usage=ir.Usage(input_tokens=100, output_tokens=15, cache_read_tokens=60,
                           cache_write_tokens=3, reasoning_tokens=5),  # fmt: skip
            created=1741569952,
        )
    )
    assert rendered == {
        "candidates": [{"finishReason": "STOP", "index": 0}],
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 10,
            "cachedContentTokenCount": 60,
            "thoughtsTokenCount": 5,
            "totalTokenCount": 115,
        },
        "modelVersion": "m",
        "responseId": "r",
        "createTime": "2025-03-10T01:25:52Z",
    }


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"candidates": {}},
        {"candidates": [3]},
        {"candidates": [{"content": {"parts": [{"text": 3}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {}}]}}]},
        {"usageMetadata": {"promptTokenCount": -1}},
        {"responseId": 3},
    ],
)
def test_malformed_responses_are_upstream_errors(body: object) -> None:
    with pytest.raises(UpstreamError) as raised:
        gemini.parse_response(body)
    assert raised.value.kind is ir.ErrorKind.UPSTREAM and raised.value.status == 502


# --------------------------------------------------------------------------------------------
# Errors, models, token counts


def test_render_error() -> None:
    """D.4: code, message, status; the field at fault and a known wait as details."""
    assert gemini.render_error(MuxError(ir.ErrorKind.RATE_LIMIT, "slow", retry_after=30)) == {
        "error": {
            "code": 429,
            "message": "slow",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}],
        }
    }
    error = RequestError("contents: expected an array", param="contents")
    assert gemini.render_error(error)["error"]["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                {"field": "contents", "description": "contents: expected an array"}
            ],
        }
    ]
    statuses = {gemini.render_error(MuxError(k, "x"))["error"]["status"] for k in ir.ErrorKind}
    assert len(statuses) == len(ir.ErrorKind), "one status per kind: a kind survives a trip"


@pytest.mark.parametrize(
    ("status", "body", "kind", "message", "retry_after"),
    [
        (
            429,
            {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
                       "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                    "retryDelay": "12.5s"}]}},  # fmt: skip
            ir.ErrorKind.RATE_LIMIT,
            "quota",
            12.5,
        ),
        (
            400,
            {"error": {"code": 400, "message": "location", "status": "FAILED_PRECONDITION"}},
            ir.ErrorKind.INVALID_REQUEST,
            "location",
            None,
        ),
        (
            500,
            [{"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}],
            ir.ErrorKind.OVERLOADED,
            "busy",
            None,
        ),
        (404, "  Not Found  ", ir.ErrorKind.NOT_FOUND, "Not Found", None),
        (
            502,
            None,
            ir.ErrorKind.UPSTREAM,
            "the upstream answered HTTP 502 without an error message",
            None,
        ),
    ],
)
def test_parse_error(
    status: int, body: object, kind: ir.ErrorKind, message: str, retry_after: float | None
) -> None:
    error = gemini.parse_error(status, body)
    assert isinstance(error, UpstreamError)
    assert (error.kind, error.message, error.status, error.retry_after) == (
        kind, message, status, retry_after,
    )  # fmt: skip


def test_count_tokens_bodies() -> None:
    plain = gemini.parse_count_tokens({"contents": [CONTENT]})
    assert plain.messages == (ir.Message(role=ir.Role.USER, content=[ir.Text(text="hi")]),)
    nested = gemini.parse_count_tokens(
        {
            "generateContentRequest": {
                "model": "models/gemini-x",
                "contents": [CONTENT],
                "systemInstruction": {"parts": [{"text": "sys"}]},
            }
        }
    )
    assert nested.model == "gemini-x" and len(nested.messages) == 2
    assert nested.extra == ir.Extra(format="gemini")
    assert gemini.render_count_tokens(7) == {"totalTokens": 7}
    with pytest.raises(RequestError, match=r"^generateContentRequest.contents\[0\]"):
        gemini.parse_count_tokens({"generateContentRequest": {"contents": [1]}})


# --------------------------------------------------------------------------------------------
# Streams


STREAM: list[ir.Event] = [
    ir.StreamStart(id="resp-1", model="gemini-test", created=5),
    ir.ReasoningDelta(index=0, text="Hmm"),
    ir.ReasoningDelta(index=0, signature=SIGNATURE),
    ir.PartEnd(index=0),
    ir.TextDelta(index=1, text="Let me "),
    ir.TextDelta(index=1, text="check."),
    ir.PartEnd(index=1),
    ir.ToolCallStart(index=2, id="call_a", name="get_weather", signature=SIGNATURE),
    ir.ToolArgsDelta(index=2, json='{"city":'),
    ir.ToolArgsDelta(index=2, json='"Paris"}'),
    ir.PartEnd(index=2),
    ir.UsageUpdate(usage=ir.Usage(input_tokens=3, output_tokens=4, reasoning_tokens=1)),
    ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
]


def chunks_of(data: bytes) -> list[dict[str, Any]]:
    """The chunks of a rendered SSE stream, checking the framing the SDK needs: every
    non-blank line is ``data: <json>``, events end in CRLF CRLF."""
    text = data.decode()
    assert text.endswith("\r\n\r\n")
    events = text.split("\r\n\r\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e and "\r" not in e for e in events)
    return [json.loads(e.removeprefix("data: ")) for e in events]


def test_stream_chunks() -> None:
    """Each chunk a whole response with only its new parts; the call whole, once its part
    ended; the finish and usage on a last chunk; the head on every chunk."""
    chunks = chunks_of(render_stream(STREAM))
    head = {
        "modelVersion": "gemini-test", "responseId": "resp-1", "createTime": "1970-01-01T00:00:05Z",
    }  # fmt: skip
    assert all({k: c[k] for k in head} == head for c in chunks)
    parts = [c["candidates"][0].get("content", {}).get("parts") for c in chunks]
    assert parts == [
        [{"text": "Hmm", "thought": True}],
        [{"text": "", "thought": True, "thoughtSignature": SIGNATURE}],
        [{"text": "Let me "}],
        [{"text": "check."}],
        [
            {
                "functionCall": {"id": "call_a", "name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": SIGNATURE,
            }
        ],
        None,
    ]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"] == {
        "promptTokenCount": 3, "candidatesTokenCount": 3, "thoughtsTokenCount": 1,
        "totalTokenCount": 7,
    }  # fmt: skip


def test_stream_array_form() -> None:
    """Without alt=sse: one JSON array, the same chunks as its elements."""
    data = render_stream(STREAM, sse=False)
    assert data.startswith(b"[") and data.endswith(b"]")
    assert json.loads(data) == chunks_of(render_stream(STREAM))
    error = ir.StreamError(kind=ir.ErrorKind.OVERLOADED, message="busy", status=503)
    assert json.loads(render_stream([error], sse=False)) == [
        {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}
    ]


def test_stream_error_is_an_error_chunk_and_nothing_more() -> None:
    """protocols.md 0: ``error`` first, an int 4xx/5xx code; later events say nothing."""
    renderer = StreamRenderer(ir.Request(model="m"))
    renderer.render(STREAM[0])
    out = renderer.render(ir.StreamError(kind=ir.ErrorKind.INTERNAL, message="boom", status=200))
    assert out == b'data: {"error":{"code":500,"message":"boom","status":"INTERNAL"}}\r\n\r\n'
    assert renderer.render(ir.Finish(stop_reason=ir.StopReason.END_TURN)) == b""


def gemini_chunk(*parts: dict[str, Any], **fields: Any) -> bytes:
    candidate = {"content": {"role": "model", "parts": list(parts)}} if parts else {}
    body = {"candidates": [candidate | fields.pop("candidate", {})], **fields}
    return b"data: " + dumps(body) + b"\r\n\r\n"


START = ir.StreamStart(id="", model="")

STREAM_CASES: list[tuple[str, bytes, list[ir.Event]]] = [
    (
        "thoughts, text, a trailing signature on an empty text part, usage on every chunk",
        gemini_chunk({"text": "a", "thought": True}, usageMetadata={"promptTokenCount": 1})
        + gemini_chunk({"text": "b", "thought": True})
        + gemini_chunk({"text": "x"})
        + gemini_chunk({"text": "y"})
        + gemini_chunk(
            {"text": "", "thoughtSignature": SIGNATURE},
            candidate={"finishReason": "STOP"},
            usageMetadata={"promptTokenCount": 1, "candidatesTokenCount": 2},
        ),
        [
            START,
            ir.ReasoningDelta(index=0, text="a"),
            ir.ReasoningDelta(index=0, text="b"),
            ir.PartEnd(index=0),
            ir.TextDelta(index=1, text="x"),
            ir.TextDelta(index=1, text="y"),
            ir.PartEnd(index=1),
            ir.ReasoningDelta(index=2, signature=SIGNATURE),
            ir.PartEnd(index=2),
            ir.UsageUpdate(usage=ir.Usage(input_tokens=1, output_tokens=2)),
            ir.Finish(stop_reason=ir.StopReason.END_TURN),
        ],
    ),
    (
        "a signature-only part after thoughts signs them; calls whole, with minted ids",
        gemini_chunk({"text": "a", "thought": True}, responseId="r1", modelVersion="g")
        + gemini_chunk({"text": "", "thoughtSignature": SIGNATURE})
        + gemini_chunk({"functionCall": {"name": "f", "args": {"x": 1}}},
                       {"functionCall": {"name": "g"}})  # fmt: skip
        + gemini_chunk(candidate={"finishReason": "STOP"}),
        [
            ir.StreamStart(id="r1", model="g"),
            ir.ReasoningDelta(index=0, text="a"),
            ir.ReasoningDelta(index=0, signature=SIGNATURE),
            ir.PartEnd(index=0),
            ir.ToolCallStart(index=1, id="call_r1_0", name="f"),
            ir.ToolArgsDelta(index=1, json='{"x":1}'),
            ir.PartEnd(index=1),
            ir.ToolCallStart(index=2, id="call_r1_1", name="g"),
            ir.ToolArgsDelta(index=2, json="{}"),
            ir.PartEnd(index=2),
            ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
        ],
    ),
    (
        "a blocked prompt",
        b'data: {"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}\r\n\r\n',
        [START, ir.Finish(stop_reason=ir.StopReason.CONTENT_FILTER)],
    ),
    (
        "a mid-stream error",
        gemini_chunk({"text": "x"})
        + b'data: {"error":{"code":429,"message":"later","status":"RESOURCE_EXHAUSTED"}}\r\n\r\n'
        + gemini_chunk({"text": "y"}),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(kind=ir.ErrorKind.RATE_LIMIT, message="later", status=429),
        ],
    ),
    (
        "a stream that breaks off without a finish reason",
        gemini_chunk({"text": "x"}),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(
                kind=ir.ErrorKind.UPSTREAM,
                message="the upstream stream ended without a finish reason",
                status=502,
            ),
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "expected"), STREAM_CASES, ids=[c[0] for c in STREAM_CASES]
)
def test_stream_parser_cases(name: str, data: bytes, expected: list[ir.Event]) -> None:
    """Fed whole and byte by byte, as SSE and as the JSON array of the same chunks."""
    assert parse_stream([data]) == expected
    assert parse_stream([data[i : i + 1] for i in range(len(data))]) == expected
    chunks = [m.data for m in SSEDecoder().feed(data)]
    array = ("[" + ",\r\n".join(chunks) + "]").encode()
    assert parse_stream([array], sse=False) == expected
    strats.check_stream(expected)


def test_array_stream_cut_short_is_a_stream_error() -> None:
    events = parse_stream([b'[{"candidates":[{"content":{"parts":[{"text":"x"}]}}]},{"cand'], False)
    assert isinstance(events[-1], ir.StreamError) and events[-1].kind is ir.ErrorKind.UPSTREAM


@pytest.mark.parametrize(
    "data",
    [b"data: {not json\r\n\r\n", b"data: [1]\r\n\r\n", gemini_chunk({"text": 3}),
     gemini_chunk({"functionCall": {"args": {}}})],  # fmt: skip
    ids=["not JSON", "not an object", "text not a string", "a call without a name"],
)
def test_stream_parser_rejects_malformed_streams(data: bytes) -> None:
    """Malformed upstream data is an UpstreamError (kind UPSTREAM), nothing else."""
    with pytest.raises(UpstreamError) as raised:
        parse_stream([data])
    assert raised.value.kind is ir.ErrorKind.UPSTREAM


# --------------------------------------------------------------------------------------------
# The real SDK, over a mock transport


@attrs.define
class Upstream:
    """An httpx transport answering the SDK with a canned status and body."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    requests: list[httpx.Request] = attrs.Factory(list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        headers = {"content-type": self.content_type}
        return httpx.Response(self.status, content=self.body, headers=headers)

    def sent(self) -> Any:
        return json.loads(self.requests[-1].content)


RESPONSE = ir.Response(
    id="resp-1",
    model="gemini-test",
    content=[
        ir.Reasoning(text="Think.", signature=SIGNATURE),
        ir.Text(text="Sunny."),
        ir.ToolCall(id="call_a", name="get_weather", arguments='{"city":"Paris"}',
                    signature=SIGNATURE),  # fmt: skip
    ],
    stop_reason=ir.StopReason.TOOL_USE,
    usage=ir.Usage(input_tokens=10, output_tokens=7, cache_read_tokens=4, reasoning_tokens=2),
)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(body=dumps(gemini.render_response(RESPONSE)))


@pytest.fixture
def client(upstream: Upstream) -> Iterator[genai.Client]:
    http = httpx.Client(transport=httpx.MockTransport(upstream))
    options = types.HttpOptions(base_url="http://mux.test", httpx_client=http)
    yield genai.Client(api_key="k", http_options=options)


def test_sdk_reads_a_rendered_response(client: genai.Client, upstream: Upstream) -> None:
    """The SDK's models read render_response's body: text, thought, calls, signatures as
    bytes, usage."""
    response = client.models.generate_content(model="gemini-test", contents="weather?")
    assert upstream.requests[-1].url.path == "/v1/models/gemini-test:generateContent"
    assert response.text == "Sunny."
    assert response.response_id == "resp-1" and response.model_version == "gemini-test"
    parts = response.candidates[0].content.parts
    assert parts[0].thought and parts[0].thought_signature == base64.b64decode(SIGNATURE)
    (call,) = response.function_calls
    assert (call.id, call.name, call.args) == ("call_a", "get_weather", {"city": "Paris"})
    assert parts[2].thought_signature == base64.b64decode(SIGNATURE)
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    counts = (
        usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count,
        usage.cached_content_token_count, usage.total_token_count,
    )  # fmt: skip
    assert counts == (10, 5, 2, 4, 17)


def test_sdk_request_shapes_parse_and_hop_back(client: genai.Client, upstream: Upstream) -> None:
    """What the SDK puts in a request arrives as IR or Extra, and renders back the same."""
    image = b"\x89PNG\r\n\x1a\n\xfb\xff"
    client.models.generate_content(
        model="gemini-test",
        contents=[
            types.Content(role="user", parts=[
                types.Part(text="Look:"),
                types.Part.from_bytes(data=image, mime_type="image/png"),
                types.Part.from_uri(file_uri="https://x/a.pdf", mime_type="application/pdf"),
            ]),
            types.Content(role="model", parts=[
                types.Part(text="Hmm", thought=True, thought_signature=b"\xfb\xff\xfe"),
                types.Part(function_call=types.FunctionCall(name="f", args={"a": 1}, id="c1"),
                           thought_signature=b"\xfa"),
            ]),
            types.Content(role="user", parts=[
                types.Part.from_function_response(name="f", response={"output": "42"}),
            ]),
        ],
        config=types.GenerateContentConfig(
            system_instruction="Be brief.",
            temperature=0.5, top_p=0.9, top_k=20, max_output_tokens=100,
            stop_sequences=["END"], seed=7, presence_penalty=0.1, frequency_penalty=0.2,
            candidate_count=1,
            response_mime_type="application/json",
            response_schema={"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
            thinking_config=types.ThinkingConfig(thinking_budget=1024, include_thoughts=True),
            tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
                name="f", description="F.",
                parameters=types.Schema(
                    type="OBJECT", properties={"a": types.Schema(type="INTEGER")}
                ),
            )])],
            tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
                mode="ANY", allowed_function_names=["f"])),
            safety_settings=[types.SafetySetting(category="HARM_CATEGORY_HARASSMENT",
                                                 threshold="BLOCK_NONE")],
            response_modalities=["TEXT"],
        ),
    )  # fmt: skip
    sent = upstream.sent()
    request = gemini.parse_request(sent)
    system = ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="Be brief.")])
    assert request.messages[0] == system
    assert request.messages[1].content[1] == ir.Image(media_type="image/png", data=image)
    assert request.messages[2].content == (
        ir.Reasoning(text="Hmm", signature=base64.b64encode(b"\xfb\xff\xfe").decode()),
        ir.ToolCall(id="c1", name="f", arguments='{"a":1}', signature="+g=="),
    )
    result = ir.ToolResult(call_id="c1", content=[ir.Text(text="42")], name="f")
    assert request.messages[3] == ir.Message(role=ir.Role.TOOL, content=[result])
    assert request.tool_choice == ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name="f")
    assert request.reasoning == ir.ReasoningConfig(budget_tokens=1024, include_thoughts=True)
    assert request.extra is not None and request.extra.fields == {
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "@generationConfig": {"responseModalities": ["TEXT"]},
    }
    # A same-format hop says the same, in camelCase and standard base64 (the SDK mixes in
    # snake_case and writes bytes URL-safe), the result naming the call it answers.
    expected = canonical(sent)
    expected["contents"][2]["parts"][0]["functionResponse"]["id"] = "c1"
    assert gemini.render_request(request) == expected


def canonical(value: Any) -> Any:
    """A request with camelCase keys and standard base64 bytes fields."""
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        key = re.sub(r"_([a-z])", lambda m: m[1].upper(), key)
        if key in ("data", "thoughtSignature"):
            item = base64.b64encode(base64.urlsafe_b64decode(item)).decode()
        out[key] = canonical(item)
    return out


def test_sdk_stream(client: genai.Client, upstream: Upstream) -> None:
    """generate_content_stream reads every rendered chunk: text in pieces, the call whole."""
    upstream.body = render_stream(STREAM)
    upstream.content_type = "text/event-stream"
    chunks = list(client.models.generate_content_stream(model="gemini-test", contents="weather?"))
    assert upstream.requests[-1].url.params["alt"] == "sse"
    assert [c.text for c in chunks if c.text] == ["Let me ", "check."]
    calls = [call for c in chunks for call in c.function_calls or ()]
    assert [(c.id, c.name, c.args) for c in calls] == [("call_a", "get_weather", {"city": "Paris"})]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count == 7


def test_sdk_raises_a_mid_stream_error(client: genai.Client, upstream: Upstream) -> None:
    error = ir.StreamError(kind=ir.ErrorKind.OVERLOADED, message="busy", status=503)
    upstream.body = render_stream([*STREAM[:6], error])
    upstream.content_type = "text/event-stream"
    stream = client.models.generate_content_stream(model="gemini-test", contents="x")
    with pytest.raises(genai_errors.ServerError, match="busy") as raised:
        list(stream)
    assert raised.value.code == 503 and raised.value.status == "UNAVAILABLE"


@pytest.mark.parametrize(
    ("kind", "exception"),
    [
        (ir.ErrorKind.INVALID_REQUEST, genai_errors.ClientError),
        (ir.ErrorKind.NOT_FOUND, genai_errors.ClientError),
        (ir.ErrorKind.RATE_LIMIT, genai_errors.ClientError),
        (ir.ErrorKind.OVERLOADED, genai_errors.ServerError),
        (ir.ErrorKind.UPSTREAM, genai_errors.ServerError),
    ],
)
def test_sdk_raises_rendered_errors(
    client: genai.Client, upstream: Upstream, kind: ir.ErrorKind, exception: type[Exception]
) -> None:
    error = MuxError(kind, "it went wrong", param="model")
    upstream.status, upstream.body = error.status, dumps(gemini.render_error(error))
    with pytest.raises(exception) as raised:
        client.models.generate_content(model="gemini-test", contents="x")
    assert raised.value.code == error.status  # type: ignore[attr-defined]
    assert raised.value.message == "it went wrong"  # type: ignore[attr-defined]


def test_sdk_lists_models_and_counts_tokens(client: genai.Client, upstream: Upstream) -> None:
    models = [ir.ModelInfo(id="gemini-a"), ir.ModelInfo(id="fake", owned_by="mux-fake")]
    upstream.body = dumps(gemini.render_models(models))
    listed = list(client.models.list())
    assert [(m.name, m.display_name) for m in listed] == [
        ("models/gemini-a", "gemini-a"), ("models/fake", "fake"),
    ]  # fmt: skip
    assert "generateContent" in (listed[0].supported_actions or [])
    upstream.body = dumps(gemini.render_model(models[1]))
    model = client.models.get(model="fake")
    assert model.name == "models/fake" and model.input_token_limit == gemini.INPUT_TOKEN_LIMIT
    upstream.body = dumps(gemini.render_count_tokens(12))
    assert client.models.count_tokens(model="fake", contents="hello").total_tokens == 12
    counted = gemini.parse_count_tokens(upstream.sent())
    assert counted.messages[0].content == (ir.Text(text="hello"),)


@pytest.mark.parametrize(
    ("signature", "written"),
    [
        (SIGNATURE, SIGNATURE),
        (SIGNATURE.replace("+", "-").replace("/", "_"), SIGNATURE),
        ("skip_thought_signature_validator", "skip_thought_signature_validator"),
        ("", None),
        (None, None),
        ("not base64!", None),
    ],
)
def test_signature_out(signature: str | None, written: str | None) -> None:
    """Signatures go out in the standard alphabet; Google's documented stand-in passes."""
    assert gemini.signature_out(signature) == written


def test_stand_in_signatures_for_foreign_histories() -> None:
    """G.2: the first call of each assistant turn without a signature Gemini accepts gets
    Google's stand-in, which goes out even for a request of another origin."""
    anthropic = ir.Origin(format="anthropic", body={})
    request = ir.Request(
        model="m",
        origin=anthropic,
        messages=[
            ir.Message(role=ir.Role.USER, content=[ir.Text(text="go")]),
            ir.Message(
                role=ir.Role.ASSISTANT,
                content=[
                    ir.Reasoning(text="t", signature="EqQBCkYIBxgCKkB="),
                    ir.ToolCall(id="a", name="f", signature="EqQBCkYIBxgCKkB="),
                    ir.ToolCall(id="b", name="f"),
                ],
            ),
            ir.Message(
                role=ir.Role.TOOL, content=[ir.ToolResult(call_id="a"), ir.ToolResult(call_id="b")]
            ),
            ir.Message(role=ir.Role.ASSISTANT, content=[ir.ToolCall(id="c", name="g")]),
        ],
    )
    signed = gemini.with_stand_in_signatures(request)
    body = gemini.render_request(signed)
    model_turns = [c["parts"] for c in body["contents"] if c["role"] == "model"]
    assert [[p.get("thoughtSignature") for p in parts] for parts in model_turns] == [
        [None, gemini.STAND_IN_SIGNATURE, None], [gemini.STAND_IN_SIGNATURE],
    ]  # fmt: skip
    own = attrs.evolve(request, origin=ir.Origin(format="gemini", body={}))
    assert gemini.with_stand_in_signatures(own).messages[1] == own.messages[1]
