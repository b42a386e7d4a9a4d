"""What subscription providers send: client ids, scopes, URLs, versions, headers, prompts.

Plain data, no logic: providers change these details often (a new client version, a new
beta, a moved endpoint), and this module is the one place to update them. The logic lives in
``mux/providers/claude.py``, ``codex.py``, ``copilot.py``, ``gemini_cli.py`` and
``antigravity.py`` (those two share ``code_assist.py``). Each
``URLS`` table uses the names the config uses: a ``[[providers]]`` entry overrides ``base-url``,
``oauth-authorize-url``, ``oauth-token-url`` and ``oauth-device-url`` with those keys, and
any other name here with ``urls = { name = "..." }`` (the README lists them).

mux identifies itself as the official client of each subscription because the OAuth APIs
serve only those clients' tokens; it does not forge anything beyond what those clients send
about themselves (no fingerprint spoofing, no billing headers of its own).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

__all__ = ["ANTIGRAVITY", "CLAUDE", "CODEX", "COPILOT", "GEMINI_CLI", "GOOGLE", "LOGIN_TIMEOUT"]


class _Kind:
    """A namespace for one provider's data (attributes only)."""


class CLAUDE(_Kind):
    """Claude Pro/Max through Claude Code's OAuth client (providers.md "Claude OAuth")."""

    CLIENT_ID: Final = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    SCOPES: Final = ("org:create_api_key", "user:profile", "user:inference")
    #: Registered with the OAuth client: the port and path cannot change.
    REDIRECT_URI: Final = "http://localhost:54545/callback"
    URLS: Final = MappingProxyType({
        "base-url": "https://api.anthropic.com",
        "oauth-authorize-url": "https://claude.ai/oauth/authorize",
        "oauth-token-url": "https://console.anthropic.com/v1/oauth/token",
        "redirect-uri": REDIRECT_URI,
    })
    #: Extra authorize parameters: ``code=true`` makes the page show the code to paste too.
    AUTHORIZE_PARAMS: Final = MappingProxyType({"code": "true"})
    ANTHROPIC_VERSION: Final = "2023-06-01"
    #: Always sent: OAuth tokens are refused without it.
    OAUTH_BETA: Final = "oauth-2025-04-20"
    #: The betas when the client sends none (Claude Code's own set).
    DEFAULT_BETAS: Final = (
        "claude-code-20250219",
        OAUTH_BETA,
        "interleaved-thinking-2025-05-14",
        "fine-grained-tool-streaming-2025-05-14",
    )
    CLI_VERSION: Final = "2.1.197"
    #: Headers Claude Code sends about itself; a client's own values win.
    HEADERS: Final = MappingProxyType({
        "user-agent": f"claude-cli/{CLI_VERSION} (external, cli)",
        "x-app": "cli",
        "anthropic-dangerous-direct-browser-access": "true",
    })
    #: The system block the OAuth API requires first.
    IDENTITY: Final = "You are Claude Code, Anthropic's official CLI for Claude."
    #: System texts that already identify a Claude Code / Agent SDK client (any of the first
    #: few system blocks starting with one of these): such a system prompt is left untouched.
    KNOWN_IDENTITIES: Final = (
        IDENTITY,
        "You are Claude Code, Anthropic's official CLI for Claude, running within the Claude "
        "Agent SDK.",
        "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
    )
    #: Where Claude Code keeps its tokens (Linux, Windows; macOS uses the Keychain), and its
    #: profile (``oauthAccount.emailAddress``).
    IMPORT_PATH: Final = "~/.claude/.credentials.json"
    PROFILE_PATH: Final = "~/.claude.json"
    #: Served when a ``[[providers]]`` entry lists no models (or there is no entry).
    MODELS: Final = (
        "claude-opus-4-5",
        "claude-opus-4-5-20251101",
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-0",
        "claude-sonnet-4-20250514",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
    )


