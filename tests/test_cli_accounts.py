"""``mux login``, ``mux import``, ``mux status`` and ``mux logout`` through ``mux.cli.main``.

Login uses a fake subscription kind registered for the test; its callback is hit by the test
over a real socket while ``main`` runs in a thread (it calls ``trio.run`` itself)."""

from __future__ import annotations

import base64
import json
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from mux.auth import AuthStore, Credentials, load_credentials
from mux.cli import main
from mux.providers.subscriptions import REGISTRY
from mux.oauth import LoginContext, pkce, state_token
import mux.upstream as upstream_module
from mux.providers import subscriptions
from tests.test_router import Scripted
from tests.test_router import error as router_error
from tests.test_router import request as router_request
from tests.test_status import THREE_DAYS, Served, cooling_mux, serve

SECRET = "SECRET-access-token-0123456789"
REFRESH = "SECRET-refresh-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define
class FakeKind:
    """Duck-typed SubscriptionKind: login through the loopback callback, import from JSON."""

    name: str = "fakesub"
    port: int = attrs.Factory(free_port)
    state: str | None = None
    contexts: list[LoginContext] = attrs.Factory(list)
    listening: threading.Event = attrs.Factory(threading.Event)
    default_import_path: Path = Path("/nonexistent/fakesub.json")

    async def login(self, ctx: LoginContext) -> Credentials:
        self.contexts.append(ctx)
        _, challenge = pkce()
        self.state = state_token()
        self.listening.set()
        code = await ctx.receive_code(
            f"https://auth.example/authorize?code_challenge={challenge}&state={self.state}",
            port=self.port, path="/callback", state=self.state)
        return Credentials(provider=self.name, account=f"{code}@example.com",
                           access_token=SECRET, refresh_token=REFRESH,
                           expires_at=time.time() + 3600, extras={"plan": "max"})

    def import_credentials(self, path: Path | None) -> list[Credentials]:
        data = json.loads(Path(path or self.default_import_path).read_text())
        if "token" not in data:
            raise ValueError(f"{path}: token: required key is missing")
        return [Credentials(provider=self.name, account=data["email"],
                            access_token=data["token"])]


@pytest.fixture
def kind(monkeypatch: pytest.MonkeyPatch) -> FakeKind:
    fake = FakeKind()
    monkeypatch.setitem(subscriptions.REGISTRY, fake.name, fake)  # type: ignore[arg-type]
    return fake


def write_config(tmp_path: Path, port: int) -> str:
    path = tmp_path / "config.toml"
    path.write_text(f'port = {port}\nauth-dir = "{tmp_path / "auth"}"\n')
    return str(path)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A config whose server port nothing listens on (``mux status``: no server running)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return write_config(tmp_path, free_port())


def store(tmp_path: Path) -> AuthStore:
    return AuthStore(tmp_path / "auth")


# ------------------------------------------------------------------------------------------
# login


