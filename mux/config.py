"""Configuration: TOML in (stdlib ``tomllib``), TOML out (``tomli_w``), cattrs in between.

Keys are kebab-case in the file and snake_case on the attrs classes; the converter renames
every field, forbids unknown keys, and reports every problem at once as lines naming the key
path and what was expected (:class:`ConfigError`).

Where the file is looked for (:func:`find_config_path`): ``--config``, else ``$MUX_CONFIG``,
else ``$XDG_CONFIG_HOME/mux/config.toml`` (``~/.config/mux/config.toml``). No file means the
defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
import tomli_w
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

__all__ = [
    "Config",
    "ConfigError",
    "FakeConfig",
    "FakeRule",
    "FakeToolCall",
    "ModelAlias",
    "PROVIDER_BASE_URLS",
    "ProviderConfig",
    "RoutingConfig",
    "SUBSCRIPTION_TYPES",
    "default_auth_dir",
    "default_config_path",
    "dump_config",
    "find_config_path",
    "load_config",
    "parse_config",
    "write_new_config",
]

#: The default body limit: 50 MiB holds a long agent transcript with a few images.
DEFAULT_MAX_REQUEST_SIZE = 50 * 1024 * 1024


def _check_regex(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{_kebab(attribute.name)}: expected a regular expression, got {value!r}: {exc}") from None


def _check_port(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{_kebab(attribute.name)}: expected a port number from 0 to 65535, got {value}")


def _check_error_status(instance: Any, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 400 <= value <= 599:
        raise ValueError(f"{_kebab(attribute.name)}: expected an HTTP error status from 400 to 599, got {value}")


def _check_non_negative(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{_kebab(attribute.name)}: expected a number of milliseconds >= 0, got {value}")


def _check_positive(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{_kebab(attribute.name)}: expected a positive number, got {value}")


@attrs.frozen(kw_only=True)
class FakeToolCall:
    """``tool-call = { name = "...", arguments = { ... } }`` in a fake rule."""

    name: str
    arguments: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class FakeRule:
    """One ``[[fake.rules]]`` entry: how the fake provider answers matching prompts."""

    #: A regular expression searched for in the newest user turn's text.
    match: str = attrs.field(validator=_check_regex)
    reply: str | None = None
    reasoning: str | None = None
    tool_call: FakeToolCall | None = None
    #: Fail with this HTTP status and a provider-style error body.
    status: int | None = attrs.field(default=None, validator=_check_error_status)


@attrs.frozen(kw_only=True)
class FakeConfig:
    """The ``[fake]`` table: the built-in fake provider."""

    models: list[str] = attrs.field(factory=lambda: ["fake*"])
    first_token_ms: float = attrs.field(default=0.0, validator=_check_non_negative)
    chunk_ms: float = attrs.field(default=0.0, validator=_check_non_negative)
    rules: list[FakeRule] = attrs.field(factory=list)


#: The ``type`` of a ``[[providers]]`` entry, and the service root each defaults to.
PROVIDER_BASE_URLS: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "openai-responses": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "vertex": "https://aiplatform.googleapis.com",
    "ollama": "http://127.0.0.1:11434",
    "fake": None,
    # Subscription accounts (``mux login``): their API roots (mux/providers/catalog.py holds
    # the rest of what each needs).
    "claude": "https://api.anthropic.com",
    "codex": "https://chatgpt.com/backend-api/codex",
    "copilot": "https://api.githubcopilot.com",
    "gemini-cli": "https://cloudcode-pa.googleapis.com",
    "antigravity": "https://daily-cloudcode-pa.googleapis.com",
}

#: The provider types whose accounts are OAuth logins kept in the auth dir, not API keys.
SUBSCRIPTION_TYPES = ("claude", "codex", "copilot", "gemini-cli", "antigravity")

STRATEGIES = ("round-robin", "fill-first", "least-busy")


def _check_choice(options: Any) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in options:
            expected = ", ".join(repr(o) for o in options)
            raise ValueError(f"{_kebab(attribute.name)}: expected one of {expected}, got {value!r}")

    return check


def _check_seconds(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{_kebab(attribute.name)}: expected a number of seconds > 0, got {value}")


@attrs.frozen(kw_only=True)
class ModelAlias:
    """``{ name = "upstream-name", alias = "what-clients-ask-for" }`` in a provider's models."""

    name: str
    alias: str | None = None


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """One ``[[providers]]`` entry: an upstream service and its accounts."""

    name: str
    type: str = attrs.field(validator=_check_choice(tuple(PROVIDER_BASE_URLS)))
    #: The service root as its vendor's SDKs take it; None means the real service.
    base_url: str | None = None
    #: One account per key.
    api_keys: list[str] = attrs.field(factory=list)
    models: list[str | ModelAlias] = attrs.field(factory=list)
    #: Fetch the model list from the upstream at start-up, in addition to ``models``.
    discover: bool = False
    headers: dict[str, str] = attrs.field(factory=dict)
    proxy_url: str | None = None
    priority: int = 0
    weight: int = attrs.field(default=1, validator=_check_positive)
    #: Vertex AI: the Google Cloud project and location of the URL.
    project: str | None = None
    location: str | None = None
    #: Subscription types: where OAuth happens, for tests and unusual networks; None means
    #: the provider's real endpoints. ``urls`` overrides any other URL a provider needs, by
    #: the names the README lists.
    oauth_authorize_url: str | None = None
    oauth_token_url: str | None = None
    oauth_device_url: str | None = None
    urls: dict[str, str] = attrs.field(factory=dict)
    connect_timeout: float = attrs.field(default=10.0, validator=_check_seconds)
    #: From sending the request to the first byte of the answer.
    first_byte_timeout: float = attrs.field(default=120.0, validator=_check_seconds)
    #: Idle time allowed between two chunks of a streamed answer.
    stream_timeout: float = attrs.field(default=120.0, validator=_check_seconds)

    @property
    def url(self) -> str | None:
        """``base_url``, or the type's real service."""
        return self.base_url or PROVIDER_BASE_URLS[self.type]


