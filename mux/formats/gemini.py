"""Google Gemini ``generateContent`` (``/v1beta/models/{model}:generateContent``), both ways.

Client side: :func:`parse_request` reads what a Gemini client sends (the routes take the model
and the streaming choice from the URL: the body says neither), and :func:`render_response`,
:class:`StreamRenderer`, :func:`render_error`, :func:`render_models`, :func:`render_model`,
:func:`parse_count_tokens` and :func:`render_count_tokens` answer it. Upstream side:
:func:`render_request` writes the body a Gemini upstream receives (the provider builds the
URL), and :func:`parse_response`, :class:`StreamParser` and :func:`parse_error` read its
answers. Everything is pure; the stream classes are sans-io.

Mapping notes (protocols.md D, F and G are the reference):

* Requests are read in camelCase or snake_case (``systemInstruction`` or
  ``system_instruction``, ``inlineData`` or ``inline_data``...); everything is written in
  camelCase, as Gemini answers.
* ``systemInstruction`` is one leading system message; system and developer messages
  anywhere in the IR are hoisted into it, in order (F.1), always with ``role: "user"`` as
  the official SDKs send it. Contents have roles ``user`` and ``model`` (the legacy
  ``function`` and an omitted role read as ``user``); a user content holding only
  ``functionResponse`` parts is an :attr:`ir.Role.TOOL` message.
* Parts: ``text``; ``inlineData`` (``image/*`` is an image, ``audio/*`` audio with the
  subtype as format, anything else a document); ``fileData`` (an image when its type, or
  failing that its URL's extension, says so, else a document); ``functionCall`` (an
  ``args`` object, JSON text in the IR); ``functionResponse``; ``thought: true`` text
  parts are reasoning. ``executableCode`` and ``codeExecutionResult`` parts have no IR form
  and are dropped.
* A part by URL is written as ``fileData`` with a ``mimeType`` (Gemini needs one to fetch
  a URL): its own; failing that, the one its URL's extension says (:func:`url_media_type`);
  failing that, for an image, ``image/jpeg`` (an image must be sent as an image, or it
  would come back as a document, and JPEG is the commonest type on the web; Gemini decodes
  the bytes it fetches whatever their exact image type). A document whose URL says nothing
  goes without one: Files API and YouTube URIs carry their own type, and a made-up one
  (``application/pdf``, ``application/octet-stream``) would make Gemini misread or refuse
  the file.
* Gemini rarely gives call ids. A call without one gets ``call_<n>`` (``n`` counting the
  calls of the request), or ``call_<responseId>_<n>`` in an answer, so that ids stay unique
  across turns; a ``functionResponse`` without one answers the oldest unanswered call of
  that name. Ids are always written, so a client reads back the ids it was given.
* A ``functionResponse.response`` of ``{"output": text}`` is the result's text and
  ``{"error": text}`` an error result; any other object is its compact JSON text. Images
  and documents in a result go in ``functionResponse.parts`` (multimodal function
  responses). Consecutive tool-result contents are merged into one user content, and a
  result without a name takes the name of the call it answers (F.4).
* ``thoughtSignature`` (protocols.md G.2): on a thought part it is the reasoning's
  signature; on a ``functionCall`` part the tool call's. On any other part it becomes an
  empty reasoning part right after that part; an empty non-thought text part carrying only
  a signature (as Gemini streams end) gives it to the reasoning part just before, if that
  is what precedes it. Written back, an empty reasoning part with a signature rides the
  text part before it, or else an empty thought part. Signatures are written only if they
  are base64 (or one of Google's documented stand-ins), and in :func:`render_request` only
  for a request of Gemini origin (parsed by this module, or with a Gemini
  :class:`ir.Origin`): another provider's signature (an Anthropic one) must never reach
  Gemini. :func:`render_response` writes every base64 signature, so that a Gemini client
  replays them whatever the upstream. The SDK sends bytes as URL-safe base64; signatures
  are normalised to the standard alphabet, which every provider uses.
* Streamed answers: text and thoughts go out as they come, a tool call whole once its
  arguments are complete (F.4), the finish reason and usage in a last chunk.
* Tool parameters and ``responseSchema`` are cleaned to Gemini's schema subset
  (:func:`clean_schema`, F.7). A client's ``parametersJsonSchema`` and
  ``responseJsonSchema`` (full JSON Schema) go back under those names, untouched.
* ``thinkingConfig``: ``thinkingBudget`` is a budget (0: disabled, -1: dynamic, i.e.
  enabled without a budget), ``thinkingLevel`` an effort, ``includeThoughts`` itself.
* Usage: ``candidatesTokenCount`` excludes thoughts, so IR output is candidates + thoughts
  (F.3); ``toolUsePromptTokenCount`` counts as input.
* Fields the IR does not model travel in :class:`ir.Extra` (see :func:`_merge_extra` for
  its layout); :func:`parse_request` always attaches one, which also marks the request as
  of Gemini origin.

Errors: :func:`parse_request` raises only :class:`~mux.errors.RequestError`, naming the field
at fault; the upstream side raises only :class:`~mux.errors.UpstreamError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import mimetypes
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from mux import ir
from mux.errors import MuxError, UpstreamError, kind_for_status, status_for_kind
from mux.formats._json import Node, finite, maybe, present, request_error, upstream_error
from mux.formats._parts import arguments_object, sniff_media_type
from mux.framing import FramingError, JSONArrayDecoder, SSEDecoder, SSEMessage, dumps, loads

__all__ = [
    "NAME",
    "STAND_IN_SIGNATURE",
    "StreamParser",
    "StreamRenderer",
    "clean_schema",
    "media_type_of",
    "parse_count_tokens",
    "parse_error",
    "parse_request",
    "parse_response",
    "render_count_tokens",
    "render_error",
    "render_model",
    "render_models",
    "render_request",
    "render_response",
    "signature_out",
    "url_media_type",
    "with_stand_in_signatures",
]

NAME = "gemini"

# --------------------------------------------------------------------------------------------
# Base64 as Google clients write it


def _decode_base64(text: str) -> bytes | None:
    """Standard or URL-safe base64 (the SDK writes bytes URL-safe), padded or not."""
    text = text.translate(_URLSAFE)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


_URLSAFE = str.maketrans("-_", "+/")

#: The stand-ins Google documents for a signature a history lacks (G.2), which the API
#: accepts though they are not base64: kept as they are.
STAND_IN_SIGNATURE = "skip_thought_signature_validator"
_STAND_INS = frozenset({STAND_IN_SIGNATURE, "context_engineering_is_the_way_to_go"})


def signature_out(signature: str | None) -> str | None:
    """``signature`` as Gemini's ``thoughtSignature``, in the standard base64 alphabet; None
    if it cannot be one (it must be non-empty base64: the SDK decodes the field as bytes, the
    API rejects anything else, but for Google's stand-ins)."""
    if signature in _STAND_INS:
        return signature
    if not signature or _decode_base64(signature) is None:
        return None
    return signature.translate(_URLSAFE)


def _signature_in(node: Node) -> str | None:
    """A read ``thoughtSignature``, normalised to the standard base64 alphabet."""
    text = node.optional(Node.string)
    if not text or text in _STAND_INS:
        return text or None
    if _decode_base64(text) is None:
        node.fail("base64 data", "a string that is not base64")
    return text.translate(_URLSAFE)


def _rfc3339(unix: int) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(node: Node) -> int | None:
    """An RFC 3339 time (``createTime``) as whole Unix seconds; None when unreadable."""
    text = node.optional(Node.string)
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() // 1)


# --------------------------------------------------------------------------------------------
# Field names: camelCase or snake_case


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), name)


def _get(node: Node, name: str) -> Node:
    """The field ``name`` (camelCase) of ``node``, or its snake_case spelling if only that
    is there."""
    found = node[name]
    if not found.absent or node.absent:
        return found
    snake = _snake(name)
    return node[snake] if snake != name and snake in node.object() else found


