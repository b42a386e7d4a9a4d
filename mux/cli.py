"""The ``mux`` command: ``serve`` (the default), ``init``, ``login``, ``import``, ``status``,
``reset``, ``logout``, ``fidelity`` and ``version``."""

from __future__ import annotations

import argparse
import http.client
import inspect
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from mux import __version__
from mux.auth import Accounts, AuthFileError, AuthStore, read_entry
from mux.errors import MuxError
from mux.oauth import LoginContext, LoginError, url_overrides
from mux.config import (
    Config,
    ConfigError,
    ProviderConfig,
    default_config_path,
    find_config_path,
    load_config,
    write_new_config,
)
from mux.providers import AccountProvider
from mux.providers.api import discover_models, providers_from_config
from mux.providers.fake import FakeProvider
from mux.providers.subscriptions import REGISTRY, refreshers, subscription_providers
from mux.router import Router
from mux.routes import Gateway
from mux.server import Limits, Server
from mux.upstream import Upstreams

__all__ = ["main"]

log = logging.getLogger("mux")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mux", description="A local LLM gateway: every client format, every provider."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway (the default command)")
    serve.add_argument("--config", metavar="FILE", help="the config file (default: $MUX_CONFIG, "
                       "else $XDG_CONFIG_HOME/mux/config.toml)")
    serve.add_argument("--host", help="the address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="the port to listen on; 0 picks a free one")
    serve.add_argument("--fake", action="store_true",
                       help="answer every model with the built-in fake provider")

    init = commands.add_parser("init", help="write a default config file (never overwrites)")
    init.add_argument("--config", metavar="FILE", help="where to write it")

    commands.add_parser("version", help="print the version")

    kinds = ", ".join(REGISTRY)
    login = commands.add_parser("login", help=f"log in to a subscription account ({kinds})")
    login.add_argument("provider", help=f"{kinds} (or the name of a [[providers]] entry)")
    login.add_argument("--no-browser", action="store_true",
                       help="print the login URL instead of opening a browser")
    login.add_argument("--device", action="store_true",
                       help="use the device flow where a provider has both "
                       "(codex; copilot always does)")
    login.add_argument("--config", metavar="FILE", help="the config file")

    import_ = commands.add_parser(
        "import", help="import the logins the official tools saved (Claude Code, the Codex CLI, "
        "Copilot's editor plugins, the Gemini CLI)"
    )
    import_.add_argument("provider", nargs="?", help=f"{kinds} (default: every one)")
    import_.add_argument("--from", dest="source", metavar="PATH",
                         help="the file to import (default: the official tool's own)")
    import_.add_argument("--config", metavar="FILE", help="the config file")

    status = commands.add_parser(
        "status", help="list subscription accounts, their tokens' state and, from a running "
        "server, their cooldowns"
    )
    reset = commands.add_parser(
        "reset", help="end the cooldowns of a running server's accounts (all, a provider's, "
        "or one)"
    )
    reset.add_argument("provider", nargs="?", help="a provider's name (default: every provider)")
    reset.add_argument("account", nargs="?", help="the account's email or id (default: every one)")
    for command in (status, reset):
        command.add_argument("--config", metavar="FILE", help="the config file")
        command.add_argument("--host", help="the running server's address (default: the config's)")
        command.add_argument("--port", type=int, help="the running server's port (default: the "
                             "config's)")

    logout = commands.add_parser("logout", help="remove subscription accounts")
    logout.add_argument("provider", help="claude or codex")
    logout.add_argument("account", nargs="?", help="the email or id (default: every account)")
    logout.add_argument("--config", metavar="FILE", help="the config file")

    fidelity = commands.add_parser(
        "fidelity", help="measure which features survive each client -> upstream format pair"
    )
    fidelity.add_argument("--json", action="store_true", help="print JSON, not markdown")
    fidelity.add_argument("--client", action="append", metavar="FORMAT",
                          help="only this client format (repeatable)")
    fidelity.add_argument("--upstream", action="append", metavar="FORMAT",
                          help="only this upstream format (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    if command == "version":
        print(f"mux {__version__}")
        return 0
    if command == "init":
        return _init(args.config)
    if command == "fidelity":
        return _fidelity(args.client, args.upstream, as_json=args.json)
    if command == "login":
        return _login(args.provider, args.config, no_browser=args.no_browser, device=args.device)
    if command == "import":
        return _import(args.provider, args.source, args.config)
    if command == "status":
        return _status(args.config, host=args.host, port=args.port)
    if command == "reset":
        return _reset(args.provider, args.account, args.config, host=args.host, port=args.port)
    if command == "logout":
        return _logout(args.provider, args.account, args.config)
    return _serve(
        getattr(args, "config", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        fake=getattr(args, "fake", False),
    )


def _init(explicit: str | None) -> int:
    path = Path(explicit) if explicit else default_config_path()
    try:
        write_new_config(path, Config())
    except FileExistsError:
        print(f"mux: {path} exists already; not overwriting it", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mux: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _fidelity(
    clients: Sequence[str] | None, upstreams: Sequence[str] | None, *, as_json: bool
) -> int:
    from mux import fidelity  # only this command needs it

    known = fidelity.available_formats()
    unknown = sorted((set(clients or ()) | set(upstreams or ())) - set(known))
    if unknown:
        print(f"mux: unknown format {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)
        return 2
    cells = fidelity.measure(clients, upstreams)
    print(fidelity.render_json(cells) if as_json else fidelity.render_markdown(cells))
    return 0


# ------------------------------------------------------------------------------------------
# Subscription accounts: login, import, status, logout


def _load_config(config_path: str | None) -> Config | None:
    try:
        return load_config(find_config_path(config_path))
    except ConfigError as exc:
        print(f"mux: {exc}", file=sys.stderr)
        return None


def _subscription(config: Config, name: str) -> tuple[Any, ProviderConfig | None] | None:
    """The SubscriptionKind ``name`` means (a kind, or a ``[[providers]]`` entry's name) and
    the config's entry for it; None (after saying why) if neither."""

    entries = [p for p in config.providers if p.type in REGISTRY]
    if name in REGISTRY:
        return REGISTRY[name], next((p for p in entries if p.type == name), None)
    for entry in entries:
        if entry.name == name:
            return REGISTRY[entry.type], entry
    print(f"mux: {name!r} is not a subscription provider; known: {', '.join(sorted(REGISTRY))}",
          file=sys.stderr)
    return None


def _login(name: str, config_path: str | None, *, no_browser: bool, device: bool) -> int:

    config = _load_config(config_path)
    found = config and _subscription(config, name)
    if not config or not found:
        return 2
    kind, entry = found
    store = AuthStore.from_config(config)

    async def login() -> Any:
        async with Upstreams() as upstreams:
            ctx = LoginContext(
                http=upstreams.client(entry.proxy_url if entry else None, provider=kind.name),
                provider=entry, urls=url_overrides(entry), open_browser=not no_browser,
                device=device,
            )
            result = kind.login(ctx)
            return await result if inspect.isawaitable(result) else result

    try:
        try:
            credentials = trio.run(login)
        except BaseExceptionGroup as group:  # from a nursery in the flow: report its cause
            causes = group.subgroup(KeyboardInterrupt) or group.subgroup((LoginError, MuxError))
            if causes is None:
                raise
            raise _first_leaf(causes) from None
    except (LoginError, MuxError) as exc:
        print(f"mux: login failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmux: login cancelled", file=sys.stderr)
        return 130
    existed = store.path_for(credentials.provider, credentials.account).exists()
    try:
        path = store.save(credentials)
    except OSError as exc:
        print(f"mux: cannot save the login in {store.directory}: {exc.strerror}", file=sys.stderr)
        return 1
    what = "updated" if existed else "added"
    print(f"logged in to {credentials.provider} as {credentials.account} ({what} {path})")
    return 0


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _import(name: str | None, source: str | None, config_path: str | None) -> int:

    config = _load_config(config_path)
    if config is None:
        return 2
    if source and not name:
        print("mux: --from needs a provider: mux import <provider> --from PATH",
              file=sys.stderr)
        return 2
    if name:
        found = _subscription(config, name)
        if not found:
            return 2
        kinds = [found[0]]
    else:
        kinds = [REGISTRY[k] for k in sorted(REGISTRY) if REGISTRY[k].default_import_path]
    store = AuthStore.from_config(config)
    imported = 0
    failed = False
    for kind in kinds:
        if source:
            path = Path(source).expanduser()
        elif kind.default_import_path is not None:
            path = kind.default_import_path
        else:
            print(f"mux: {kind.name}: the official app saves no token file mux can read; "
                  f"use mux login {kind.name}", file=sys.stderr)
            failed = True
            continue
        if not path.exists():
            print(f"{kind.name}: nothing to import at {path}",
                  file=sys.stderr if name else sys.stdout)
            failed = failed or bool(name)
            continue
        try:
            found_credentials = kind.import_credentials(path)
            for credentials in found_credentials:
                saved = store.save(credentials)
                imported += 1
                print(f"{kind.name}: imported {credentials.account} from {path} -> {saved}")
        except (AuthFileError, ValueError, KeyError, TypeError) as exc:
            print(f"mux: {kind.name}: cannot import {path}: {exc}", file=sys.stderr)
            failed = True
        except OSError as exc:
            print(f"mux: {kind.name}: cannot import {path}: {exc.strerror or exc}",
                  file=sys.stderr)
            failed = True
    if imported:
        print("note: mux now shares these logins' refresh tokens with the tools they came "
              "from; Claude's and Codex's rotate, so when one side refreshes, the other may "
              "have to log in again (`mux login` gives mux a session of its own)")
    elif not failed:
        print("nothing imported")
    return 1 if failed else 0


def _when(expires_at: float | None, now: float) -> str:
    if expires_at is None:
        return "unknown"
    left = expires_at - now
    span = abs(left)
    if span < 3600:
        relative = f"{span // 60:.0f}m"
    elif span < 86400 * 2:
        relative = f"{span // 3600:.0f}h {span % 3600 // 60:.0f}m"
    else:
        relative = f"{span // 86400:.0f}d"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires_at))
    return f"{stamp} (in {relative})" if left > 0 else f"{stamp} ({relative} ago)"


# ------------------------------------------------------------------------------------------
# A running server's live state: GET /mux/status, POST /mux/reset

#: Seconds to wait for a running server: it answers these from memory.
SERVER_TIMEOUT = 1.0


@attrs.frozen
class _Answer:
    """A running server's answer: the JSON body, or why there is none."""

    url: str
    body: Any = None
    #: None when the server answered 2xx with JSON; else what went wrong, for a person.
    problem: str | None = None
    #: No server listens there at all (connection refused).
    absent: bool = False


def _server_url(config: Config, host: str | None, port: int | None) -> tuple[str, int, str]:
    """Where to reach the configured server: a wildcard listen address means this machine."""
    host = host or config.host
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    port = config.port if port is None else port
    shown = f"[{host}]" if ":" in host else host
    return host, port, f"http://{shown}:{port}"


def _ask_server(
    config: Config, host: str | None, port: int | None, method: str, path: str,
    body: Any = None,
) -> _Answer:
    """One request to the running mux server (stdlib, no proxies, ``SERVER_TIMEOUT``)."""
    host, port, url = _server_url(config, host, port)
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if data is not None else {}
    connection = http.client.HTTPConnection(host, port, timeout=SERVER_TIMEOUT)
    try:
        connection.request(method, path, body=data, headers=headers)
        reply = connection.getresponse()
        raw = reply.read()
    except ConnectionRefusedError:
        return _Answer(url, problem=f"no mux server is running at {url}", absent=True)
    except TimeoutError:
        return _Answer(url, problem=f"the mux server at {url} did not answer within "
                       f"{SERVER_TIMEOUT:g} s")
    except (OSError, http.client.HTTPException) as exc:
        return _Answer(url, problem=f"cannot reach a mux server at {url}: {exc}")
    finally:
        connection.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if 200 <= reply.status < 300 and isinstance(answer, dict):
        return _Answer(url, body=answer)
    error = answer.get("error") if isinstance(answer, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if reply.status == 404 and not isinstance(message, str):
        message = "it has no management endpoints (an older mux, or not mux)"
    detail = message if isinstance(message, str) else f"HTTP {reply.status}"
    return _Answer(url, problem=f"the mux server at {url} refused: {detail}")


def _live_accounts(config: Config, body: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The server's accounts by (provider type, account), the way auth files name them: an
    entry's name is mapped to its type; providers without an entry are named after theirs."""
    types = {p.name: p.type for p in config.providers}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for provider in body.get("providers") or ():
        if not isinstance(provider, dict) or not isinstance(provider.get("name"), str):
            continue
        name = provider["name"]
        for account in provider.get("accounts") or ():
            if isinstance(account, dict) and isinstance(account.get("id"), str):
                found[(types.get(name, name), account["id"])] = {**account, "provider": name}
    return found


def _cooling(account: dict[str, Any]) -> str | None:
    """An account's running cooldowns for a person: ``cooling down until <local time>
    (<reason>)``, one per scope; None when there is none."""
    shown = []
    for cooldown in account.get("cooldowns") or ():
        if not isinstance(cooldown, dict) or not isinstance(cooldown.get("until"), (int, float)):
            continue
        what = "failing auth" if cooldown.get("state") == "auth-failing" else "cooling down"
        scope = cooldown.get("scope")
        if isinstance(scope, str):
            what += f" ({scope})"
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(cooldown["until"]))
        reason = " ".join(str(cooldown.get("reason") or "").split())
        if len(reason) > 60:
            reason = reason[:59] + "…"
        status = cooldown.get("status")
        cause = f"{status} {reason}".strip() if isinstance(status, int) else reason
        shown.append(f"{what} until {stamp} ({cause})" if cause else f"{what} until {stamp}")
    return "; ".join(shown) or None


def _status(config_path: str | None, *, host: str | None = None, port: int | None = None) -> int:

    config = _load_config(config_path)
    if config is None:
        return 2
    store = AuthStore.from_config(config)
    server = _ask_server(config, host, port, "GET", "/mux/status")
    live = _live_accounts(config, server.body) if server.body is not None else {}
    rows = [("PROVIDER", "ACCOUNT", "TOKEN EXPIRES", "STATE", "FILE")]
    now = time.time()
    problems = []
    for path in store.files():
        try:
            entry = read_entry(path)
        except AuthFileError as exc:
            problems.append(str(exc))
            continue
        c = entry.credentials
        state = entry.state
        if state == "ok" and c.expires_at is not None and c.expires_at <= now:
            state = "expired (refreshed on use)" if c.refresh_token else "expired: log in again"
        elif state == "revoked":
            state = "revoked: log in again"
        cooling = _cooling(live.pop((c.provider, c.account), {}))
        if cooling:
            state = cooling if state == "ok" else f"{state}; {cooling}"
        rows.append((c.provider, c.account, _when(c.expires_at, now), state, path.name))
    if len(rows) == 1 and not problems:
        print(f"no subscription accounts in {store.directory} (mux login "
              f"{'|'.join(REGISTRY)}, or mux import)")
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        for problem in problems:
            print(f"unreadable: {problem}")
    others = [(a["provider"], account, state) for (_, account), a in live.items()
              if (state := _cooling(a))]
    if others:
        print("\nother accounts of the running server:")
        for provider, account, state in others:
            print(f"  {provider}  {account}  {state}")
    if server.problem is None:
        print(f"\n{store.directory}: the states in the files, with the cooldowns of the mux "
              f"server at {server.url}")
    else:
        print(f"\n{server.problem}: the states in the files only (cooldowns are known only to "
              "a running mux serve)")
    return 0


def _reset(
    provider: str | None, account: str | None, config_path: str | None, *,
    host: str | None = None, port: int | None = None,
) -> int:

    config = _load_config(config_path)
    if config is None:
        return 2
    if provider is not None:  # a subscription type stands for its entry
        entries = [p.name for p in config.providers if provider in (p.name, p.type)]
        provider = provider if provider in entries or not entries else entries[0]
    target = {k: v for k, v in (("provider", provider), ("account", account)) if v is not None}
    server = _ask_server(config, host, port, "POST", "/mux/reset", target)
    if server.problem is not None:
        print(f"mux: {server.problem}", file=sys.stderr)
        return 1
    cleared = server.body.get("cleared")
    which = " ".join(filter(None, (provider, account))) or "every account"
    print(f"{which}: cleared {cleared} cooldown{'' if cleared == 1 else 's'}")
    return 0


def _logout(provider: str, account: str | None, config_path: str | None) -> int:

    config = _load_config(config_path)
    if config is None:
        return 2
    store = AuthStore.from_config(config)
    try:
        removed = store.remove(provider, account)
    except OSError as exc:
        print(f"mux: cannot remove from {store.directory}: {exc.strerror}", file=sys.stderr)
        return 1
    if not removed:
        which = f"{provider} account {account}" if account else f"{provider} accounts"
        print(f"mux: no {which} in {store.directory}", file=sys.stderr)
        return 1
    for path in removed:
        print(f"removed {path}")
    return 0


def _serve(config_path: str | None, *, host: str | None, port: int | None, fake: bool) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(find_config_path(config_path))
        if host is not None:
            config = attrs.evolve(config, host=host)
        if port is not None:
            config = attrs.evolve(config, port=port)
    except (ConfigError, ValueError) as exc:
        print(f"mux: {exc}", file=sys.stderr)
        return 2
    upstreams = Upstreams()
    accounts = None
    try:
        if fake:
            providers: list[AccountProvider] = [FakeProvider(config.fake, serve_all=True)]
        else:
            accounts = Accounts(
                AuthStore.from_config(config),
                refreshers(config, upstreams),
                lead=config.refresh_lead,
            )
            providers = [
                *subscription_providers(config, upstreams, accounts),
                *providers_from_config(config, upstreams),
            ]
        router = Router(providers, config.routing)
    except ValueError as exc:  # two providers with one name
        print(f"mux: {exc}", file=sys.stderr)
        return 2
    gateway = Gateway(providers=[router])
    server = Server(gateway.handle, limits=Limits(max_request_size=config.max_request_size))
    try:
        trio.run(_run, server, gateway, config, upstreams, providers, accounts)
    except OSError as exc:
        print(f"mux: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _run(
    server: Server,
    gateway: Gateway,
    config: Config,
    upstreams: Upstreams,
    providers: Sequence[AccountProvider],
    accounts: Accounts | None,
) -> None:
    # The upstream connection pools outlive every request: they close after the server.
    async with upstreams, trio.open_nursery() as nursery:
        if accounts is not None:  # subscription accounts: hot reload and background refresh
            await nursery.start(accounts.run)
        await discover_models(providers)

        async def serve(task_status: trio.TaskStatus[int]) -> None:
            await server.serve(config.host, config.port, task_status=task_status)
            nursery.cancel_scope.cancel()  # drained: stop the signal watcher too

        nursery.start_soon(_shutdown_on_signal, server, nursery.cancel_scope)
        port = await nursery.start(serve)
        _announce(gateway, config.host, port)


async def _shutdown_on_signal(server: Server, cancel_scope: trio.CancelScope) -> None:
    """First SIGINT/SIGTERM: graceful shutdown. Second: stop at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print("mux: shutting down (again to stop at once)", file=sys.stderr, flush=True)
            server.shutdown()
            break
        async for _ in signals:
            cancel_scope.cancel()
            return


def _announce(gateway: Gateway, host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    models = ", ".join(model.id for model in gateway.models()) or "(none)"
    print(
        f"mux {__version__} listening on {url}\n"
        f"models: {models}\n"
        f"point your clients here:\n"
        f"  OPENAI_BASE_URL={url}/v1\n"
        f"  ANTHROPIC_BASE_URL={url}\n"
        f"  GOOGLE_GEMINI_BASE_URL={url}\n"
        f"  OLLAMA_HOST={url}\n",
        flush=True,
    )