class CODEX(_Kind):
    """ChatGPT Plus/Pro (Codex) through the Codex CLI's OAuth client (providers.md "Codex")."""

    CLIENT_ID: Final = "app_EMoamEEZ73f0CkXaXp7hrann"
    SCOPES: Final = ("openid", "profile", "email", "offline_access")
    REFRESH_SCOPES: Final = ("openid", "profile", "email")
    REDIRECT_URI: Final = "http://localhost:1455/auth/callback"
    URLS: Final = MappingProxyType({
        "base-url": "https://chatgpt.com/backend-api/codex",
        "oauth-authorize-url": "https://auth.openai.com/oauth/authorize",
        "oauth-token-url": "https://auth.openai.com/oauth/token",
        "redirect-uri": REDIRECT_URI,
        # The device flow (``mux login codex --device``): not RFC 8628 but the Codex CLI's own.
        "oauth-device-url": "https://auth.openai.com/api/accounts/deviceauth/usercode",
        "device-token-url": "https://auth.openai.com/api/accounts/deviceauth/token",
        "device-verification-url": "https://auth.openai.com/codex/device",
        "device-redirect-uri": "https://auth.openai.com/deviceauth/callback",
    })
    AUTHORIZE_PARAMS: Final = MappingProxyType({
        "id_token_add_organizations": "true",
        "codex_cli_simplified_flow": "true",
        "prompt": "login",
    })
    #: The id_token's claim holding the ChatGPT account.
    AUTH_CLAIM: Final = "https://api.openai.com/auth"
    VERSION: Final = "0.21.0"
    HEADERS: Final = MappingProxyType({
        "originator": "codex_cli_rs",
        "version": VERSION,
        "openai-beta": "responses=experimental",
        "user-agent": f"codex_cli_rs/{VERSION}",
    })
    #: ``instructions`` is required; this is sent when the client has none.
    DEFAULT_INSTRUCTIONS: Final = (
        "You are a helpful assistant. Follow the user's instructions; answer concisely and "
        "accurately."
    )
    INCLUDE: Final = ("reasoning.encrypted_content",)
    #: Body fields the ChatGPT backend refuses ("Unsupported parameter"): removed.
    UNSUPPORTED: Final = (
        "previous_response_id",
        "max_output_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "truncation",
        "user",
        "safety_identifier",
        "prompt_cache_retention",
        "service_tier",
        "stream_options",
    )
    #: How long the device code stays valid (the Codex CLI gives up after 15 minutes).
    DEVICE_TIMEOUT: Final = 15 * 60.0
    IMPORT_PATH: Final = "~/.codex/auth.json"
    MODELS: Final = (
        "gpt-5",
        "gpt-5-codex",
        "gpt-5-codex-mini",
        "gpt-5.1",
        "gpt-5.1-codex",
        "gpt-5.1-codex-mini",
        "gpt-5.1-codex-max",
    )


