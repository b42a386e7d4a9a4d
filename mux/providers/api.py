"""API-key providers: OpenAI-compatible, OpenAI Responses, Anthropic, Gemini, Vertex AI, Ollama.

One :class:`ApiProvider` per ``[[providers]]`` entry; each API key is one :class:`Account`.
The provider knows its vendor's URLs, auth headers and quirks; the wire format is the job of
the format module (``mux.formats``), the HTTP of :class:`mux.upstream.Upstreams`.

Theory of operation
-------------------
* **Rendering.** A request whose ``origin`` was parsed from the provider's own format (an
  Anthropic client in front of an Anthropic upstream) is a *same-format hop*: the client's
  body goes out as it came, with only ``model`` (Gemini: nothing, the model is in the URL)
  and the streaming flag changed, plus the client's meaning-bearing headers
  (``anthropic-beta``), so that fields mux does not model reach the upstream untouched. Any
  other request is rendered by the format module. Headers are layered: the request's own,
  then the entry's ``headers``, then auth, which neither the client nor the config can
  override.
* **Streams.** The upstream stream's events are held back until the first content event
  (text, reasoning or a tool call). An error before it (an HTTP error, a timeout, or an error
  inside an HTTP 200 stream, which Codex- and Gemini-style upstreams send) raises
  :class:`~mux.errors.MuxError` from the first ``__anext__``, so the router can try another
  account; after it, failures arrive as a final :class:`ir.StreamError`.
* **Errors.** Non-2xx answers go through the format's ``parse_error``; :func:`retry_after`
  reads how long to wait from the headers and the body (providers.md A). No message or log
  line ever carries an account's secret: the upstream's own messages are scrubbed too (an
  upstream may echo the key it refused). Google answers a bad key with a 400
  ``API_KEY_INVALID``; it is reported as AUTHENTICATION (401), the account's fault, so that
  the router moves to another key rather than blaming the request.
* **Token counts.** Anthropic, Gemini and Vertex AI count upstream (with only the fields
  their counting endpoints accept); the other APIs have none, and get a local estimate.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from types import ModuleType
from typing import Any

import attrs
import trio

from mux import ir
from mux.config import SUBSCRIPTION_TYPES, Config, ModelAlias, ProviderConfig
from mux.errors import MuxError, UpstreamError
from mux.formats import anthropic, gemini, ollama, openai_chat, openai_responses
from mux.framing import FramingError, dumps, loads
from mux.providers import Account, AccountProvider
from mux.providers import fake as fake_provider
from mux.upstream import Reply, Timeouts, Upstreams, scrub

__all__ = [
    "ANTHROPIC_VERSION",
    "ApiCall",
    "ApiProvider",
    "FORMATS",
    "discover_models",
    "providers_from_config",
    "retry_after",
    "vertex_base_url",
]

log = logging.getLogger("mux.providers")

#: The format module each provider type speaks.
FORMATS: dict[str, ModuleType] = {
    "openai": openai_chat,
    "openai-responses": openai_responses,
    "anthropic": anthropic,
    "gemini": gemini,
    "vertex": gemini,
    "ollama": ollama,
}

#: The Messages API version mux speaks; a client's own ``anthropic-version`` wins on a
#: same-format hop.
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_VERTEX_LOCATION = "us-central1"

# What count_tokens endpoints accept (anything else is refused with a 400).
_ANTHROPIC_COUNT_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"}
)
_VERTEX_COUNT_FIELDS = frozenset({"contents", "systemInstruction", "tools", "generationConfig"})

# Client headers that never travel upstream: credentials and framing are mux's to set.
_NOT_FORWARDED = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key",
    "cookie", "host", "content-length", "content-type", "transfer-encoding", "connection",
    "accept-encoding", "keep-alive", "te", "upgrade",
})  # fmt: skip

_CONTENT = (ir.TextDelta, ir.ReasoningDelta, ir.ToolCallStart)
#: Pages of a model listing read at most (each page holds up to 1000 models).
_MAX_PAGES = 20


def vertex_base_url(location: str | None) -> str:
    """The service root of Vertex AI's located endpoints: ``https://{location}-aiplatform
    .googleapis.com``, or ``https://aiplatform.googleapis.com`` for ``global``."""
    location = location or DEFAULT_VERTEX_LOCATION
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