def test_login_serves_the_callback_and_saves_the_account(
        kind: FakeKind, config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(main(["login", "fakesub", "--no-browser", "--config", config])))
    thread.start()
    try:
        assert kind.listening.wait(10)
        deadline = time.monotonic() + 10
        while True:  # the callback server starts right after the URL is shown
            try:
                answer = httpx.get(f"http://127.0.0.1:{kind.port}/callback",
                                   params={"code": "ada", "state": kind.state})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
    finally:
        thread.join(10)
    assert answer.status_code == 200
    assert result == [0]
    (ctx,) = kind.contexts
    assert (ctx.open_browser, ctx.device, ctx.provider, dict(ctx.urls)) == (False, False, None, {})
    out = capsys.readouterr().out
    assert "Open this URL to log in:\n\n  https://auth.example/authorize?" in out
    path = tmp_path / "auth" / "fakesub-ada@example.com.json"
    assert f"logged in to fakesub as ada@example.com (added {path})" in out
    assert SECRET not in out and REFRESH not in out
    saved = load_credentials(path)
    assert (saved.access_token, saved.refresh_token, saved.extras) == (SECRET, REFRESH,
                                                                       {"plan": "max"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_login_failure_is_reported(kind: FakeKind, config: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An error redirect (the user declined) ends the login with status 1, nothing saved."""
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(main(["login", "fakesub", "--no-browser", "--device",
                                           "--config", config])))
    thread.start()
    try:
        assert kind.listening.wait(10)
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{kind.port}/callback",
                          params={"error": "access_denied", "state": kind.state})
                break
            except httpx.ConnectError:
                time.sleep(0.01)
    finally:
        thread.join(10)
    assert result == [1]
    assert kind.contexts[0].device is True
    err = capsys.readouterr().err
    assert "mux: login failed: the provider refused the login: access_denied" in err


def test_login_of_an_unknown_provider(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["login", "nope", "--config", config]) == 2
    assert "'nope' is not a subscription provider; known: " in capsys.readouterr().err


def test_login_passes_the_config_entry_and_its_url_overrides(
        config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[LoginContext] = []

    async def login(ctx: LoginContext) -> Credentials:
        seen.append(ctx)
        return Credentials(provider="claude", account="x@y", access_token=SECRET)

    real = subscriptions.REGISTRY["claude"]
    monkeypatch.setitem(subscriptions.REGISTRY, "claude", attrs.evolve(real, login=login))
    Path(config).write_text(
        f'auth-dir = "{tmp_path / "auth"}"\n'
        '[[providers]]\nname = "work-claude"\ntype = "claude"\n'
        'oauth-token-url = "http://127.0.0.1:9/token"\n'
        'urls = { profile-url = "http://127.0.0.1:9/me" }\n')
    assert main(["login", "work-claude", "--config", config]) == 0
    (ctx,) = seen
    assert ctx.provider is not None and ctx.provider.name == "work-claude"
    assert dict(ctx.urls) == {"oauth-token-url": "http://127.0.0.1:9/token",
                              "profile-url": "http://127.0.0.1:9/me"}
    assert ctx.open_browser is True
    assert load_credentials(tmp_path / "auth" / "claude-x@y.json").access_token == SECRET


# ------------------------------------------------------------------------------------------
# import


def test_import_from_a_file(kind: FakeKind, config: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "tool.json"
    source.write_text(json.dumps({"email": "bo@example.com", "token": SECRET}))
    assert main(["import", "fakesub", "--from", str(source), "--config", config]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "auth" / "fakesub-bo@example.com.json"
    assert f"fakesub: imported bo@example.com from {source} -> {path}" in out
    assert "rotate, so when one side refreshes" in out
    assert SECRET not in out
    assert load_credentials(path).access_token == SECRET


def test_import_reports_a_bad_file(kind: FakeKind, config: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "tool.json"
    source.write_text(json.dumps({"email": "bo@example.com"}))
    assert main(["import", "fakesub", "--from", str(source), "--config", config]) == 1
    assert f"cannot import {source}: {source}: token: required key is missing" in \
        capsys.readouterr().err
    assert store(tmp_path).files() == []


def test_import_without_a_provider_tries_each_default_path(
        kind: FakeKind, config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no official tool files there
    for name, real in list(subscriptions.REGISTRY.items()):
        if name != kind.name:
            monkeypatch.setitem(subscriptions.REGISTRY, name, attrs.evolve(
                real, default_import_path=tmp_path / "home" / f"{name}.json"))
    assert main(["import", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "fakesub: nothing to import at /nonexistent/fakesub.json" in out
    assert out.rstrip().endswith("nothing imported")
    assert main(["import", "--from", "x.json", "--config", config]) == 2
    assert main(["import", "fakesub", "--config", config]) == 1


def test_import_claude_code_credentials(config: str, tmp_path: Path) -> None:
    """Claude Code's ~/.claude/.credentials.json, through the claude kind's parser."""
    source = tmp_path / ".credentials.json"
    source.write_text(json.dumps({"claudeAiOauth": {
        "accessToken": SECRET, "refreshToken": REFRESH, "expiresAt": 1_900_000_000_000,
        "scopes": ["user:inference", "user:profile"], "subscriptionType": "max"}}))
    assert main(["import", "claude", "--from", str(source), "--config", config]) == 0
    (entry,) = store(tmp_path).entries()
    c = entry.credentials
    assert (c.provider, c.access_token, c.refresh_token, c.expires_at) == (
        "claude", SECRET, REFRESH, 1_900_000_000.0)


def test_import_codex_auth_json(config: str, tmp_path: Path) -> None:
    """The Codex CLI's ~/.codex/auth.json: account id, email and plan from the id_token."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    id_token = ".".join([part({"alg": "RS256"}), part({
        "email": "cy@example.com",
        "https://api.openai.com/auth": {"chatgpt_account_id": "acc-7",
                                        "chatgpt_plan_type": "pro"}}), "sig"])
    source = tmp_path / "auth.json"
    source.write_text(json.dumps({"OPENAI_API_KEY": None, "tokens": {
        "id_token": id_token, "access_token": SECRET, "refresh_token": REFRESH,
        "account_id": "acc-7"}, "last_refresh": "2025-01-01T00:00:00Z"}))
    assert main(["import", "codex", "--from", str(source), "--config", config]) == 0
    (entry,) = store(tmp_path).entries()
    c = entry.credentials
    assert (c.provider, c.access_token, c.refresh_token) == ("codex", SECRET, REFRESH)
    assert "cy@example.com" in c.account or c.account == "acc-7"