class COPILOT(_Kind):
    """GitHub Copilot through the Copilot editor plugins' GitHub app (providers.md "Copilot")."""

    #: The GitHub app of the Copilot editor plugins (device flow only: no redirect).
    CLIENT_ID: Final = "Iv1.b507a08c87ecfe98"
    SCOPES: Final = ("read:user",)
    DEVICE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
    URLS: Final = MappingProxyType({
        "base-url": "https://api.githubcopilot.com",
        "oauth-device-url": "https://github.com/login/device/code",
        "oauth-token-url": "https://github.com/login/oauth/access_token",
        # The GitHub token buys short-lived Copilot tokens here.
        "token-exchange-url": "https://api.github.com/copilot_internal/v2/token",
        # Who the GitHub token belongs to (``login``): names the account.
        "user-url": "https://api.github.com/user",
    })
    #: What the editor plugins say about themselves on every Copilot call; a client's own
    #: headers do not override these.
    EDITOR_VERSION: Final = "vscode/1.104.1"
    PLUGIN_VERSION: Final = "copilot/1.300.0"
    HEADERS: Final = MappingProxyType({
        "user-agent": "GithubCopilot/1.0",
        "editor-version": EDITOR_VERSION,
        "editor-plugin-version": PLUGIN_VERSION,
        "copilot-integration-id": "vscode-chat",
        "openai-intent": "conversation-panel",
    })
    #: Headers of the GitHub API calls (user, token exchange).
    GITHUB_HEADERS: Final = MappingProxyType({
        "accept": "application/json",
        "user-agent": "GithubCopilot/1.0",
        "editor-version": EDITOR_VERSION,
        "editor-plugin-version": PLUGIN_VERSION,
    })
    #: The Copilot token's life when the exchange names no expiry.
    DEFAULT_TOKEN_LIFE: Final = 25 * 60.0
    #: How long the device code stays valid when GitHub does not say (it says 900 s).
    DEVICE_TIMEOUT: Final = 15 * 60.0
    #: Where the editor plugins keep the GitHub token: ``apps.json`` (newer) and
    #: ``hosts.json`` (older) in this directory; ``mux import copilot`` reads both.
    IMPORT_PATH: Final = "~/.config/github-copilot"
    IMPORT_FILES: Final = ("apps.json", "hosts.json")
    #: Served when a ``[[providers]]`` entry lists no models (``discover = true`` asks
    #: ``{base}/models`` instead).
    MODELS: Final = (
        "gpt-4.1",
        "gpt-4o",
        "gpt-5",
        "gpt-5-mini",
        "o4-mini",
        "claude-sonnet-4",
        "claude-sonnet-4.5",
        "gemini-2.5-pro",
    )


class GOOGLE(_Kind):
    """What the two Google kinds (gemini-cli, antigravity) share: Google's installed-app
    OAuth endpoints and the Code Assist (``v1internal``) onboarding rules."""

    AUTHORIZE_URL: Final = "https://accounts.google.com/o/oauth2/v2/auth"
    TOKEN_URL: Final = "https://oauth2.googleapis.com/token"
    #: Who a token belongs to (``email``), when the token answer has no id_token.
    USERINFO_URL: Final = "https://www.googleapis.com/oauth2/v2/userinfo"
    #: Installed-app flow: a refresh token (offline) and the consent page every time (else
    #: Google sends no new refresh token for an account that consented before).
    AUTHORIZE_PARAMS: Final = MappingProxyType({"access_type": "offline", "prompt": "consent"})
    API_VERSION: Final = "v1internal"
    #: The tier onboarded when ``loadCodeAssist`` names no default (Gemini CLI's fallback).
    LEGACY_TIER: Final = "legacy-tier"
    #: ``onboardUser`` is a long-running operation: polled this often, at most this long.
    ONBOARD_POLL: Final = 5.0
    ONBOARD_TIMEOUT: Final = 60.0


class GEMINI_CLI(_Kind):
    """Gemini Code Assist through Gemini CLI's OAuth client (providers.md "Gemini CLI")."""

    CLIENT_ID: Final = "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com"
    #: Google installed-app client secrets are public: this one ships in Gemini CLI's own
    #: source (packages/core/src/code_assist/oauth2.ts); Google's token endpoint wants it.
    CLIENT_SECRET: Final = "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"
    SCOPES: Final = (
        "https://www.googleapis.com/auth/cloud-platform",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
    )
    REDIRECT_URI: Final = "http://localhost:8085/oauth2callback"
    URLS: Final = MappingProxyType({
        "base-url": "https://cloudcode-pa.googleapis.com",
        "oauth-authorize-url": GOOGLE.AUTHORIZE_URL,
        "oauth-token-url": GOOGLE.TOKEN_URL,
        "redirect-uri": REDIRECT_URI,
        "userinfo-url": GOOGLE.USERINFO_URL,
    })
    #: What Gemini CLI says about itself in ``loadCodeAssist``/``onboardUser``.
    METADATA: Final = MappingProxyType({
        "ideType": "IDE_UNSPECIFIED",
        "platform": "PLATFORM_UNSPECIFIED",
        "pluginType": "GEMINI",
    })
    #: Headers of every Code Assist call; the entry's own ``headers`` win.
    HEADERS: Final = MappingProxyType({
        "user-agent": "google-api-nodejs-client/9.15.1",
        "x-goog-api-client": "gl-node/22.17.0",
        "client-metadata": "ideType=IDE_UNSPECIFIED,platform=PLATFORM_UNSPECIFIED,"
                           "pluginType=GEMINI",
    })
    #: Where Gemini CLI keeps its tokens, and (beside it) which Google account is active.
    IMPORT_PATH: Final = "~/.gemini/oauth_creds.json"
    ACCOUNTS_FILE: Final = "google_accounts.json"
    MODELS: Final = (
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-3-pro-preview",
        "gemini-3-flash-preview",
    )