@attrs.frozen
class ApiCall:
    """One HTTP call to the upstream: where, what, and with which headers."""

    url: str
    body: dict[str, Any]
    headers: dict[str, str]


class ApiProvider:
    """One ``[[providers]]`` entry of any type but ``fake``; see the module docstring.

    Args:
      config: the entry.
      upstreams: the shared HTTP clients (open for as long as the provider is used).
    """

    def __init__(
        self, config: ProviderConfig, upstreams: Upstreams, *, api: str | None = None
    ) -> None:
        api = api or config.type
        if api not in FORMATS:
            raise ValueError(f"{config.name}: ApiProvider cannot serve type {config.type!r}")
        self.config = config
        self.name = config.name
        self.priority = config.priority
        self.weight = config.weight
        #: The API the upstream speaks (a key of FORMATS); subclasses for other services
        #: that speak one of them (subscriptions) pass it as ``api``.
        self.type = api
        self._upstreams = upstreams
        self._timeouts = Timeouts.of(config)
        self._base = (config.url or "").rstrip("/")
        keys = config.api_keys or [""]  # a keyless service (Ollama, a local server): one account
        self._accounts = tuple(
            Account(provider=config.name, id=f"{config.name}#{i + 1}", secret=key)
            for i, key in enumerate(keys)
        )
        # Client-facing name -> upstream name, configured order.
        self._models: dict[str, str] = {}
        for entry in config.models:
            if isinstance(entry, ModelAlias):
                if entry.alias:
                    self._models.setdefault(entry.alias, entry.name)
                self._models.setdefault(entry.name, entry.name)
            else:
                self._models.setdefault(entry, entry)
        self._discovered: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"ApiProvider(name={self.name!r}, type={self.type!r})"

    @property
    def format(self) -> ModuleType:
        """The format module the upstream speaks."""
        return FORMATS[self.type]

    # ----------------------------------------------------------------------------------------
    # Accounts and models

    def accounts(self) -> Sequence[Account]:
        return self._accounts

    def models(self) -> Sequence[ir.ModelInfo]:
        """The configured names and aliases, then the discovered names."""
        names = dict.fromkeys([*self._models, *self._discovered])
        return [ir.ModelInfo(id=name, owned_by=self.name) for name in names]

    def upstream_model(self, model: str) -> str | None:
        if model in self._models:
            return self._models[model]
        return model if model in self._discovered else None

    def quota_scope(self, model: str) -> str | None:
        """Each model has its own rate limits (API keys); subscriptions override this."""
        return model

    async def discover(self) -> list[str]:
        """Fetch the upstream's own model list (the ``discover = true`` option); the names
        become servable as they are. A failure is logged (without secrets) and ignored.

        Returns:
          The names found (empty on failure).
        """
        account = self._accounts[0]
        try:
            with self._scrubbed(account):
                names = await self._list_models(account)
        except MuxError as error:
            log.warning("%s: model discovery failed: %s", self.name, error.message)
            return []
        self._discovered = tuple(dict.fromkeys(names))
        log.info("%s: discovered %d models", self.name, len(self._discovered))
        return list(self._discovered)

    async def _list_models(self, account: Account) -> list[str]:
        """Raises: MuxError."""
        if self.type == "vertex":
            raise UpstreamError(
                ir.ErrorKind.NOT_FOUND, "Vertex AI has no model listing for API keys"
            )
        path, cursor = {
            "openai": ("/models", None),
            "openai-responses": ("/models", None),
            "anthropic": ("/v1/models?limit=1000", "after_id"),
            "gemini": ("/v1beta/models?pageSize=1000", "pageToken"),
            "ollama": ("/api/tags", None),
        }[self.type]
        names: list[str] = []
        query = ""
        for _ in range(_MAX_PAGES):
            reply = await self._upstreams.get(
                self._base + path + query,
                headers=self._headers(account, {}, accept="application/json"),
                provider=self.name,
                timeouts=self._timeouts,
                proxy_url=self.config.proxy_url,
            )
            body = self._json(reply)
            found, after = _listed_models(self.type, body)
            names += found
            if cursor is None or after is None:
                break
            query = f"&{cursor}={urllib.parse.quote(after)}"
        return names

    # ----------------------------------------------------------------------------------------
    # Answers

    async def complete(self, request: ir.Request, account: Account) -> ir.Response:
        call = self._generate(request, account, stream=False)
        with self._scrubbed(account):
            reply = await self._post(call)
            answer = self._unwrap(self._json(reply))
            return self.format.parse_response(answer)  # type: ignore[no-any-return]

    async def stream(self, request: ir.Request, account: Account) -> AsyncIterator[ir.Event]:
        """Answer as stream events; see the module docstring for when errors raise."""
        call = self._generate(request, account, stream=True)
        with self._scrubbed(account):
            async with self._upstreams.open_stream(
                "POST",
                call.url,
                headers=call.headers,
                body=dumps(call.body),
                provider=self.name,
                timeouts=self._timeouts,
                proxy_url=self.config.proxy_url,
            ) as response:
                if not 200 <= response.status < 300:
                    body = await response.read()
                    raise self._error(Reply(status=response.status, headers=response.headers,
                                            body=body))
                parser = self._stream_parser()
                held: list[ir.Event] = []  # events before the first content event
                content = finished = False
                async with aclosing(response.chunks()) as chunks:
                    more = True
                    while more:
                        try:
                            chunk = await anext(chunks, None)
                            more = chunk is not None
                            events = parser.feed(chunk) if more else parser.close()
                        except MuxError as error:  # a timeout, a broken connection, bad bytes
                            if finished:  # the answer is whole: what follows does not matter
                                return
                            more = False
                            events = [_stream_error(error, account)]
                        for event in events:
                            if finished:
                                break
                            if not content:
                                if isinstance(event, ir.StreamError):
                                    raise UpstreamError(event.kind, event.message,
                                                        status=event.status)
                                held.append(event)
                                if not isinstance(event, (*_CONTENT, ir.Finish)):
                                    continue
                                content = True
                                for early in held:
                                    yield early
                                held.clear()
                            else:
                                yield _scrub_event(event, account)
                                if isinstance(event, ir.StreamError):
                                    return  # nothing follows; closing drops the connection
                            # After the finish, read on to the end of the body (events
                            # ignored) so that the connection goes back to the pool.
                            finished = isinstance(event, ir.Finish)
                for event in held:  # a stream that ended without finishing
                    yield event

    async def count_tokens(self, request: ir.Request, account: Account) -> int:
        """The upstream's count for Anthropic, Gemini and Vertex AI. The other APIs have no
        counting endpoint: the fake provider's estimate (about four characters a token, over
        all prompt text, tool arguments and tool definitions) stands in for it."""
        if self.type not in ("anthropic", "gemini", "vertex"):
            return fake_provider.estimate_input_tokens(request)
        call = self._count(request, account)
        with self._scrubbed(account):
            body = self._json(await self._post(call))
            key = "input_tokens" if self.type == "anthropic" else "totalTokens"
            # proto3 JSON leaves out zeros: a missing totalTokens is 0.
            count = body.get(key, 0 if key == "totalTokens" else None)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise UpstreamError(
                    ir.ErrorKind.UPSTREAM, f"{self.name}: the token count has no {key}"
                )
            return count

    # ----------------------------------------------------------------------------------------
    # Calls

    def _generate(self, request: ir.Request, account: Account, *, stream: bool) -> ApiCall:
        body, headers = self._body(request, stream=stream)
        body, headers = self._shape(body, headers, request, account)
        url = self._generate_url(request, stream=stream)
        accept = "text/event-stream" if stream and self.type != "ollama" else "application/json"
        return ApiCall(url, body, self._headers(account, headers, accept=accept))

    def _shape(
        self, body: dict[str, Any], headers: dict[str, str], request: ir.Request,
        account: Account,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """A generation call's body and client headers as the service wants them: the API's
        own as they are; subclasses (subscriptions) add what their service requires."""
        return body, headers

    def _unwrap(self, body: Any) -> Any:
        """The API's answer inside a whole upstream body: the body itself; subclasses for
        services that wrap answers in an envelope (Code Assist's ``{"response": ...}``)
        take it out, as :meth:`_shape` puts requests in."""
        return body

    def _stream_parser(self) -> Any:
        """The parser of one upstream stream (the format's ``StreamParser``; a subclass for
        a service that wraps each event returns one that unwraps them)."""
        return self.format.StreamParser()

    def _generate_url(self, request: ir.Request, *, stream: bool) -> str:
        """Where a generation call goes."""
        model = request.model
        match self.type:
            case "openai":
                url = self._base + "/chat/completions"
            case "openai-responses":
                url = self._base + "/responses"
            case "anthropic":
                url = self._base + "/v1/messages"
            case "ollama":
                url = self._base + "/api/chat"
            case _:  # gemini, vertex
                action = "streamGenerateContent?alt=sse" if stream else "generateContent"
                url = self._google_url(model, action)
        return url

    def _body(self, request: ir.Request, *, stream: bool) -> tuple[dict[str, Any], dict[str, str]]:
        """The JSON body for ``request`` and the client headers a same-format hop carries."""
        origin = request.origin
        format_ = self.format
        # An Ollama client's /api/generate body is Ollama's format too, but not /api/chat's.
        same = origin is not None and origin.format == format_.NAME and (
            self.type != "ollama" or isinstance(origin.body.get("messages"), list)
        )
        if same and origin is not None:
            body = dict(origin.body)
            headers = dict(origin.headers)
            body["model"] = request.model
        else:
            rendered = attrs.evolve(request, stream=stream, stream_usage=stream)
            if format_ is gemini:
                # A history from another provider carries no Gemini signatures, and Gemini 3
                # rejects tool calls without one (protocols.md G.2): Google's stand-in it is.
                rendered = gemini.with_stand_in_signatures(rendered)
            body = format_.render_request(rendered)
            headers = {}
        match self.type:
            case "openai":
                body.pop("stream", None)
                options = body.pop("stream_options", None)
                if stream:
                    # Usage arrives only when asked for; the router records it.
                    options = options if isinstance(options, dict) else {}
                    body["stream"] = True
                    body["stream_options"] = {**options, "include_usage": True}
            case "openai-responses" | "anthropic":
                body.pop("stream", None)
                if stream:
                    body["stream"] = True
                elif self.type == "openai-responses":
                    body.pop("stream_options", None)  # only allowed with stream
            case "ollama":
                body["stream"] = stream  # Ollama streams unless told not to
            case _:  # gemini, vertex: model and streaming are in the URL
                body.pop("model", None)
                body.pop("stream", None)
        return body, headers

    def _count(self, request: ir.Request, account: Account) -> ApiCall:
        body, headers = self._body(request, stream=False)
        if self.type == "anthropic":
            body, headers = self._shape(body, headers, request, account)
            body = {k: v for k, v in body.items() if k in _ANTHROPIC_COUNT_FIELDS}
            url = self._count_url(request)
        else:
            url = self._google_url(request.model, "countTokens")
            inner = body.get("generateContentRequest")
            if isinstance(inner, dict):  # a client's countTokens body, forwarded
                body = dict(inner)
            body.pop("model", None)
            if self.type == "vertex":
                body = {k: v for k, v in body.items() if k in _VERTEX_COUNT_FIELDS}
            elif set(body) - {"contents"}:
                # System instruction and tools count too: only the wrapped form takes them.
                model = _google_model(request.model)
                body = {"generateContentRequest": {"model": f"models/{model}", **body}}
        return ApiCall(url, body, self._headers(account, headers, accept="application/json"))

    def _count_url(self, request: ir.Request) -> str:
        """Where an Anthropic token count goes."""
        return self._base + "/v1/messages/count_tokens"

    def _google_url(self, model: str, action: str) -> str:
        model = urllib.parse.quote(_google_model(model), safe="/")
        if self.type == "gemini":
            return f"{self._base}/v1beta/models/{model}:{action}"
        config = self.config
        if config.project is None:  # express mode: the API key names the project
            return f"{self._base}/v1/publishers/google/models/{model}:{action}"
        location = config.location or DEFAULT_VERTEX_LOCATION
        base = (config.base_url or vertex_base_url(location)).rstrip("/")
        project = urllib.parse.quote(config.project, safe="")
        where = f"projects/{project}/locations/{urllib.parse.quote(location, safe='')}"
        return f"{base}/v1/{where}/publishers/google/models/{model}:{action}"

    def _headers(
        self, account: Account, client: Mapping[str, str], *, accept: str
    ) -> dict[str, str]:
        """Client headers, then config headers, then what the API needs, then auth."""
        headers = {"accept": accept}
        headers |= {k.lower(): v for k, v in client.items() if k.lower() not in _NOT_FORWARDED}
        headers |= {k.lower(): v for k, v in self.config.headers.items()}
        headers["content-type"] = "application/json"
        if self.type == "anthropic":
            headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
        return headers | self._auth_headers(account)

    def _auth_headers(self, account: Account) -> dict[str, str]:
        """The headers that carry ``account``'s credential (none for a keyless account)."""
        key = account.secret
        if not key:
            return {}
        match self.type:
            case "anthropic":
                return {"x-api-key": key}
            case "gemini" | "vertex":
                return {"x-goog-api-key": key}
            case _:  # OpenAI and compatibles; Ollama behind an authenticating proxy
                return {"authorization": f"Bearer {key}"}

    async def _post(self, call: ApiCall) -> Reply:
        """POST ``call``; a non-2xx answer raises.

        Raises:
          MuxError: the upstream failed or refused.
        """
        reply = await self._upstreams.post(
            call.url,
            dumps(call.body),
            headers=call.headers,
            provider=self.name,
            timeouts=self._timeouts,
            proxy_url=self.config.proxy_url,
        )
        if not 200 <= reply.status < 300:
            raise self._error(reply)
        return reply

    def _json(self, reply: Reply) -> Any:
        """Raises: UpstreamError (the body is not JSON)."""
        if not 200 <= reply.status < 300:
            raise self._error(reply)
        try:
            return loads(reply.body)
        except FramingError:
            message = f"{self.name}: the upstream's HTTP {reply.status} answer is not JSON"
            raise UpstreamError(ir.ErrorKind.UPSTREAM, message) from None

    def _error(self, reply: Reply) -> MuxError:
        """A non-2xx answer as the error to report, with ``retry_after`` when it says."""
        try:
            body: object = loads(reply.body)
        except FramingError:
            body = reply.body.decode("utf-8", "replace")
        error = self.format.parse_error(reply.status, body)
        if self.type in ("gemini", "vertex") and _google_reason(body) in _GOOGLE_BAD_KEY:
            # Google answers a bad key with 400 INVALID_ARGUMENT; it is the account's fault,
            # not the request's, so say so (the router fails over instead of giving up).
            error = UpstreamError(ir.ErrorKind.AUTHENTICATION, error.message, status=401)
        if error.retry_after is None:
            error.retry_after = retry_after(reply.status, reply.headers, body)
        return error  # type: ignore[no-any-return]

    @contextmanager
    def _scrubbed(self, account: Account) -> Iterator[None]:
        """Re-raise any MuxError with the account's secret taken out of its message."""
        try:
            yield
        except MuxError as error:
            if account.secret and account.secret in error.message:
                clean = scrub(error.message, [account.secret])
                raise UpstreamError(
                    error.kind, clean, status=error.status, param=error.param,
                    retry_after=error.retry_after,
                ) from None
            raise


def _stream_error(error: MuxError, account: Account) -> ir.StreamError:
    message = scrub(error.message, [account.secret])
    return ir.StreamError(kind=error.kind, message=message, status=error.status)


def _scrub_event(event: ir.Event, account: Account) -> ir.Event:
    if isinstance(event, ir.StreamError) and account.secret and account.secret in event.message:
        return attrs.evolve(event, message=scrub(event.message, [account.secret]))
    return event


_GOOGLE_BAD_KEY = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


def _google_reason(body: object) -> str | None:
    """The ``ErrorInfo.reason`` of a Google error body, if it has one."""
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("rpc.ErrorInfo"):
            reason = detail.get("reason")
            return reason if isinstance(reason, str) else None
    return None


def _google_model(model: str) -> str:
    return model.removeprefix("models/")


def _listed_models(type_: str, body: Any) -> tuple[list[str], str | None]:
    """The model names of one page of a listing, and the cursor of the next page if any."""
    if not isinstance(body, dict):
        return [], None
    names: list[str] = []
    if type_ in ("gemini",):
        for model in body.get("models") or ():
            methods = model.get("supportedGenerationMethods") if isinstance(model, dict) else None
            name = model.get("name") if isinstance(model, dict) else None
            if isinstance(name, str) and (methods is None or "generateContent" in methods):
                names.append(_google_model(name))
        token = body.get("nextPageToken")
        return names, token if isinstance(token, str) and token else None
    if type_ == "ollama":
        for model in body.get("models") or ():
            name = model.get("name") or model.get("model") if isinstance(model, dict) else None
            if isinstance(name, str):
                names.append(name)
        return names, None
    for model in body.get("data") or ():
        name = model.get("id") if isinstance(model, dict) else None
        if isinstance(name, str):
            names.append(name)
    last = body.get("last_id")
    more = body.get("has_more") is True and isinstance(last, str)
    return names, last if more else None


# --------------------------------------------------------------------------------------------
# Retry-After

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: object) -> float | None:
    """Seconds of a Go/protobuf duration (``1h2m3.5s``, ``6m0s``, ``20ms``, ``38s``); a bare
    number is seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _instant(text: object) -> float | None:
    """Unix time of an RFC 3339 timestamp, an HTTP date, or a number of Unix seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _body_delay(body: object, now: float) -> float | None:
    """A delay the error body states: Google's ``RetryInfo.retryDelay`` (and the quota
    reset in ``ErrorInfo.metadata``), or OpenAI Codex's ``resets_in_seconds``/``resets_at``."""
    if isinstance(body, list) and body:  # Gemini's array-form stream
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    delays: list[float] = []
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        type_ = str(detail.get("@type", ""))
        if type_.endswith("google.rpc.RetryInfo"):
            if (delay := _duration(detail.get("retryDelay"))) is not None:
                return delay
        if type_.endswith("google.rpc.ErrorInfo") and isinstance(detail.get("metadata"), dict):
            metadata = detail["metadata"]
            if (delay := _duration(metadata.get("quotaResetDelay"))) is not None:
                delays.append(delay)
            elif (at := _instant(metadata.get("quotaResetTimeStamp"))) is not None:
                delays.append(at - now)
    if (delay := _duration(error.get("resets_in_seconds"))) is not None:
        delays.append(delay)
    elif (at := _instant(error.get("resets_at"))) is not None:
        delays.append(at - now)
    return max(delays) if delays else None