@attrs.frozen(kw_only=True)
class RoutingConfig:
    """The ``[routing]`` table: account choice, cooldowns, retries and fallbacks."""

    strategy: str = attrs.field(default="round-robin", validator=_check_choice(STRATEGIES))
    #: Attempts per request (across accounts and providers) before giving up.
    request_retry: int = attrs.field(default=3, validator=_check_positive)
    #: Seconds: the cap on the backoff between attempts.
    max_retry_interval: float = attrs.field(default=30.0, validator=_check_seconds)
    #: Seconds: the cap on the cooldowns mux picks itself: the exponential backoff of
    #: transient failures and of rate limits that name no reset time, and the cooldown of an
    #: account failing authentication or out of credit. The account is probed after it.
    max_cooldown: float = attrs.field(default=3600.0, validator=_check_seconds)
    #: Seconds: the cap on a cooldown whose end the upstream names on a rate limit or quota
    #: (``Retry-After``, Codex's ``resets_at``, Antigravity's ``quotaResetDelay``, Claude's
    #: ``anthropic-ratelimit-unified-reset``): such a reset, even days away, is honoured up
    #: to this (default 7 days), then the account is probed again.
    max_quota_cooldown: float = attrs.field(default=7 * 86400.0, validator=_check_seconds)
    #: Models to try, in order, when every account of a model fails.
    fallbacks: dict[str, list[str]] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration file."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8317, validator=_check_port)
    max_request_size: int = attrs.field(default=DEFAULT_MAX_REQUEST_SIZE, validator=_check_positive)
    fake: FakeConfig = attrs.field(factory=FakeConfig)
    providers: list[ProviderConfig] = attrs.field(factory=list)
    routing: RoutingConfig = attrs.field(factory=RoutingConfig)
    #: Where subscription accounts live, one JSON file each; None: ~/.config/mux/auth/
    #: (under ``$XDG_CONFIG_HOME`` when set).
    auth_dir: str | None = None
    #: Seconds before expiry at which an OAuth token is refreshed.
    refresh_lead: float = attrs.field(default=300.0, validator=_check_seconds)