def _names(*names: str) -> frozenset[str]:
    """The known fields ``names`` in both spellings."""
    return frozenset(names) | {_snake(name) for name in names}


def _unknown(
    node: Node, known: frozenset[str], extra: dict[str, Any], slot: str | None = None
) -> None:
    """Keep the fields of ``node`` not in ``known`` in ``extra``: at the top level, or in the
    reserved ``slot`` of the object they came from (see :func:`_merge_extra`)."""
    if node.absent:
        return
    for key, value in node.object().items():
        if key not in known:
            if not finite(value):
                node[key].fail("JSON without NaN or Infinity")
            if slot is not None:
                extra.setdefault(slot, {})[key] = value
            else:
                extra["@" + key if key.startswith("@") else key] = value


# --------------------------------------------------------------------------------------------
# Schemas (F.7)

# The keys Gemini's Schema accepts in ``parameters`` and ``responseSchema``.
_SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "items", "properties",
        "required", "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum",
        "maximum", "minProperties", "maxProperties", "anyOf", "propertyOrdering", "default",
        "example",
    }
)  # fmt: skip
# The keys whose value is a string (a type list was turned into anyOf above).
_STRING_KEYS = frozenset({"type", "format", "title", "description", "pattern"})
# JSON Schema names python-genai also accepts in snake_case.
_SCHEMA_SPELLINGS = {"any_of": "anyOf", "property_ordering": "propertyOrdering"}
# What a reference cycle is cut to: an object of any shape.
_CYCLE: dict[str, Any] = {"type": "object"}


def clean_schema(schema: object) -> dict[str, Any]:
    """A JSON Schema reduced to the subset Gemini accepts (protocols.md F.7), as python-genai
    does for its own callers.

    Local ``$ref``\\ s (``#/$defs/...``, ``#/definitions/...``) are inlined, a cycle cut to
    ``{"type": "object"}``; ``allOf`` is merged; ``oneOf`` becomes ``anyOf``; ``const`` a
    one-value ``enum``; a ``type`` list with ``"null"`` becomes ``nullable``, other type
    lists an ``anyOf``; ``null`` members of an ``anyOf`` become ``nullable``; enum values
    are strings (and the type ``string``); ``required`` lists only declared properties; any
    other key is dropped. Pure, and idempotent: a cleaned schema cleans to itself.
    """
    if not isinstance(schema, Mapping):
        return {}
    schema = dict(schema)
    defs: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        if isinstance(schema.get(key), dict):
            defs.update(schema[key])
    return _clean(schema, defs, ())


def _clean(schema: object, defs: dict[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}  # true, or junk: any value
    node = {_SCHEMA_SPELLINGS.get(k, k): v for k, v in schema.items()}
    ref = node.pop("$ref", None)
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        local = ref.startswith(("#/$defs/", "#/definitions/")) and name in defs
        target = _clean(defs[name], defs, (*refs, name)) if local and name not in refs else None
        if name in refs:
            target = dict(_CYCLE)
        node = {**(target or {}), **node}
    for sub in _list(node.pop("allOf", None)):
        node = _merge_all_of(node, _clean(sub, defs, refs))
    one_of = node.pop("oneOf", None)
    if isinstance(one_of, list):
        node["anyOf"] = [*_list(node.get("anyOf")), *one_of]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    type_ = node.get("type")
    if isinstance(type_, list):
        types = [t for t in type_ if isinstance(t, str)]
        if any(t.lower() == "null" for t in types):
            node["nullable"] = True
            types = [t for t in types if t.lower() != "null"]
        if len(types) == 1:
            node["type"] = types[0]
        else:
            del node["type"]
            if types:
                node["anyOf"] = [*_list(node.get("anyOf")), *({"type": t} for t in types)]
    elif isinstance(type_, str) and type_.lower() == "null":
        del node["type"]
        node["nullable"] = True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "properties":
            if isinstance(value, dict):
                out[key] = {k: _clean(v, defs, refs) for k, v in value.items()}
        elif key == "items":
            if isinstance(value, dict):
                out[key] = _clean(value, defs, refs)
        elif key == "anyOf":
            if isinstance(value, list):
                out[key] = [_clean(v, defs, refs) for v in value]
        elif key == "enum":
            if isinstance(value, list):
                out[key] = [v if isinstance(v, str) else dumps(v).decode() for v in value]
        elif key in _STRING_KEYS:
            if isinstance(value, str):
                out[key] = value
        else:
            out[key] = value
    _null_members(out)
    if "enum" in out and not (isinstance(out.get("type"), str) and out["type"].lower() == "string"):
        out["type"] = "STRING" if str(out.get("type", "")).isupper() else "string"
    if "required" in out:
        declared = out.get("properties") or {}
        out["required"] = [
            name for name in _list(out["required"]) if isinstance(name, str) and name in declared
        ]
        if not out["required"]:
            del out["required"]
    return out


def _null_members(schema: dict[str, Any]) -> None:
    """``anyOf`` members that only say "null" become ``nullable``; one member left is merged."""
    members = schema.get("anyOf")
    if not isinstance(members, list):
        return
    kept = [m for m in members if not (m.get("nullable") is True and set(m) == {"nullable"})]
    if len(kept) == len(members):
        return
    schema["nullable"] = True
    if len(kept) == 1:
        del schema["anyOf"]
        for key, value in kept[0].items():
            schema.setdefault(key, value)
    elif kept:
        schema["anyOf"] = kept
    else:
        del schema["anyOf"]


def _merge_all_of(node: dict[str, Any], sub: dict[str, Any]) -> dict[str, Any]:
    """``node`` with an ``allOf`` member merged in: properties and required lists join,
    ``node``'s own keys win otherwise."""
    merged = {**sub, **node}
    properties = [p for p in (sub.get("properties"), node.get("properties")) if isinstance(p, dict)]
    if properties:
        merged["properties"] = {k: v for p in properties for k, v in p.items()}
    required = [*_list(node.get("required")), *_list(sub.get("required"))]
    if required:
        merged["required"] = list(dict.fromkeys(r for r in required if isinstance(r, str)))
    return merged


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _has_parameters(schema: dict[str, Any]) -> bool:
    """Whether a cleaned parameters schema declares anything (zero-argument functions send
    none: F.7)."""
    return bool(schema.get("properties") or schema.get("anyOf"))


# --------------------------------------------------------------------------------------------
# Media

# URL extensions that say "image" when a fileData part has no mimeType.
_IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "webp", "heic", "heif", "bmp"})
# Audio subtypes with a more usual codec name (OpenAI's input_audio takes wav and mp3).
_AUDIO_FORMATS = {"mpeg": "mp3", "x-wav": "wav", "wave": "wav", "vnd.wave": "wav"}


def media_type_of(part: ir.Image | ir.Document | ir.Audio) -> str:
    """The ``mimeType`` an inline part is written with: its own, else the one its bytes
    show, else a generic one for its kind."""
    if isinstance(part, ir.Audio):
        return f"audio/{part.format}"
    if part.media_type:
        return part.media_type
    sniffed = sniff_media_type(part.data or b"")
    if sniffed:
        return sniffed
    return "image/png" if isinstance(part, ir.Image) else "application/octet-stream"


# The types of the extensions Gemini documents (Python's table lacks some, or differs by
# version); other extensions are looked up in Python's own table.
_EXTENSION_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
    "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "bmp": "image/bmp",
    "pdf": "application/pdf", "txt": "text/plain", "md": "text/markdown", "csv": "text/csv",
    "html": "text/html", "htm": "text/html", "xml": "text/xml", "rtf": "text/rtf",
    "mp3": "audio/mp3", "wav": "audio/wav", "aiff": "audio/aiff", "aac": "audio/aac",
    "ogg": "audio/ogg", "flac": "audio/flac", "mp4": "video/mp4", "mpeg": "video/mpeg",
    "mov": "video/mov", "webm": "video/webm",
}  # fmt: skip
# The mimeType of an image by URL when neither it nor its URL says an image type.
_DEFAULT_IMAGE_TYPE = "image/jpeg"