_OPENAI_RESETS = (
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
)
_ANTHROPIC_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")


def _header_resets(headers: Mapping[str, str], now: float) -> float | None:
    """The rate-limit reset headers' delay: the limits at zero if any say so, else the
    longest of those given."""
    exhausted: list[float] = []
    given: list[float] = []
    pairs = [(remaining, reset, _duration) for remaining, reset in _OPENAI_RESETS]
    for limit in _ANTHROPIC_LIMITS:
        prefix = f"anthropic-ratelimit-{limit}"
        pairs.append((f"{prefix}-remaining", f"{prefix}-reset", None))
    for remaining, reset, as_duration in pairs:
        if reset not in headers:
            continue
        if as_duration is not None:
            delay = as_duration(headers[reset])
        else:
            at = _instant(headers[reset])
            delay = None if at is None else at - now
        if delay is None:
            continue
        given.append(delay)
        if headers.get(remaining, "").strip() == "0":
            exhausted.append(delay)
    # Claude subscriptions: one unified window (its reset in Unix seconds).
    for name, value in headers.items():
        if name.startswith("anthropic-ratelimit-unified") and name.endswith("-reset"):
            if (at := _instant(value)) is not None:
                given.append(at - now)
    chosen = exhausted or given
    return max(chosen) if chosen else None


