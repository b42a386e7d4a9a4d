"""mux.auth: the auth files (atomic, private, self-describing errors), hot reload of the auth
dir, and the token keepers (single-flight refresh, background refresh before expiry,
revocation, rotated refresh tokens saved before use).

Timing tests run on trio's autojump clock with ``clock=trio.current_time``: virtual seconds,
real files."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import trio

from mux.auth import (
    Accounts,
    AuthFileError,
    AuthStore,
    Credentials,
    RefreshError,
    RevokedError,
    TokenKeeper,
    auth_dir,
    load_credentials,
)
from mux.config import Config
from mux.errors import UpstreamError
from mux.ir import ErrorKind

SECRET = "sk-ant-oat01-SECRET-access-token-value"
REFRESH = "sk-ant-ort01-SECRET-refresh-token-value"


def creds(account: str = "ada@example.com", *, provider: str = "claude",
          access: str = SECRET, refresh: str | None = REFRESH,
          expires_at: float | None = 2_000_000_000.0, **extras: object) -> Credentials:
    return Credentials(provider=provider, account=account, access_token=access,
                       refresh_token=refresh, expires_at=expires_at, extras=extras)


class Refresher:
    """Counts calls; each refresh rotates both tokens and extends expiry by ``life``."""

    def __init__(self, *, delay: float = 1.0, life: float = 3600.0, fail: Exception | None = None,
                 clock=trio.current_time) -> None:
        self.calls = 0
        self.delay = delay
        self.life = life
        self.fail = fail
        self.clock = clock

    async def __call__(self, old: Credentials) -> Credentials:
        self.calls += 1
        await trio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return Credentials(provider=old.provider, account=old.account,
                           access_token=f"access-{self.calls}", refresh_token=f"refresh-{self.calls}",
                           expires_at=self.clock() + self.life, extras=old.extras)


# ------------------------------------------------------------------------------------------
# Files


def test_save_writes_a_private_file_in_a_private_dir_and_reads_back(tmp_path: Path) -> None:
    """0600 file, 0700 dir, no temporary file left; load_credentials gives back what was saved."""
    store = AuthStore(tmp_path / "auth")
    saved = creds(plan="max", account_uuid="u-1")
    path = store.save(saved)
    assert path == tmp_path / "auth" / "claude-ada@example.com.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert os.listdir(path.parent) == [path.name]
    assert load_credentials(path) == saved
    assert store.load_all() == [saved]


def test_save_tightens_an_existing_dir(tmp_path: Path) -> None:
    directory = tmp_path / "auth"
    directory.mkdir(mode=0o755)
    AuthStore(directory).save(creds())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The write goes to a temporary file renamed over the old one: a failure before the
    rename changes nothing."""
    store = AuthStore(tmp_path)
    path = store.save(creds(access="old-token"))

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.save(creds(access="new-token"))
    assert load_credentials(path).access_token == "old-token"
    assert os.listdir(tmp_path) == [path.name]


def test_repr_shows_no_token() -> None:
    text = repr(creds())
    assert SECRET not in text and REFRESH not in text and "ada@example.com" in text


@pytest.mark.parametrize(("provider", "account", "name"), [
    ("claude", "ada@example.com", "claude-ada@example.com.json"),
    ("codex", "user-AbC_12.x", "codex-user-AbC_12.x.json"),
    ("codex", "../../etc/passwd", "codex-_.._etc_passwd.json"),
    ("claude", "a b/c\\d", "claude-a_b_c_d.json"),
    ("claude", "...", "claude-account.json"),
    ("gemini-cli", "ü@x", "gemini-cli-_@x.json"),
])
def test_path_for_sanitises_the_account(tmp_path: Path, provider: str, account: str,
                                        name: str) -> None:
    path = AuthStore(tmp_path).path_for(provider, account)
    assert path.parent == tmp_path and path.name == name