class ANTIGRAVITY(_Kind):
    """Google Antigravity's Code Assist models through its OAuth client (providers.md
    "Antigravity")."""

    CLIENT_ID: Final = "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com"
    #: Public like every installed-app secret: shipped inside the Antigravity app (and quoted
    #: by the open-source gateways that log in with its client).
    CLIENT_SECRET: Final = "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"
    SCOPES: Final = (
        *GEMINI_CLI.SCOPES,
        "https://www.googleapis.com/auth/cclog",
        "https://www.googleapis.com/auth/experimentsandconfigs",
    )
    REDIRECT_URI: Final = "http://localhost:51121/oauth-callback"
    URLS: Final = MappingProxyType({
        # Tried in this order: a connection failure, a 5xx or "no capacity" moves on.
        "base-url": "https://daily-cloudcode-pa.googleapis.com",
        "fallback-base-url": "https://cloudcode-pa.googleapis.com",
        "oauth-authorize-url": GOOGLE.AUTHORIZE_URL,
        "oauth-token-url": GOOGLE.TOKEN_URL,
        "redirect-uri": REDIRECT_URI,
        "userinfo-url": GOOGLE.USERINFO_URL,
    })
    METADATA: Final = GEMINI_CLI.METADATA
    #: The app's version; the user agent is ``antigravity/<version> <os>/<arch>`` of the
    #: machine mux runs on. The service refuses versions it considers stale: update this.
    VERSION: Final = "1.15.8"
    USER_AGENT: Final = "antigravity/{version} {os}/{arch}"
    #: The envelope's fixed fields (``requestId`` is ``agent-<uuid>`` per call).
    ENVELOPE: Final = MappingProxyType({"userAgent": "antigravity", "requestType": "agent"})
    #: ``request.sessionId`` = this prefix + the first 32 hex digits of the SHA-256 of the
    #: conversation's first user text: one id per conversation keeps the prompt cache warm.
    SESSION_PREFIX: Final = "session-"
    #: None: the Antigravity app keeps its login in the IDE's state database, not in a token
    #: file mux could read; ``mux import antigravity`` says so and points to ``mux login``.
    IMPORT_PATH: Final = None
    MODELS: Final = (
        "gemini-3-pro-high",
        "gemini-3-pro-low",
        "gemini-3-flash",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-thinking",
        "claude-opus-4-5-thinking",
        "gpt-oss-120b-medium",
    )
    #: Antigravity's limits cover a model family: ``(model prefix, family)``, first match
    #: wins; a model matching none is its own scope.
    QUOTA_FAMILIES: Final = (
        ("claude-", "claude"),
        ("gemini-3-pro", "gemini-pro"),
        ("gemini-2.5-pro", "gemini-pro"),
        ("gemini-3-flash", "gemini-flash"),
        ("gemini-2.5-flash", "gemini-flash"),
        ("gpt-oss-", "gpt-oss"),
    )


#: How long a login waits for the browser's redirect (or a pasted code).
LOGIN_TIMEOUT: Final = 300.0