class ConfigError(Exception):
    """The configuration is unusable; ``str()`` is a message for a person, one problem a line."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)

    def _reject_bool(value: Any, type_: type) -> Any:
        # TOML booleans are not numbers, whatever Python thinks of bool being an int.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected {'an integer' if type_ is int else 'a number'}")
        if type_ is int and not isinstance(value, int):
            raise TypeError("expected an integer")
        return type_(value)

    def _strict_str(value: Any, _: type) -> str:
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value

    converter.register_structure_hook(int, _reject_bool)
    converter.register_structure_hook(float, _reject_bool)
    converter.register_structure_hook(str, _strict_str)

    def _structure_bool(value: Any, _: type) -> bool:
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value

    converter.register_structure_hook(bool, _structure_bool)

    def _strict_list_factory(type_: Any, conv: cattrs.Converter) -> Any:
        structure_items = list_structure_factory(type_, conv)

        def _strict_list(value: Any, t: Any) -> list[Any]:
            if not isinstance(value, list):
                raise TypeError("expected an array")
            return structure_items(value, t)  # type: ignore[no-any-return]

        return _strict_list

    converter.register_structure_hook_factory(
        lambda t: getattr(t, "__origin__", None) is list, _strict_list_factory
    )

    def _strict_dict_factory(type_: Any, conv: cattrs.Converter) -> Any:
        key_type, value_type = getattr(type_, "__args__", (Any, Any))
        structure_items = mapping_structure_factory(type_, conv)

        def _strict_dict(value: Any, t: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise TypeError("expected a table")
            if value_type is Any:  # free-form (tool-call arguments): any TOML value
                return dict(value)
            return structure_items(value, t)  # type: ignore[no-any-return]

        return _strict_dict

    converter.register_structure_hook_factory(
        lambda t: getattr(t, "__origin__", None) is dict, _strict_dict_factory
    )

    def _renames(cls: type) -> dict[str, Any]:
        return {a.name: override(rename=_kebab(a.name)) for a in attrs.fields(cls)}

    def _structure_model(value: Any, _: Any) -> str | ModelAlias:
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            return converter.structure(value, ModelAlias)  # type: ignore[no-any-return]
        raise TypeError("expected a model name or a table { name = ..., alias = ... }")

    converter.register_structure_hook(str | ModelAlias, _structure_model)

    # Leaves first: a generated function binds the hooks of nested classes when it is made.
    for cls in (FakeToolCall, FakeRule, FakeConfig, ModelAlias, ProviderConfig, RoutingConfig,
                Config):
        converter.register_structure_hook(
            cls, make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True, **_renames(cls))
        )
        converter.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, converter, _cattrs_omit_if_default=False, **_renames(cls))
        )
    return converter


_converter = _make_converter()


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown key(s) {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, (ValueError, TypeError)) and "expected" in str(exc):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required key is missing"
    if attrs.has(type_):
        return "expected a table"
    return f"invalid value, expected {getattr(type_, '__name__', type_)}"


def _describe(exc: BaseException, path: str) -> list[str]:
    """Turn cattrs' exception tree into ``key.path: what was expected`` lines."""
    lines = []
    for message in cattrs.transform_error(exc, path="$", format_exception=_format_exception):
        reason, _, where = message.rpartition(" @ ")
        key = _kebab(where.removeprefix("$").lstrip("."))
        # Validators name their own field ("port: expected ..."): fold it into the path.
        field = re.match(r"([a-z][a-z0-9-]*): (expected .*)", reason, re.DOTALL)
        if field:
            key = f"{key}.{field[1]}" if key else field[1]
            reason = field[2]
        lines.append(f"{path}: {key or '(top level)'}: {reason}")
    return lines


def parse_config(data: Mapping[str, Any], *, source: str = "config") -> Config:
    """Structure a decoded TOML document into a :class:`Config`.

    Raises:
      ConfigError: naming every bad key and what was expected.
    """
    try:
        return _converter.structure(dict(data), Config)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise ConfigError("\n".join(_describe(exc, source))) from None


def load_config(path: Path | None) -> Config:
    """Read the config file at ``path``; ``None`` (or a missing default file) gives defaults.

    Raises:
      ConfigError: the file is unreadable, not TOML, or has bad keys.
    """
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(path))


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/mux/config.toml``, or ``~/.config/mux/config.toml``."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mux" / "config.toml"


def default_auth_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/mux/auth``, or ``~/.config/mux/auth``."""
    return default_config_path(environ).parent / "auth"


def find_config_path(explicit: str | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The config file to read: ``--config``, ``$MUX_CONFIG`` or the default if it exists.

    An explicitly named file must exist (``load_config`` reports it); the default location
    is optional.
    """
    if explicit:
        return Path(explicit)
    if environ.get("MUX_CONFIG"):
        return Path(environ["MUX_CONFIG"])
    path = default_config_path(environ)
    return path if path.exists() else None


def dump_config(config: Config) -> str:
    """The config as TOML text (None values left out: TOML has no null)."""

    def _drop_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _drop_none(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [_drop_none(v) for v in value]
        return value

    return tomli_w.dumps(_drop_none(_converter.unstructure(config)))


def write_new_config(path: Path, config: Config) -> None:
    """Write ``config`` to ``path`` atomically, refusing to replace an existing file.

    Raises:
      FileExistsError: there is a file at ``path`` already.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dump_config(config), encoding="utf-8")
    try:
        # link() fails if the target exists, unlike rename(): no window to clobber a config
        # another process wrote meanwhile.
        os.link(tmp, path)
    finally:
        tmp.unlink()