@pytest.mark.parametrize(("content", "message"), [
    ("{", "not JSON (line 1, column 2)"),
    ("[]", "(top level): expected an object, got an array"),
    ('{"account": "a", "access_token": "SECRET"}', "provider: required key is missing"),
    ('{"provider": "claude", "account": "a"}', "access_token: required key is missing"),
    ('{"provider": "claude", "account": "a", "access_token": 5}',
     "access_token: expected a non-empty string, got a number"),
    ('{"provider": "claude", "account": "a", "access_token": "SECRET", "refresh_token": ["SECRET"]}',
     "refresh_token: expected a string or null, got an array"),
    ('{"provider": "claude", "account": "a", "access_token": "SECRET", "expires_at": "SECRET"}',
     "expires_at: expected a number of Unix seconds or null, got a string"),
    ('{"provider": "claude", "account": "a", "access_token": "SECRET", "extras": "SECRET"}',
     "extras: expected an object, got a string"),
    ('{"provider": "claude", "account": "a", "access_token": "SECRET", "state": "SECRET"}',
     "state: expected one of ok, refresh-failing, revoked, got a string"),
])
def test_load_credentials_names_the_file_and_key_never_the_value(tmp_path: Path, content: str,
                                                                 message: str) -> None:
    path = tmp_path / "claude-a.json"
    path.write_text(content)
    with pytest.raises(AuthFileError) as caught:
        load_credentials(path)
    assert str(caught.value) == f"{path}: {message}"
    assert "SECRET" not in str(caught.value)


def test_load_all_skips_bad_files_and_logs_no_secret(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    store = AuthStore(tmp_path)
    good = creds()
    store.save(good)
    (tmp_path / "claude-bad.json").write_text('{"provider": "claude", "access_token": "SECRET"}')
    (tmp_path / "notes.txt").write_text("not an auth file")
    (tmp_path / ".claude-x.json.123.tmp").write_text("{")
    with caplog.at_level(logging.WARNING, "mux.auth"):
        assert store.load_all() == [good]
    assert "claude-bad.json: account: required key is missing" in caplog.text
    assert "SECRET" not in caplog.text


def test_load_all_of_a_missing_dir_is_empty(tmp_path: Path) -> None:
    assert AuthStore(tmp_path / "nowhere").load_all() == []


def test_remove_by_account_by_file_name_and_all(tmp_path: Path) -> None:
    store = AuthStore(tmp_path)
    a = store.save(creds("a@x"))
    b = store.save(creds("b@x"))
    c = store.save(creds("c@x"))
    other = store.save(creds("a@x", provider="codex"))
    assert store.remove("claude", "a@x") == [a]
    assert store.remove("claude", b.name) == [b]
    assert store.remove("claude", "nobody@x") == []
    assert store.remove("claude") == [c]
    assert [p.name for p in store.files()] == [other.name]


def test_auth_dir_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert auth_dir(Config()) == tmp_path / "mux" / "auth"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert auth_dir(Config(auth_dir="~/tokens")) == tmp_path / "home" / "tokens"


def test_refresh_errors_are_upstream_errors() -> None:
    """One that escapes a provider still routes: AUTHENTICATION (revoked) or UPSTREAM."""
    assert isinstance(RevokedError("x"), UpstreamError)
    assert RevokedError("x").kind is ErrorKind.AUTHENTICATION
    assert RefreshError("x").kind is ErrorKind.UPSTREAM


# ------------------------------------------------------------------------------------------
# Hot reload


async def test_accounts_follow_the_dir_while_running(tmp_path: Path,
                                                     autojump_clock: trio.abc.Clock) -> None:
    """A file added, changed (by another writer) and removed takes effect within a poll."""
    store = AuthStore(tmp_path)
    store.save(creds("first@x"))
    accounts = Accounts(store, {}, clock=trio.current_time)
    assert [k.account for k in accounts.keepers("claude")] == ["first@x"]
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: accounts.run(poll=0.05, task_status=task_status))
        store.save(creds("second@x", provider="codex"))
        store.save(creds("another@x"))
        await trio.sleep(0.2)
        assert [k.account for k in accounts.keepers("claude")] == ["another@x", "first@x"]
        assert [k.account for k in accounts.keepers("codex")] == ["second@x"]
        keeper = accounts.keepers("claude")[1]

        store.save(creds("first@x", access="rotated-elsewhere"))
        await trio.sleep(0.2)
        assert accounts.keepers("claude")[1] is keeper  # same keeper, new credentials
        assert keeper.credentials.access_token == "rotated-elsewhere"

        store.remove("claude", "first@x")
        await trio.sleep(0.2)
        assert [k.account for k in accounts.all()] == ["another@x", "second@x"]
        assert keeper.removed
        nursery.cancel_scope.cancel()


async def test_a_half_written_file_keeps_the_account_as_it_was(tmp_path: Path) -> None:
    store = AuthStore(tmp_path)
    path = store.save(creds())
    accounts = Accounts(store, {})
    path.write_text('{"provider": "claude", ')
    accounts.reload()
    assert [k.credentials.access_token for k in accounts.all()] == [SECRET]
    store.save(creds(access="fixed"))
    accounts.reload()
    assert [k.credentials.access_token for k in accounts.all()] == ["fixed"]