def _extension(url: str) -> str:
    """The lowercased extension of a URL's last path segment; "" when it has none."""
    name = url.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


@functools.cache
def _python_types() -> mimetypes.MimeTypes:
    """Python's built-in extension table (a fresh one: not the system's mime.types files,
    so that the answer is the same on every machine)."""
    return mimetypes.MimeTypes()


def url_media_type(url: str) -> str | None:
    """The media type the extension of ``url``'s path says (``https://x/cat.PNG?s=1`` is
    ``image/png``), or None when it has no extension or an unknown one."""
    extension = _extension(url)
    if not extension:
        return None
    if extension in _EXTENSION_TYPES:
        return _EXTENSION_TYPES[extension]
    lenient, strict = _python_types().types_map  # (non-strict, strict), as mimetypes has it
    return strict.get("." + extension) or lenient.get("." + extension)


def _url_is_image(url: str) -> bool:
    return _extension(url) in _IMAGE_EXTENSIONS


def _inline(media_type: str, data: bytes) -> ir.Image | ir.Document | ir.Audio:
    """An ``inlineData`` blob as the IR part its type says."""
    kind, _, subtype = media_type.partition("/")
    if kind.lower() == "image":
        return ir.Image(media_type=media_type, data=data)
    if kind.lower() == "audio" and subtype:
        return ir.Audio(data=data, format=_AUDIO_FORMATS.get(subtype.lower(), subtype))
    return ir.Document(media_type=media_type, data=data)


def _linked(media_type: str | None, url: str) -> ir.Image | ir.Document:
    """A ``fileData`` reference as the IR part its type (or its URL) says."""
    typed = media_type is not None
    if (media_type or "").lower().startswith("image/") or (not typed and _url_is_image(url)):
        return ir.Image(media_type=media_type, url=url)
    return ir.Document(media_type=media_type, url=url)


def _render_media(part: ir.Image | ir.Document | ir.Audio) -> dict[str, Any] | None:
    """An inline or linked part; None when it has neither bytes nor a URL (a provider file
    id means nothing to Gemini)."""
    data = part.data
    if data is not None:
        blob = {"mimeType": media_type_of(part), "data": base64.b64encode(data).decode()}
        return {"inlineData": blob}
    url = getattr(part, "url", None)
    if url is None:
        return None
    assert isinstance(part, ir.Image | ir.Document)
    return {"fileData": present(mimeType=_linked_type(part, url), fileUri=url)}


def _linked_type(part: ir.Image | ir.Document, url: str) -> str | None:
    """The ``mimeType`` of a part by URL (see the module notes): its own, else its URL's,
    else ``image/jpeg`` for an image; None for a document whose URL says nothing."""
    if part.media_type:
        return part.media_type
    guessed = url_media_type(url)
    if isinstance(part, ir.Image):
        return guessed if guessed and guessed.startswith("image/") else _DEFAULT_IMAGE_TYPE
    return guessed


def _parse_media(node: Node) -> ir.Image | ir.Document | ir.Audio | None:
    """A part's ``inlineData`` or ``fileData``, if it has one."""
    blob = _get(node, "inlineData")
    if not blob.absent:
        blob.object()
        data_node = blob["data"]
        data = _decode_base64(data_node.string())
        if data is None:
            data_node.fail("base64 data", "a string that is not base64")
        return _inline(_get(blob, "mimeType").string(), data)
    file = _get(node, "fileData")
    if not file.absent:
        file.object()
        return _linked(_get(file, "mimeType").optional(Node.string), _get(file, "fileUri").string())
    return None


# --------------------------------------------------------------------------------------------
# Parts


@attrs.define(eq=False)
class _Calls:
    """Tool-call ids of one request, response or stream: kept when given, minted when not
    (``prefix`` + a count), and matched to results without ids by name, oldest first."""

    prefix: str = "call_"
    _count: int = 0
    _used: set[str] = attrs.Factory(set)
    _open: list[tuple[str, str]] = attrs.Factory(list)  # (id, name), unanswered

    def call(self, given: str | None, name: str) -> str:
        call_id = given or self._mint()
        self._used.add(call_id)
        self._open.append((call_id, name))
        return call_id

    def result(self, given: str | None, name: str) -> str:
        if given:
            self._open = [(i, n) for i, n in self._open if i != given]
            return given
        for position, (call_id, call_name) in enumerate(self._open):
            if call_name == name:
                del self._open[position]
                return call_id
        return self._mint()

    def _mint(self) -> str:
        while True:
            call_id = f"{self.prefix}{self._count}"
            self._count += 1
            if call_id not in self._used:
                self._used.add(call_id)
                return call_id