# ------------------------------------------------------------------------------------------
# status and logout


def test_status_lists_accounts_and_states_never_tokens(
        config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    auth = store(tmp_path)
    now = time.time()
    auth.save(Credentials(provider="claude", account="ok@x", access_token=SECRET,
                          refresh_token=REFRESH, expires_at=now + 2 * 3600 + 330))
    auth.save(Credentials(provider="claude", account="old@x", access_token=SECRET,
                          refresh_token=REFRESH, expires_at=now - 600))
    auth.save(Credentials(provider="codex", account="gone@x", access_token=SECRET,
                          refresh_token=REFRESH, expires_at=now + 100), state="revoked")
    auth.save(Credentials(provider="codex", account="norefresh@x", access_token=SECRET,
                          expires_at=now - 10))
    (tmp_path / "auth" / "claude-broken.json").write_text(f'{{"access_token": "{SECRET}"}}')
    assert main(["status", "--config", config]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert SECRET not in out + captured.err and REFRESH not in out + captured.err
    assert captured.err == ""  # the bad file is in the output once, not logged too
    lines = out.splitlines()
    assert lines[0].split() == ["PROVIDER", "ACCOUNT", "TOKEN", "EXPIRES", "STATE", "FILE"]
    rows = {line.split()[1]: line for line in lines[1:5]}
    assert set(rows) == {"ok@x", "old@x", "gone@x", "norefresh@x"}
    assert "(in 2h 5m)" in rows["ok@x"] and rows["ok@x"].split()[-2:] == ["ok", "claude-ok@x.json"]
    assert "(10m ago)" in rows["old@x"] and "expired (refreshed on use)" in rows["old@x"]
    assert "revoked: log in again" in rows["gone@x"]
    assert "expired: log in again" in rows["norefresh@x"]
    assert "unreadable: " in out and "claude-broken.json: provider: required key is missing" in out
    assert "no mux server is running at http://127.0.0.1:" in out
    assert "cooldowns are known only to a running mux serve" in out


def test_status_with_no_accounts(config: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", config]) == 0
    assert capsys.readouterr().out.startswith(f"no subscription accounts in {tmp_path / 'auth'}")


def test_logout_one_account_then_all(config: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    auth = store(tmp_path)
    a = auth.save(Credentials(provider="claude", account="a@x", access_token=SECRET))
    b = auth.save(Credentials(provider="claude", account="b@x", access_token=SECRET))
    c = auth.save(Credentials(provider="codex", account="a@x", access_token=SECRET))
    assert main(["logout", "claude", "a@x", "--config", config]) == 0
    assert capsys.readouterr().out == f"removed {a}\n"
    assert main(["logout", "claude", "--config", config]) == 0
    assert capsys.readouterr().out == f"removed {b}\n"
    assert main(["logout", "claude", "--config", config]) == 1
    assert f"mux: no claude accounts in {tmp_path / 'auth'}" in capsys.readouterr().err
    assert auth.files() == [c]


def test_a_login_error_from_inside_a_nursery_is_reported(
        config: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import trio

    from mux.oauth import LoginError

    async def login(ctx: LoginContext) -> Credentials:
        async def fail() -> None:
            raise LoginError("the device code expired")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)
        raise AssertionError("unreachable")

    real = subscriptions.REGISTRY["codex"]
    monkeypatch.setitem(subscriptions.REGISTRY, "codex", attrs.evolve(real, login=login))
    assert main(["login", "codex", "--config", config]) == 1
    assert capsys.readouterr().err == "mux: login failed: the device code expired\n"


# ------------------------------------------------------------------------------------------
# status and reset with a running server


async def cooling_claude(nursery: trio.Nursery) -> Served:
    """A running mux whose ``claude`` account ada@example.com is cooling for three days after
    an account-wide quota 429, and whose bob@example.com is fine."""
    claude = Scripted("claude", ["ada@example.com", "bob@example.com"],
                      served={"claude-sonnet": "claude-sonnet"}, scope=lambda model: None)
    claude.fail("ada@example.com", router_error(429, retry_after=THREE_DAYS,
                                                message="5-hour limit reached"))
    served = await serve(nursery, [claude])
    await served.router.complete(router_request("claude-sonnet"))  # fails over to bob
    return served


async def test_status_shows_a_running_servers_cooldowns(
        nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    served = await cooling_claude(nursery)
    auth = store(tmp_path)
    for account in ("ada@example.com", "bob@example.com"):
        auth.save(Credentials(provider="claude", account=account, access_token=SECRET,
                              refresh_token=REFRESH, expires_at=time.time() + 3600))
    config = write_config(tmp_path, served.port)
    assert await trio.to_thread.run_sync(main, ["status", "--config", config]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines()[1:3]}
    stamps = {time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + THREE_DAYS - lag))
              for lag in (0, 5)}  # the cooldown began a moment ago
    assert any(f"cooling down until {until} (429 5-hour limit reached)" in rows["ada@example.com"]
               for until in stamps)
    assert "cooling" not in rows["bob@example.com"]
    assert rows["bob@example.com"].split()[-2:] == ["ok", "claude-bob@example.com.json"]
    assert f"with the cooldowns of the mux server at http://127.0.0.1:{served.port}" in out
    assert SECRET not in out


async def test_status_lists_other_cooling_accounts_of_the_server(
        nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """API-key accounts have no file; a cooling one is listed below the table."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    async with upstream_module.Upstreams(trust_env=False) as clients:
        served = await cooling_mux(nursery, clients)
        config = write_config(tmp_path, served.port)
        assert await trio.to_thread.run_sync(main, ["status", "--config", config]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no subscription accounts in")
    (line,) = [line for line in out.splitlines() if "up#" in line]
    assert line.split()[:5] == ["up", "up#1", "cooling", "down", "(model-a)"]
    assert "(429 Rate limit reached for requests)" in line and "sk-live" not in out


async def test_reset_ends_a_running_servers_cooldowns(
        nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    served = await cooling_claude(nursery)
    config = write_config(tmp_path, served.port)
    reset = ["reset", "claude", "nobody@example.com", "--config", config]
    assert await trio.to_thread.run_sync(main, reset) == 1
    refusal = "refused: no account 'nobody@example.com' of provider 'claude'"
    assert refusal in capsys.readouterr().err
    reset = ["reset", "claude", "ada@example.com", "--config", config]
    assert await trio.to_thread.run_sync(main, reset) == 0
    assert capsys.readouterr().out == "claude ada@example.com: cleared 1 cooldown\n"
    assert [s.cooldowns for s in served.router.status()] == [(), ()]


def test_reset_without_a_server_says_so(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reset", "--config", config]) == 1
    assert "mux: no mux server is running at http://127.0.0.1:" in capsys.readouterr().err


def test_import_of_a_kind_without_a_token_file_points_to_login(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Antigravity keeps its login inside the app: ``mux import antigravity`` says so (and a
    plain ``mux import`` skips kinds without a token file)."""
    assert REGISTRY["antigravity"].default_import_path is None
    assert main(["import", "antigravity", "--config", config]) == 1
    assert "use mux login antigravity" in capsys.readouterr().err