# ------------------------------------------------------------------------------------------
# Refresh


def keeper_for(tmp_path: Path, refresher: object, *, expires_in: float, lead: float = 300.0,
               **kw: object) -> tuple[AuthStore, TokenKeeper]:
    store = AuthStore(tmp_path)
    accounts = Accounts(store, {"claude": refresher}, lead=lead, clock=trio.current_time)  # type: ignore[dict-item]
    store.save(creds(expires_at=trio.current_time() + expires_in, **kw))
    accounts.reload()
    (keeper,) = accounts.keepers("claude")
    return store, keeper


async def test_ten_concurrent_fresh_calls_share_one_refresh(tmp_path: Path,
                                                            autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher(delay=2.0)
    _, keeper = keeper_for(tmp_path, refresher, expires_in=-1)
    got: list[Credentials] = []

    async def use() -> None:
        got.append(await keeper.fresh())

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(use)
    assert refresher.calls == 1
    assert {c.access_token for c in got} == {"access-1"}
    assert await keeper.fresh() is keeper.credentials  # fresh now: no second refresh
    assert refresher.calls == 1


async def test_a_valid_token_is_not_refreshed(tmp_path: Path,
                                              autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher()
    _, keeper = keeper_for(tmp_path, refresher, expires_in=3600)
    assert (await keeper.fresh()).access_token == SECRET
    assert refresher.calls == 0


async def test_forced_refreshes_after_a_401_share_one(tmp_path: Path,
                                                      autojump_clock: trio.abc.Clock) -> None:
    """Concurrent refresh() calls share one; a late caller naming the stale token gets the
    new one without another refresh."""
    refresher = Refresher()
    _, keeper = keeper_for(tmp_path, refresher, expires_in=3600)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(keeper.refresh)
    assert refresher.calls == 1
    assert (await keeper.refresh(stale=SECRET)).access_token == "access-1"
    assert refresher.calls == 1
    assert (await keeper.refresh(stale="access-1")).access_token == "access-2"
    assert (await keeper.refresh()).access_token == "access-3"


async def test_the_background_task_refreshes_lead_seconds_before_expiry(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher(delay=0.0, life=1000.0)
    store = AuthStore(tmp_path)
    start = trio.current_time()
    store.save(creds(expires_at=start + 1000))
    accounts = Accounts(store, {"claude": refresher}, lead=300, clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: accounts.run(poll=1.0))
        await trio.sleep(690)
        assert refresher.calls == 0
        await trio.sleep(20)  # past 700 s: due
        assert refresher.calls == 1
        (keeper,) = accounts.keepers("claude")
        assert keeper.credentials.access_token == "access-1"
        assert load_credentials(keeper.path).refresh_token == "refresh-1"
        await trio.sleep(650)  # the new token lives 1000 s: next refresh at ~1400 s
        assert refresher.calls == 1
        await trio.sleep(60)
        assert refresher.calls == 2
        nursery.cancel_scope.cancel()


async def test_a_token_shorter_than_the_lead_is_not_refreshed_in_a_loop(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher(delay=0.0, life=100.0)
    store = AuthStore(tmp_path)
    store.save(creds(expires_at=trio.current_time() - 1))
    accounts = Accounts(store, {"claude": refresher}, lead=300, clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: accounts.run(poll=1.0))
        await trio.sleep(45)
        assert refresher.calls == 1  # refreshed at once, next at half its life
        await trio.sleep(10)
        assert refresher.calls == 2
        nursery.cancel_scope.cancel()


async def test_invalid_grant_revokes_the_account_until_a_new_login(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher(fail=RevokedError("token endpoint answered 400 invalid_grant"))
    store = AuthStore(tmp_path)
    store.save(creds(expires_at=trio.current_time() - 1))
    accounts = Accounts(store, {"claude": refresher}, clock=trio.current_time)
    (keeper,) = accounts.keepers("claude")
    with pytest.raises(RevokedError, match=r"^claude account ada@example.com is revoked .* "
                                           r"run `mux login claude` again$"):
        await keeper.fresh()
    assert keeper.state == "revoked"
    assert accounts.keepers("claude") == [] and accounts.all() == [keeper]
    with pytest.raises(RevokedError):
        await keeper.fresh()
    assert refresher.calls == 1  # a revoked account is not retried
    # Recorded in the file: another process (mux status, a restarted mux) sees it.
    assert json.loads(keeper.path.read_text())["state"] == "revoked"
    assert Accounts(store, {}).keepers("claude") == []
    # A new login replaces the file: the account is back.
    store.save(creds(access="new-login", expires_at=trio.current_time() + 3600))
    accounts.reload()
    assert accounts.keepers("claude") == [keeper] and keeper.state == "ok"


async def test_the_rotated_refresh_token_is_on_disk_before_anyone_uses_it(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher(delay=1.0)
    store, keeper = keeper_for(tmp_path, refresher, expires_in=-1)
    on_disk: list[str | None] = []

    async def use() -> None:
        got = await keeper.fresh()
        on_disk.append(load_credentials(keeper.path).refresh_token)
        assert got.refresh_token == on_disk[-1]

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(use)
    assert on_disk == ["refresh-1"] * 3
    assert stat.S_IMODE(keeper.path.stat().st_mode) == 0o600


async def test_a_cancelled_caller_does_not_lose_the_rotated_token(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    """The refresh runs shielded: the request that started it going away does not stop it
    after the token endpoint may already have rotated the refresh token."""
    refresher = Refresher(delay=5.0)
    _, keeper = keeper_for(tmp_path, refresher, expires_in=-1)
    with trio.move_on_after(1.0):
        await keeper.fresh()
    assert keeper.credentials.refresh_token == "refresh-1"
    assert load_credentials(keeper.path).refresh_token == "refresh-1"


async def test_a_transient_failure_keeps_a_still_valid_token(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher(fail=RefreshError("https://x/token answered 503 error"))
    _, keeper = keeper_for(tmp_path, refresher, expires_in=100)  # due (lead 300), not expired
    assert (await keeper.fresh()).access_token == SECRET
    assert keeper.state == "refresh-failing"
    assert keeper.error == "claude account ada@example.com: https://x/token answered 503 error"
    assert (await keeper.fresh()).access_token == SECRET
    assert refresher.calls == 1  # within the backoff: no new try per request
    await trio.sleep(200)  # now expired, and the backoff has passed
    with pytest.raises(RefreshError, match="answered 503"):
        await keeper.fresh()
    assert refresher.calls == 2
    with pytest.raises(RefreshError, match="answered 503"):
        await keeper.fresh()  # fails fast within the backoff
    assert refresher.calls == 2
    await trio.sleep(30)
    refresher.fail = None
    assert (await keeper.fresh()).access_token.startswith("access-")
    assert keeper.state == "ok" and keeper.error is None


async def test_background_retries_back_off(tmp_path: Path,
                                           autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher(delay=0.0, fail=RefreshError("down"))
    store = AuthStore(tmp_path)
    store.save(creds(expires_at=trio.current_time() + 10_000))
    accounts = Accounts(store, {"claude": refresher}, lead=20_000, clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: accounts.run(poll=1.0))
        await trio.sleep(100)  # attempts at 0, 15, 45, 105 s: 3 so far
        assert refresher.calls == 3
        nursery.cancel_scope.cancel()


async def test_a_refresher_bug_is_a_refresh_error(tmp_path: Path,
                                                  autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher(fail=KeyError("access_token"))
    _, keeper = keeper_for(tmp_path, refresher, expires_in=-1)
    with pytest.raises(RefreshError, match=r"refresh failed \(KeyError\)"):
        await keeper.fresh()


async def test_an_account_without_a_refresher_is_listed_not_refreshed(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    store = AuthStore(tmp_path)
    store.save(creds(provider="copilot", expires_at=trio.current_time() - 1))
    accounts = Accounts(store, {}, clock=trio.current_time)
    (keeper,) = accounts.keepers("copilot")
    with pytest.raises(RefreshError, match="mux cannot refresh copilot tokens"):
        await keeper.fresh()


async def test_a_refresh_does_not_write_back_a_removed_file(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    refresher = Refresher(delay=5.0)
    store = AuthStore(tmp_path)
    store.save(creds(expires_at=trio.current_time() - 1))
    accounts = Accounts(store, {"claude": refresher}, clock=trio.current_time)
    (keeper,) = accounts.keepers("claude")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.fresh)
        await trio.sleep(1)
        store.remove("claude")  # mux logout while the refresh runs
        accounts.reload()
    assert store.files() == []