def _id_prefix(response_id: str) -> str:
    """The prefix of the ids minted for an answer's calls: unique across turns (F.4)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "", response_id)
    return f"call_{safe}_" if safe else "call_"


_DATA_FIELDS = _names(
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult",
)  # fmt: skip


def _parse_parts(node: Node, calls: _Calls) -> list[ir.Part]:
    out: list[ir.Part] = []
    for part in node.array():
        _parse_part(part, calls, out)
    return out


def _parse_part(node: Node, calls: _Calls, out: list[ir.Part]) -> None:
    """Append the IR parts one Gemini part gives to ``out`` (see the module notes on
    signatures)."""
    node.object()
    before = out[-1] if out else None
    signature = _signature_in(_get(node, "thoughtSignature"))
    thought = bool(_get(node, "thought").optional(Node.boolean))
    text = _get(node, "text")
    if not text.absent:
        value = text.string()
        if thought:
            out.append(ir.Reasoning(text=value, signature=signature))
            return
        if value:
            out.append(ir.Text(text=value))
    elif not (call := _get(node, "functionCall")).absent:
        call.object()
        name = call["name"].string()
        args = call["args"]
        arguments = "{}" if args.optional(Node.object) is None else args.compact()
        call_id = calls.call(call["id"].optional(Node.string), name)
        out.append(ir.ToolCall(id=call_id, name=name, arguments=arguments, signature=signature))
        return
    elif not (response := _get(node, "functionResponse")).absent:
        out.append(_parse_function_response(response, calls))
    elif (media := _parse_media(node)) is not None:
        out.append(media)
    elif not any(key in _DATA_FIELDS for key in node.object()) and signature is None:
        node.fail("a part with text, inlineData, fileData, functionCall or functionResponse")
    if signature is None:
        return
    # A part that added nothing (an empty text part, a bare signature) signs the reasoning
    # part before it, if that is what precedes; any other gets a reasoning part of its own.
    added = bool(out) and out[-1] is not before
    if not added and out and isinstance(out[-1], ir.Reasoning):
        out[-1] = attrs.evolve(out[-1], signature=signature)
    else:
        out.append(ir.Reasoning(signature=signature))


def _parse_function_response(node: Node, calls: _Calls) -> ir.ToolResult:
    node.object()
    name = node["name"].string()
    response = node["response"].optional(Node.free_object) or {}
    is_error = False
    if set(response) == {"output"} and isinstance(response["output"], str):
        text = response["output"]
    elif set(response) == {"error"} and isinstance(response["error"], str):
        text, is_error = response["error"], True
    else:
        text = dumps(response).decode() if response else ""
    content: list[ir.Text | ir.Image | ir.Document] = [ir.Text(text=text)] if text else []
    for part in node["parts"].optional(Node.array) or ():
        part.object()
        media = _parse_media(part)
        if media is None:
            part.fail("a part with inlineData or fileData")
        if isinstance(media, ir.Audio):  # a tool result holds no audio: keep it as a file
            media = ir.Document(media_type=f"audio/{media.format}", data=media.data)
        content.append(media)
    call_id = calls.result(node["id"].optional(Node.string), name)
    return ir.ToolResult(call_id=call_id, content=content, is_error=is_error, name=name)


def _render_parts(
    parts: Iterable[ir.Part], signatures: bool, names: dict[str, str]
) -> list[dict[str, Any]]:
    """IR parts as Gemini parts; ``signatures`` says whether signatures may be written
    (Google's stand-ins always may), ``names`` gives tool names by call id for results that
    lack one."""
    out: list[dict[str, Any]] = []
    for part in parts:
        signature = getattr(part, "signature", None)
        signature = signature_out(signature) if signatures or signature in _STAND_INS else None
        if isinstance(part, ir.Text):
            if part.text:
                out.append({"text": part.text})
        elif isinstance(part, ir.Reasoning):
            if part.text:
                thought = {"text": part.text, "thought": True}
                out.append(thought | present(thoughtSignature=signature))
            elif signature is None:
                pass
            elif out and set(out[-1]) == {"text"}:  # a text part's signature: it rides the text
                out[-1]["thoughtSignature"] = signature
            else:
                out.append({"text": "", "thought": True, "thoughtSignature": signature})
        elif isinstance(part, ir.ToolCall):
            call = {"id": part.id, "name": part.name, "args": arguments_object(part.arguments)}
            out.append({"functionCall": call} | present(thoughtSignature=signature))
        elif isinstance(part, ir.ToolResult):
            out.append({"functionResponse": _render_function_response(part, names)})
        elif (media := _render_media(part)) is not None:
            out.append(media)
    return out


def _render_function_response(result: ir.ToolResult, names: dict[str, str]) -> dict[str, Any]:
    text = "".join(p.text for p in result.content if isinstance(p, ir.Text))
    media = [m for p in result.content if not isinstance(p, ir.Text) if (m := _render_media(p))]
    response = {"error" if result.is_error else "output": text}
    name = result.name or names.get(result.call_id) or "unknown"
    return {"id": result.call_id, "name": name, "response": response} | (
        {"parts": media} if media else {}
    )


def _only_results(parts: Sequence[dict[str, Any]]) -> bool:
    return bool(parts) and all(set(p) == {"functionResponse"} for p in parts)


# --------------------------------------------------------------------------------------------
# Requests

_REQUEST_FIELDS = _names(
    "contents", "systemInstruction", "tools", "toolConfig", "generationConfig"
)
_GENERATION_FIELDS = _names(
    "temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "seed",
    "presencePenalty", "frequencyPenalty", "candidateCount", "responseMimeType",
    "responseSchema", "responseJsonSchema", "thinkingConfig",
)  # fmt: skip
_THINKING_FIELDS = _names("includeThoughts", "thinkingBudget", "thinkingLevel")
_TOOL_CONFIG_FIELDS = _names("functionCallingConfig")
_CALLING_FIELDS = _names("mode", "allowedFunctionNames")
_DECLARATION_FIELDS = _names("name", "description", "parameters", "parametersJsonSchema")
_CONTENT_FIELDS = frozenset({"role", "parts"})

# Reserved Extra keys (see _merge_extra): the unknown fields of the objects the IR reads...
_GENERATION = "@generationConfig"
_THINKING = "@thinkingConfig"
_TOOL_CONFIG = "@toolConfig"
_CALLING = "@functionCallingConfig"
_SYSTEM = "@systemInstruction"
_CANDIDATE = "@candidate"
_USAGE = "@usageMetadata"
# ... where each object sits in a body ...
_SLOTS: dict[str, tuple[str | int, ...]] = {
    _GENERATION: ("generationConfig",),
    _THINKING: ("generationConfig", "thinkingConfig"),
    _TOOL_CONFIG: ("toolConfig",),
    _CALLING: ("toolConfig", "functionCallingConfig"),
    _SYSTEM: ("systemInstruction",),
    _CANDIDATE: ("candidates", 0),
    _USAGE: ("usageMetadata",),
}
# ... and what the renderers read themselves.
_TOOLS = "@tools"
_DECLARATIONS = "@declarations"
_PARAMETERS_JSON_SCHEMA = "@parametersJsonSchema"
_RESPONSE_JSON_SCHEMA = "@responseJsonSchema"

_LEVELS = {"none": None, "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH",
           "xhigh": "HIGH"}  # fmt: skip


def parse_request(body: object) -> ir.Request:
    """A client's ``generateContent`` body (JSON-decoded) as an IR request.

    The model and streaming live in the URL: the request has ``model=""`` and
    ``stream=False`` until the routes set them.

    Raises:
      RequestError: the body is not a valid request; the message and ``param`` name the
        field at fault.
    """
    return _parse_request(Node(body, "", request_error))


def _parse_request(root: Node) -> ir.Request:
    root.object()
    extra: dict[str, Any] = {}
    _unknown(root, _REQUEST_FIELDS, extra)
    calls = _Calls()
    messages = _parse_system(_get(root, "systemInstruction"), extra)
    contents = _get(root, "contents")
    messages += [_parse_content(c, calls) for c in contents.optional(Node.array) or ()]
    generation = _get(root, "generationConfig")
    generation.optional(Node.object)
    _unknown(generation, _GENERATION_FIELDS, extra, _GENERATION)
    thinking = _get(generation, "thinkingConfig")
    _unknown(thinking, _THINKING_FIELDS, extra, _THINKING)
    return ir.Request(
        model="",
        messages=messages,
        tools=_parse_tools(_get(root, "tools"), extra),
        tool_choice=_parse_tool_config(_get(root, "toolConfig"), extra),
        max_tokens=_get(generation, "maxOutputTokens").optional(Node.positive),
        temperature=_get(generation, "temperature").optional(Node.number),
        top_p=_get(generation, "topP").optional(Node.number),
        top_k=_get(generation, "topK").optional(Node.integer),
        stop=[s.string() for s in _get(generation, "stopSequences").optional(Node.array) or ()],
        seed=_get(generation, "seed").optional(Node.integer),
        frequency_penalty=_get(generation, "frequencyPenalty").optional(Node.number),
        presence_penalty=_get(generation, "presencePenalty").optional(Node.number),
        n=_get(generation, "candidateCount").optional(Node.positive),
        response_format=_parse_response_format(generation, extra),
        reasoning=thinking.optional(_parse_thinking),
        extra=ir.Extra(format=NAME, fields=extra),
    )


def _parse_system(node: Node, extra: dict[str, Any]) -> list[ir.Message]:
    if node.absent:
        return []
    if isinstance(node.value, str):  # the SDKs' shorthand, sent by hand-written clients
        return [ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text=node.value)])]
    node.object()
    _unknown(node, _CONTENT_FIELDS, extra, _SYSTEM)
    parts = _parse_parts(node["parts"], _Calls())
    return [ir.Message(role=ir.Role.SYSTEM, content=parts)] if parts else []


def _parse_content(node: Node, calls: _Calls) -> ir.Message:
    node.object()
    role = node["role"].optional(lambda n: n.choice(("user", "model", "function"))) or "user"
    parts = _parse_parts(node["parts"], calls)
    if role == "model":
        return ir.Message(role=ir.Role.ASSISTANT, content=parts)
    if parts and all(isinstance(part, ir.ToolResult) for part in parts):
        return ir.Message(role=ir.Role.TOOL, content=parts)
    return ir.Message(role=ir.Role.USER, content=parts)


def _parse_tools(node: Node, extra: dict[str, Any]) -> list[ir.Tool]:
    tools: list[ir.Tool] = []
    others: list[dict[str, Any]] = []
    declared: dict[str, dict[str, Any]] = {}
    json_schema: list[str] = []
    for entry in node.optional(Node.array) or ():
        entry.object()
        rest = {k: v for k, v in entry.object().items() if k not in _names("functionDeclarations")}
        if rest:
            if not finite(rest):
                entry.fail("JSON without NaN or Infinity")
            others.append(rest)
        for declaration in _get(entry, "functionDeclarations").optional(Node.array) or ():
            declaration.object()
            name = declaration["name"].string()
            parameters = declaration["parameters"]
            full = _get(declaration, "parametersJsonSchema")
            if parameters.absent and not full.absent:
                parameters = full
                json_schema.append(name)
            unknown: dict[str, Any] = {}
            _unknown(declaration, _DECLARATION_FIELDS, unknown, name)
            declared.update(unknown)
            tools.append(
                ir.Tool(
                    name=name,
                    description=declaration["description"].optional(Node.string),
                    parameters=parameters.optional(Node.free_object),
                )
            )
    if others:
        extra[_TOOLS] = others
    if declared:
        extra[_DECLARATIONS] = declared
    if json_schema:
        extra[_PARAMETERS_JSON_SCHEMA] = json_schema
    return tools


def _parse_tool_config(node: Node, extra: dict[str, Any]) -> ir.ToolChoice | None:
    if node.absent:
        return None
    _unknown(node, _TOOL_CONFIG_FIELDS, extra, _TOOL_CONFIG)
    config = _get(node, "functionCallingConfig")
    if config.absent:
        return None
    config.object()
    mode_node, names_node = config["mode"], _get(config, "allowedFunctionNames")
    names = [n.string() for n in names_node.optional(Node.array) or ()]
    mode = mode_node.optional(Node.string)
    mode = mode.upper() if mode is not None else "AUTO"
    _unknown(config, _CALLING_FIELDS, extra, _CALLING)
    if mode == "ANY" and len(names) == 1:
        return ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name=names[0])
    modes = {"AUTO": ir.ToolChoiceMode.AUTO, "NONE": ir.ToolChoiceMode.NONE,
             "ANY": ir.ToolChoiceMode.REQUIRED}  # fmt: skip
    kept: dict[str, Any] = {}
    if not names_node.absent:
        kept[names_node.path.rsplit(".", 1)[-1]] = names_node.value
    if mode not in modes:  # VALIDATED and modes to come: kept as they were
        kept["mode"] = mode_node.value
    if kept:
        extra.setdefault(_CALLING, {}).update(kept)
    return ir.ToolChoice(mode=modes[mode]) if mode in modes else None


def _parse_response_format(generation: Node, extra: dict[str, Any]) -> ir.ResponseFormat | None:
    mime_node = _get(generation, "responseMimeType")
    mime = mime_node.optional(Node.string)
    schema_node = _get(generation, "responseSchema")
    if schema_node.absent and not (full := _get(generation, "responseJsonSchema")).absent:
        schema_node = full
        extra[_RESPONSE_JSON_SCHEMA] = True
    schema = schema_node.optional(Node.free_object)
    if mime in (None, "application/json") and schema is not None:
        return ir.ResponseFormat(type=ir.ResponseFormatType.JSON_SCHEMA, schema=schema)
    if schema is None and mime == "application/json":
        return ir.ResponseFormat(type=ir.ResponseFormatType.JSON_OBJECT)
    if schema is None and mime == "text/plain":
        return ir.ResponseFormat(type=ir.ResponseFormatType.TEXT)
    # Enum output (text/x.enum) and other types have no IR form: kept as they came.
    extra.pop(_RESPONSE_JSON_SCHEMA, None)
    for node in (mime_node, schema_node):
        if not node.absent:
            extra.setdefault(_GENERATION, {})[node.path.rsplit(".", 1)[-1]] = node.value
    return None


def _parse_thinking(node: Node) -> ir.ReasoningConfig | None:
    node.object()
    budget = _get(node, "thinkingBudget").optional(Node.integer)
    level = _get(node, "thinkingLevel").optional(Node.string)
    include = _get(node, "includeThoughts").optional(Node.boolean)
    if budget is None and level is None and include is None:
        return None
    return ir.ReasoningConfig(
        enabled=None if budget is None or budget > 0 else budget < 0,
        effort=level.lower() if level else None,
        budget_tokens=budget if budget is not None and budget > 0 else None,
        include_thoughts=include,
    )


def _render_thinking(config: ir.ReasoningConfig) -> dict[str, Any] | None:
    budget: int | None = None
    level: str | None = None
    if config.enabled is False or config.effort == "none":
        budget = 0
    elif config.effort is not None:
        level = _LEVELS.get(config.effort) or config.effort.upper()
    elif config.budget_tokens is not None:
        budget = config.budget_tokens
    elif config.enabled:
        budget = -1
    thinking = present(
        includeThoughts=config.include_thoughts, thinkingBudget=budget, thinkingLevel=level
    )
    return thinking or None


def _gemini_origin(request: ir.Request) -> bool:
    """Whether the request came from a Gemini client, so its signatures are Gemini's."""
    origin = request.origin
    extra = request.extra
    return (origin is not None and origin.format == NAME) or (
        extra is not None and extra.format == NAME
    )


def with_stand_in_signatures(request: ir.Request) -> ir.Request:
    """``request`` with Google's stand-in signature on the first tool call of every assistant
    turn that has no signature Gemini would accept (G.2).

    Gemini 3 rejects a history whose calls lack their signatures (``Function call ... is
    missing a thought_signature``), as every history from another provider does; Google
    documents the stand-in for exactly that, at some cost in quality. For a provider to apply
    to requests bound for models that need it.
    """
    own = _gemini_origin(request)
    messages = []
    for message in request.messages:
        calls = [i for i, p in enumerate(message.content) if isinstance(p, ir.ToolCall)]
        content = list(message.content)
        if message.role is ir.Role.ASSISTANT and calls:
            first = content[calls[0]]
            assert isinstance(first, ir.ToolCall)
            if not (own and signature_out(first.signature)):
                content[calls[0]] = attrs.evolve(first, signature=STAND_IN_SIGNATURE)
        messages.append(attrs.evolve(message, content=content))
    return attrs.evolve(request, messages=messages)


def render_request(request: ir.Request) -> dict[str, Any]:
    """``request`` as the body a Gemini upstream receives (its model goes in the URL)."""
    extra = request.extra.fields if request.extra and request.extra.format == NAME else {}
    signatures = _gemini_origin(request)
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in request.messages:
        if message.role in (ir.Role.SYSTEM, ir.Role.DEVELOPER):
            system += _render_parts(
                [p for p in message.content if isinstance(p, ir.Text)], signatures, names
            )
            continue
        names.update((p.id, p.name) for p in message.content if isinstance(p, ir.ToolCall))
        parts = _render_parts(message.content, signatures, names)
        role = "model" if message.role is ir.Role.ASSISTANT else "user"
        if not parts:
            continue  # Gemini rejects empty parts (G.10)
        last = contents[-1] if contents else None
        if last and role == "user" == last["role"] and _only_results(parts + last["parts"]):
            last["parts"] += parts  # one user content answers a turn's calls (F.4)
        else:
            contents.append({"role": role, "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"role": "user", "parts": system}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_render_tool(t, extra) for t in request.tools]}]
    if extra.get(_TOOLS):
        body["tools"] = [*body.get("tools", ()), *extra[_TOOLS]]
    if request.tool_choice is not None:
        body["toolConfig"] = {"functionCallingConfig": _render_tool_choice(request.tool_choice)}
    generation = present(
        temperature=request.temperature,
        topP=request.top_p,
        topK=request.top_k,
        maxOutputTokens=request.max_tokens,
        stopSequences=list(request.stop) or None,
        seed=request.seed,
        presencePenalty=request.presence_penalty,
        frequencyPenalty=request.frequency_penalty,
        candidateCount=request.n,
    )
    generation |= _render_response_format(request.response_format, extra)
    if (thinking := maybe(request.reasoning, _render_thinking)) is not None:
        generation["thinkingConfig"] = thinking
    if generation:
        body["generationConfig"] = generation
    return _merge_extra(body, request.extra)


def _render_tool(tool: ir.Tool, extra: dict[str, Any]) -> dict[str, Any]:
    declaration = present(name=tool.name, description=tool.description)
    if tool.parameters is not None:
        if tool.name in extra.get(_PARAMETERS_JSON_SCHEMA, ()):
            declaration["parametersJsonSchema"] = dict(tool.parameters)
        elif _has_parameters(schema := clean_schema(tool.parameters)):
            declaration["parameters"] = schema
    for key, value in extra.get(_DECLARATIONS, {}).get(tool.name, {}).items():
        declaration.setdefault(key, value)
    return declaration


def _render_tool_choice(choice: ir.ToolChoice) -> dict[str, Any]:
    if choice.mode is ir.ToolChoiceMode.TOOL and choice.name is not None:
        return {"mode": "ANY", "allowedFunctionNames": [choice.name]}
    modes = {ir.ToolChoiceMode.AUTO: "AUTO", ir.ToolChoiceMode.NONE: "NONE"}
    return {"mode": modes.get(choice.mode, "ANY")}


def _render_response_format(
    format_: ir.ResponseFormat | None, extra: dict[str, Any]
) -> dict[str, Any]:
    if format_ is None:
        return {}
    if format_.type is ir.ResponseFormatType.TEXT:
        return {"responseMimeType": "text/plain"}
    if format_.type is ir.ResponseFormatType.JSON_OBJECT or format_.schema is None:
        return {"responseMimeType": "application/json"}
    if extra.get(_RESPONSE_JSON_SCHEMA):
        return {"responseMimeType": "application/json", "responseJsonSchema": dict(format_.schema)}
    return {"responseMimeType": "application/json", "responseSchema": clean_schema(format_.schema)}


def _merge_extra(body: dict[str, Any], extra: ir.Extra | None) -> dict[str, Any]:
    """``body`` with the fields a Gemini :class:`ir.Extra` kept; what ``body`` says wins.

    The Extra's keys are a top-level field's name (``@`` doubled if it starts with one), or
    a reserved ``@`` key: one per object the IR reads (``@generationConfig``,
    ``@thinkingConfig``, ``@toolConfig``, ``@functionCallingConfig``, ``@systemInstruction``,
    ``@candidate``, ``@usageMetadata``: the unknown fields of that object, put back into it),
    ``@tools`` (tools other than function declarations), ``@declarations`` (a declaration's
    unknown fields, by tool name), ``@parametersJsonSchema`` (the tools whose schema came as
    full JSON Schema) and ``@responseJsonSchema``; the renderers read the last four.
    """
    if extra is None or extra.format != NAME:
        return body
    for key, value in extra.fields.items():
        if key.startswith("@@"):
            body.setdefault(key[1:], value)
        elif key in _SLOTS and isinstance(value, dict):
            target: Any = body
            for step in _SLOTS[key]:
                if isinstance(step, int):  # an existing list item: the first candidate
                    target = target[step] if isinstance(target, list) and target else None
                else:
                    target = target.setdefault(step, {}) if isinstance(target, dict) else None
            if isinstance(target, dict):
                for name, item in value.items():
                    target.setdefault(name, item)
        elif not key.startswith("@"):
            body.setdefault(key, value)
    return body


# --------------------------------------------------------------------------------------------
# Responses

_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
     "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER"}
)  # fmt: skip
_NATURAL = frozenset({"STOP", "FINISH_REASON_UNSPECIFIED"})
_FINISH_REASONS = {
    ir.StopReason.MAX_TOKENS: "MAX_TOKENS",
    ir.StopReason.CONTENT_FILTER: "SAFETY",
    ir.StopReason.ERROR: "OTHER",
}
_RESPONSE_FIELDS = frozenset(
    {"candidates", "usageMetadata", "modelVersion", "responseId", "createTime"}
)
_CANDIDATE_FIELDS = frozenset({"content", "finishReason", "index"})
_USAGE_FIELDS = frozenset(
    {"promptTokenCount", "cachedContentTokenCount", "candidatesTokenCount",
     "thoughtsTokenCount", "toolUsePromptTokenCount", "totalTokenCount"}
)  # fmt: skip


def _finish_reason(stop: ir.StopReason) -> str:
    """F.2: tool turns, stop sequences and pauses all end with ``STOP`` on Gemini."""
    return _FINISH_REASONS.get(stop, "STOP")


def _stop_reason(finish: str | None, tool_calls: bool) -> ir.StopReason:
    """The inverse of :func:`_finish_reason`: ``STOP`` with function calls is a tool turn
    (F.2); filters are content filters; the rest (``MALFORMED_FUNCTION_CALL``, ``OTHER``,
    ``LANGUAGE``...) errors."""
    finish = (finish or "STOP").upper()
    if finish == "MAX_TOKENS":
        return ir.StopReason.MAX_TOKENS
    if finish in _FILTERED or finish.startswith("IMAGE_"):
        return ir.StopReason.CONTENT_FILTER
    if finish not in _NATURAL:
        return ir.StopReason.ERROR
    return ir.StopReason.TOOL_USE if tool_calls else ir.StopReason.END_TURN


def _count(node: Node) -> int:
    return node.optional(lambda n: n.integer(minimum=0)) or 0


def _parse_usage(node: Node) -> ir.Usage:
    thoughts = _count(node["thoughtsTokenCount"])
    return ir.Usage(
        input_tokens=_count(node["promptTokenCount"]) + _count(node["toolUsePromptTokenCount"]),
        output_tokens=_count(node["candidatesTokenCount"]) + thoughts,
        cache_read_tokens=_count(node["cachedContentTokenCount"]),
        reasoning_tokens=thoughts,
    )


def _render_usage(usage: ir.Usage) -> dict[str, Any]:
    """F.3: candidates exclude thoughts; cache writes have no Gemini count."""
    candidates = max(0, usage.output_tokens - usage.reasoning_tokens)
    rendered = {"promptTokenCount": usage.input_tokens, "candidatesTokenCount": candidates}
    if usage.cache_read_tokens:
        rendered["cachedContentTokenCount"] = usage.cache_read_tokens
    if usage.reasoning_tokens:
        rendered["thoughtsTokenCount"] = usage.reasoning_tokens
    rendered["totalTokenCount"] = usage.input_tokens + candidates + usage.reasoning_tokens
    return rendered


def _head(response_id: str, model: str, created: int | None) -> dict[str, Any]:
    """The fields every answer (and every stream chunk) ends with."""
    head = {"modelVersion": model, "responseId": response_id}
    if created is not None:
        head["createTime"] = _rfc3339(created)
    return head


def parse_response(body: object) -> ir.Response:
    """An upstream's ``GenerateContentResponse`` as an IR response (its first candidate).

    A blocked prompt (no candidates, ``promptFeedback.blockReason``) is an empty answer
    stopped by the content filter (G.11).

    Raises:
      UpstreamError: the body is not a GenerateContentResponse.
    """
    root = Node(body, "", upstream_error)
    root.object()
    extra: dict[str, Any] = {}
    _unknown(root, _RESPONSE_FIELDS, extra)
    response_id = root["responseId"].optional(Node.string) or ""
    candidates = root["candidates"].optional(Node.array) or []
    content: list[ir.Part] = []
    finish: str | None = None
    if candidates:
        candidate = candidates[0]
        candidate.object()
        _unknown(candidate, _CANDIDATE_FIELDS, extra, _CANDIDATE)
        parts = candidate["content"]["parts"]
        content = _parse_parts(parts, _Calls(_id_prefix(response_id))) if not parts.absent else []
        finish = candidate["finishReason"].optional(Node.string)
    elif not root["promptFeedback"]["blockReason"].absent:
        finish = "SAFETY"
    usage = root["usageMetadata"]
    _unknown(usage, _USAGE_FIELDS, extra, _USAGE)
    return ir.Response(
        id=response_id,
        model=root["modelVersion"].optional(Node.string) or "",
        content=content,
        stop_reason=_stop_reason(finish, any(isinstance(p, ir.ToolCall) for p in content)),
        usage=usage.optional(_parse_usage) or ir.Usage(),
        created=_parse_time(root["createTime"]),
        extra=ir.Extra(format=NAME, fields=extra) if extra else None,
    )


def render_response(response: ir.Response) -> dict[str, Any]:
    """``response`` as a ``GenerateContentResponse`` for a Gemini client."""
    parts = _render_parts(response.content, True, {})
    candidate: dict[str, Any] = {}
    if parts:
        candidate["content"] = {"role": "model", "parts": parts}
    candidate |= {"finishReason": _finish_reason(response.stop_reason), "index": 0}
    body = {
        "candidates": [candidate],
        "usageMetadata": _render_usage(response.usage),
        **_head(response.id, response.model, response.created),
    }
    return _merge_extra(body, response.extra)


# --------------------------------------------------------------------------------------------
# Errors, models, token counts

# One google.rpc status per kind, so that an error read back keeps its kind (D.4).
_STATUSES = {
    ir.ErrorKind.INVALID_REQUEST: "INVALID_ARGUMENT",
    ir.ErrorKind.AUTHENTICATION: "UNAUTHENTICATED",
    ir.ErrorKind.PERMISSION: "PERMISSION_DENIED",
    ir.ErrorKind.NOT_FOUND: "NOT_FOUND",
    ir.ErrorKind.REQUEST_TOO_LARGE: "OUT_OF_RANGE",
    ir.ErrorKind.RATE_LIMIT: "RESOURCE_EXHAUSTED",
    ir.ErrorKind.TIMEOUT: "DEADLINE_EXCEEDED",
    ir.ErrorKind.OVERLOADED: "UNAVAILABLE",
    ir.ErrorKind.UPSTREAM: "UNKNOWN",
    ir.ErrorKind.INTERNAL: "INTERNAL",
}
_KINDS = {status: kind for kind, status in _STATUSES.items()}


def _error_body(kind: ir.ErrorKind, message: str, code: int) -> dict[str, Any]:
    if not 400 <= code <= 599:  # the SDK reads only 4xx and 5xx codes as errors
        code = status_for_kind(kind)
    return {"error": {"code": code, "message": message, "status": _STATUSES[kind]}}


def render_error(error: MuxError) -> dict[str, Any]:
    """``error`` in Google's envelope (D.4); the HTTP status is ``error.status``. The field
    at fault goes in a ``BadRequest`` detail, a known wait in a ``RetryInfo`` one (which
    Gemini CLI reads)."""
    body = _error_body(error.kind, error.message, error.status)
    details = []
    if error.param is not None:
        violation = {"field": error.param, "description": error.message}
        details.append(
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
        )
    if error.retry_after is not None:
        delay = f"{max(0, round(error.retry_after))}s"
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    if details:
        body["error"]["details"] = details
    return body


def _read_error(error: object, status: int | None) -> tuple[ir.ErrorKind, str | None, int]:
    """The kind, message and status of an ``error`` object; the status string decides the
    kind when it is one of ours, else the code (or ``status``)."""
    fields = error if isinstance(error, dict) else {}
    code = fields.get("code")
    if not (isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599):
        code = status
    name = fields.get("status")
    if isinstance(name, str) and name in _KINDS:
        kind = _KINDS[name]
    else:
        kind = kind_for_status(code) if code is not None else ir.ErrorKind.UPSTREAM
    message = fields.get("message") if isinstance(error, dict) else error
    code = code if code is not None else status_for_kind(kind)
    return kind, message if isinstance(message, str) and message else None, code


def _retry_delay(error: object) -> float | None:
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and re.fullmatch(r"\d+(\.\d+)?s", delay):
            return float(delay[:-1])
    return None


def parse_error(status: int, body: object) -> MuxError:
    """An upstream's error answer (HTTP ``status``, decoded ``body``) as an error to report.

    Never raises. A streamed call without ``alt=sse`` answers errors as a one-element array.
    """
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    fields = error if isinstance(error, dict) else {}
    name = fields.get("status")
    kind = _KINDS.get(name, kind_for_status(status)) if isinstance(name, str) else None
    message = fields.get("message") if isinstance(error, dict) else error
    if isinstance(body, dict) and message is None:
        message = body.get("message")
    elif isinstance(body, str):
        message = body.strip()[:1000]
    if not isinstance(message, str) or not message:
        message = f"the upstream answered HTTP {status} without an error message"
    kind = kind or kind_for_status(status)
    return UpstreamError(kind, message, status=status, retry_after=_retry_delay(error))


#: What mux says of every model's limits, as Gemini's model list has them (1M in, 64k out,
#: the current Gemini models' figures).
INPUT_TOKEN_LIMIT = 1_048_576
OUTPUT_TOKEN_LIMIT = 65_536


def render_model(model: ir.ModelInfo) -> dict[str, Any]:
    """One ``Model`` (D.3): ``name`` is ``models/<id>``."""
    return {
        "name": f"models/{model.id}",
        "baseModelId": model.id,
        "version": "mux",
        "displayName": model.id,
        "description": f"{model.id}, served by mux ({model.owned_by})",
        "inputTokenLimit": INPUT_TOKEN_LIMIT,
        "outputTokenLimit": OUTPUT_TOKEN_LIMIT,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    }


def render_models(models: Sequence[ir.ModelInfo]) -> dict[str, Any]:
    """The model list (one page, no ``nextPageToken``)."""
    return {"models": [render_model(model) for model in models]}


def parse_count_tokens(body: object) -> ir.Request:
    """A ``countTokens`` body, ``{contents}`` or ``{generateContentRequest: {...}}``, as the
    IR request to count (its model is the inner request's, or ``""``).

    Raises:
      RequestError: the body is not a valid countTokens request.
    """
    root = Node(body, "", request_error)
    root.object()
    inner = _get(root, "generateContentRequest")
    if inner.absent:
        return _parse_request(root)
    inner.object()
    model = inner["model"].optional(Node.string) or ""
    request = _parse_request(inner)
    fields = dict(request.extra.fields) if request.extra else {}
    fields.pop("model", None)
    return attrs.evolve(
        request, model=model.removeprefix("models/"), extra=ir.Extra(format=NAME, fields=fields)
    )


def render_count_tokens(count: int) -> dict[str, Any]:
    return {"totalTokens": count}


# --------------------------------------------------------------------------------------------
# Streams


class StreamRenderer:
    """IR stream events to the bytes a Gemini client reads (D.3, protocols.md 0).

    With ``sse`` (``?alt=sse``, what the SDKs ask for) each chunk is ``data: <json>`` and a
    blank line, and nothing else: no ``event:``, no comments, no terminator, which the SDK
    would fail on. Without, the chunks are the elements of one JSON array, written as it
    grows. Every chunk is a whole ``GenerateContentResponse`` carrying only its new parts:
    text and reasoning go out as they come; a tool call's argument fragments are held until
    its :class:`ir.PartEnd` and go out as one whole ``functionCall`` part (F.4). A last chunk
    carries the finish reason and the (cumulative) usage. A :class:`ir.StreamError` is an
    ``{"error": ...}`` chunk, ``error`` first (the SDK's test). Nothing follows either end.
    """

    def __init__(self, request: ir.Request, *, sse: bool = True) -> None:
        self._sse = sse
        self._head: dict[str, Any] = {}
        self._call: tuple[int, str, str, str | None, list[str]] | None = None
        self._usage: ir.Usage | None = None
        self._chunks = 0  # chunks written
        self._opened = False  # the JSON array's "[" is written
        self._ended = False

    def render(self, event: ir.Event) -> bytes:
        """The bytes for ``event``; may be empty."""
        if self._ended:
            return b""
        match event:
            case ir.StreamStart():
                self._head = _head(event.id, event.model, event.created)
                return self._open()
            case ir.TextDelta(text=text) if text:
                return self._content([{"text": text}])
            case ir.ReasoningDelta():
                signature = signature_out(event.signature)
                if event.text or signature:
                    part = {"text": event.text, "thought": True}
                    return self._content([part | present(thoughtSignature=signature)])
            case ir.ToolCallStart():
                self._call = (event.index, event.id, event.name, event.signature, [])
            case ir.ToolArgsDelta() if self._call is not None and self._call[0] == event.index:
                self._call[4].append(event.json)
            case ir.PartEnd() if self._call is not None and self._call[0] == event.index:
                _, call_id, name, signature, fragments = self._call
                self._call = None
                call = ir.ToolCall(id=call_id, name=name, arguments="".join(fragments),
                                   signature=signature)  # fmt: skip
                return self._content(_render_parts([call], True, {}))
            case ir.UsageUpdate():
                self._usage = event.usage
            case ir.Finish():
                candidate = {"finishReason": _finish_reason(event.stop_reason), "index": 0}
                chunk: dict[str, Any] = {"candidates": [candidate]}
                if self._usage is not None:
                    chunk["usageMetadata"] = _render_usage(self._usage)
                return self._end(chunk | self._head)
            case ir.StreamError():
                return self._end(_error_body(event.kind, event.message, event.status))
        return b""

    def _open(self) -> bytes:
        if self._sse or self._opened:
            return b""
        self._opened = True
        return b"["

    def _content(self, parts: list[dict[str, Any]]) -> bytes:
        candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
        return self._chunk({"candidates": [candidate]} | self._head)

    def _chunk(self, body: dict[str, Any]) -> bytes:
        data = dumps(body)
        if self._sse:
            return b"data: " + data + b"\r\n\r\n"
        separator = b"," if self._chunks else b""
        self._chunks += 1
        return self._open() + separator + data + b"\r\n"

    def _end(self, body: dict[str, Any]) -> bytes:
        out = self._chunk(body) + (b"" if self._sse else b"]")
        self._ended = True
        return out


class StreamParser:
    """An upstream's stream (``alt=sse`` chunks, or with ``sse=False`` a streamed JSON array)
    to IR stream events.

    Consecutive text chunks continue one text part and consecutive thought chunks one
    reasoning part; a ``functionCall`` part arrives whole and becomes
    :class:`ir.ToolCallStart`, one :class:`ir.ToolArgsDelta` and :class:`ir.PartEnd` at once.
    A signature on another part follows the rules of the module notes: one riding an empty
    trailing text part goes to the open reasoning part (a :class:`ir.ReasoningDelta` with
    only the signature), or opens a reasoning part of its own when what precedes is text or
    a call. Parts other than these (inline images) have no stream event and are dropped.
    The part open at ``finishReason`` ends there; the last usage and the finish come out at
    :meth:`close`, when the upstream body ends (Gemini has no terminator). Only the first
    candidate is read.

    Raises (from :meth:`feed` and :meth:`close`):
      UpstreamError: the bytes are not a Gemini stream.
    """

    def __init__(self, *, sse: bool = True) -> None:
        self._decoder: SSEDecoder | JSONArrayDecoder = SSEDecoder() if sse else JSONArrayDecoder()
        self._started = False
        self._calls = _Calls()
        self._next = 0  # the IR index of the next part
        self._open: tuple[str, int] | None = None  # ("text" | "reasoning", index)
        self._tool_calls = False
        self._finish: str | None = None
        self._usage: ir.Usage | None = None
        self._done = False

    def feed(self, data: bytes) -> list[ir.Event]:
        """The events the bytes ``data`` completed."""
        return self._decode(lambda: self._decoder.feed(data))

    def close(self) -> list[ir.Event]:
        """End of the upstream body: the finish, or an error if the stream broke off."""
        events = self._decode(self._end_of_body)
        if self._done:
            return events
        self._done = True
        if self._finish is None:
            message = "the upstream stream ended without a finish reason"
            error = ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message=message, status=502)
            return [*events, error]
        usage = [] if self._usage is None else [ir.UsageUpdate(usage=self._usage)]
        stop = _stop_reason(self._finish, self._tool_calls)
        return [*events, *usage, ir.Finish(stop_reason=stop)]

    def _end_of_body(self) -> list[Any]:
        try:
            return self._decoder.close()
        except FramingError:
            if isinstance(self._decoder, SSEDecoder):
                raise
            return []  # an array cut short: the missing finish reason says so

    def _decode(self, decode: Callable[[], list[Any]]) -> list[ir.Event]:
        try:
            messages = decode()
        except FramingError as exc:
            message = f"malformed upstream stream: {exc}"
            raise UpstreamError(ir.ErrorKind.UPSTREAM, message) from exc
        events: list[ir.Event] = []
        for message in messages:
            if isinstance(message, SSEMessage):
                if not message.data.strip():
                    continue
                try:
                    message = loads(message.data)
                except FramingError as exc:
                    text = f"malformed upstream chunk: {exc}"
                    raise UpstreamError(ir.ErrorKind.UPSTREAM, text) from exc
            events += self._chunk(Node(message, "", upstream_error))
        return events

    def _chunk(self, chunk: Node) -> list[ir.Event]:
        if self._done:
            return []
        chunk.object()
        error = chunk["error"]
        if not error.absent and error.value:
            self._done = True
            kind, message, code = _read_error(error.value, None)
            message = message or "the upstream stream failed without an error message"
            return [ir.StreamError(kind=kind, message=message, status=code)]
        events: list[ir.Event] = []
        if not self._started:
            self._started = True
            response_id = chunk["responseId"].optional(Node.string) or ""
            self._calls = _Calls(_id_prefix(response_id))
            events.append(
                ir.StreamStart(
                    id=response_id,
                    model=chunk["modelVersion"].optional(Node.string) or "",
                    created=_parse_time(chunk["createTime"]),
                )
            )
        candidates = chunk["candidates"].optional(Node.array) or []
        if self._finish is None and candidates:
            candidate = candidates[0]
            for part in candidate["content"]["parts"].optional(Node.array) or ():
                events += self._part(part)
            if (finish := candidate["finishReason"].optional(Node.string)) is not None:
                self._finish = finish
                events += self._close_part()
        elif self._finish is None and not chunk["promptFeedback"]["blockReason"].absent:
            self._finish = "SAFETY"
        if not chunk["usageMetadata"].absent:
            self._usage = _parse_usage(chunk["usageMetadata"])
        return events

    def _part(self, node: Node) -> list[ir.Event]:
        parsed: list[ir.Part] = []
        _parse_part(node, self._calls, parsed)
        events: list[ir.Event] = []
        for part in parsed:
            if isinstance(part, ir.Text):
                events.append(ir.TextDelta(index=self._part_index("text", events), text=part.text))
            elif isinstance(part, ir.Reasoning) and (part.text or part.signature):
                # A thought continues the open reasoning part, and a signature riding an
                # empty part goes to it; after text (or a call) a reasoning part opens.
                index = self._part_index("reasoning", events)
                events.append(
                    ir.ReasoningDelta(index=index, text=part.text, signature=part.signature)
                )
            elif isinstance(part, ir.ToolCall):
                events += self._close_part()
                index, self._next = self._next, self._next + 1
                self._tool_calls = True
                events += [
                    ir.ToolCallStart(index=index, id=part.id, name=part.name,
                                     signature=part.signature),  # fmt: skip
                    ir.ToolArgsDelta(index=index, json=part.arguments),
                    ir.PartEnd(index=index),
                ]
        return events

    def _part_index(self, kind: str, events: list[ir.Event]) -> int:
        """The index of the open part of ``kind``; another part is ended and one opened if
        need be."""
        if self._open is None or self._open[0] != kind:
            events += self._close_part()
            self._open = (kind, self._next)
            self._next += 1
        return self._open[1]

    def _close_part(self) -> list[ir.Event]:
        if self._open is None:
            return []
        index, self._open = self._open[1], None
        return [ir.PartEnd(index=index)]
