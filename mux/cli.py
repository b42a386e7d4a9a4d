"""The ``mux`` command: ``serve`` (the default), ``init`` and ``version``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from mux import __version__
from mux.config import (
    Config,
    ConfigError,
    default_config_path,
    find_config_path,
    load_config,
    write_new_config,
)
from mux.providers import AccountProvider
from mux.providers.api import discover_models, providers_from_config
from mux.providers.fake import FakeProvider
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
    try:
        providers: list[AccountProvider] = (
            [FakeProvider(config.fake, serve_all=True)]
            if fake
            else providers_from_config(config, upstreams)
        )
        router = Router(providers, config.routing)
    except ValueError as exc:  # two providers with one name
        print(f"mux: {exc}", file=sys.stderr)
        return 2
    gateway = Gateway(providers=[router])
    server = Server(gateway.handle, limits=Limits(max_request_size=config.max_request_size))
    try:
        trio.run(_run, server, gateway, config, upstreams, providers)
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
) -> None:
    # The upstream connection pools outlive every request: they close after the server.
    async with upstreams, trio.open_nursery() as nursery:
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