def retry_after(
    status: int, headers: Mapping[str, str], body: object, *, now: float | None = None
) -> float | None:
    """Seconds to wait before retrying, as an upstream's error answer states it, or None.

    In order: ``retry-after-ms``; ``retry-after`` (seconds or an HTTP date); the body
    (Google's ``RetryInfo.retryDelay``, its quota reset, Codex's ``resets_in_seconds``); and,
    on a 429, the rate-limit reset headers (OpenAI's ``x-ratelimit-reset-*`` durations,
    Anthropic's ``anthropic-ratelimit-*-reset`` timestamps). Never negative.
    """
    now = time.time() if now is None else now
    headers = {k.lower(): v for k, v in headers.items()}
    delay: float | None = None
    if "retry-after-ms" in headers:
        try:
            delay = float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    if delay is None and "retry-after" in headers:
        value = headers["retry-after"].strip()
        try:
            delay = float(value)
        except ValueError:
            at = _instant(value)
            delay = None if at is None else at - now
    if delay is None:
        delay = _body_delay(body, now)
    if delay is None and status == 429:
        delay = _header_resets(headers, now)
    if delay is None or delay != delay:  # NaN
        return None
    return max(0.0, delay)


# --------------------------------------------------------------------------------------------
# The configured providers


def providers_from_config(config: Config, upstreams: Upstreams) -> list[AccountProvider]:
    """One provider per ``[[providers]]`` entry, in order, and the implicit fake provider.

    Entries of subscription types (``claude``, ``codex``, ...) are left out: their accounts
    are the auth dir's, served by :func:`mux.providers.subscriptions.subscription_providers`.

    A ``type = "fake"`` entry is a FakeProvider answering from ``[fake]`` under the entry's
    name, priority, weight and models (the fake's defaults when it lists none). When no entry
    has type fake, a FakeProvider named ``fake`` is added in a tier below every other (and no
    higher than the fake's own default tier), so ``fake*`` models keep working and never
    shadow a real upstream.
    """
    providers: list[AccountProvider] = []
    for entry in config.providers:
        if entry.type in SUBSCRIPTION_TYPES:
            continue  # served by mux.providers.subscriptions.subscription_providers
        if entry.type == "fake":
            providers.append(_fake(config, entry.name, entry.priority, entry.weight,
                                   entry.models or None))
        else:
            providers.append(ApiProvider(entry, upstreams))
            if not entry.models and not entry.discover:
                log.warning("%s: no models are configured and discover is off: the provider "
                            "serves nothing", entry.name)
    if not any(entry.type == "fake" for entry in config.providers):
        lowest = min((entry.priority for entry in config.providers), default=0)
        priority = min(lowest - 1, _FAKE_PRIORITY)
        name = "mux-fake" if any(e.name == "fake" for e in config.providers) else "fake"
        providers.append(_fake(config, name, priority, 1, None))
    return providers


async def discover_models(providers: Sequence[AccountProvider]) -> None:
    """Run :meth:`ApiProvider.discover` for every provider whose entry says ``discover =
    true``, concurrently (the CLI calls this once at start-up; failures are only logged)."""
    wanted = [p for p in providers if isinstance(p, ApiProvider) and p.config.discover]
    async with trio.open_nursery() as nursery:
        for provider in wanted:
            nursery.start_soon(provider.discover)


#: The built-in fake's own tier (FakeProvider's default).
_FAKE_PRIORITY: int = attrs.fields(fake_provider.FakeProvider).priority.default


def _fake(
    config: Config, name: str, priority: int, weight: int,
    models: Sequence[str | ModelAlias] | None,
) -> AccountProvider:
    return fake_provider.FakeProvider(
        config.fake, name=name, priority=priority, weight=weight, models=models
    )
