"""Subscription accounts: token files in the auth dir, and keeping their tokens fresh.

Hierarchy of errors::

    MuxError
    └── UpstreamError
        ├── RevokedError     the refresh token is dead (invalid_grant): log in again
        └── RefreshError     a refresh failed otherwise (network, 5xx): retried later
    AuthFileError            an auth file cannot be read (names the file and the key)

Both refresh errors are :class:`~mux.errors.UpstreamError` (AUTHENTICATION and UPSTREAM),
so one that escapes a provider still reaches the router as an error it knows how to route
around.

Theory of operation
-------------------
An account is one JSON file in the auth dir (:class:`AuthStore`), named
``<provider>-<account>.json``, mode 0600 in a 0700 directory, written atomically: a temporary
file in the same directory, fsync, rename, fsync of the directory. A reader therefore sees the
old file or the new one, never half of one, and a crash loses at most the newest write. The
files are self-contained (no machine-specific paths or keys), so copying them to another
machine's auth dir moves the accounts there.

:class:`Accounts` holds one :class:`TokenKeeper` per file and keeps them live: its
:meth:`Accounts.run` task polls the directory (mtime, size and inode of each file: no new
dependency, and a rename is always seen) and reloads added, changed and removed files; and it
refreshes each token ``lead`` seconds before it expires. A request calls
:meth:`TokenKeeper.fresh`, which refreshes first if the token is due; an upstream 401 calls
:meth:`TokenKeeper.refresh`. Either way there is at most one refresh per account in flight:
callers that arrive during one wait for it and share its outcome. A refresh runs shielded
from the caller's cancellation (under its own timeout) because refresh tokens rotate: once the
token endpoint has answered, the old refresh token is dead, and the new one must reach the
disk or the account is lost. It is saved before anyone uses the new access token.

``invalid_grant`` marks the account revoked, in memory and in its file (``"state":
"revoked"``, which ``mux status`` shows); routing skips it until the file changes, e.g. by
logging in again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from mux.config import Config, default_auth_dir
from mux.errors import UpstreamError
from mux.ir import ErrorKind

__all__ = [
    "Accounts",
    "AuthEntry",
    "AuthFileError",
    "AuthStore",
    "Credentials",
    "REFRESH_TIMEOUT",
    "RefreshError",
    "Refresher",
    "RevokedError",
    "TokenKeeper",
    "auth_dir",
    "dump_credentials",
    "load_credentials",
    "read_entry",
    "read_json",
]

log = logging.getLogger("mux.auth")

#: The file format's version, written into every file.
FORMAT_VERSION = 1
#: A refresh (one token endpoint round trip) may take this long; it runs shielded, so this
#: bounds how long a cancelled request can be held up by it.
REFRESH_TIMEOUT = 60.0
#: After a failed background refresh, the next attempt waits this long, doubling per failure
#: up to the cap (the token may still be valid for a while; requests still try at once).
RETRY_BACKOFF = 15.0
RETRY_BACKOFF_MAX = 300.0

STATES = ("ok", "refresh-failing", "revoked")

_UNSAFE = re.compile(r"[^A-Za-z0-9@._-]")


class AuthFileError(Exception):
    """An auth file is unreadable or malformed; the message names the file and the key, never
    a value."""


def read_json(path: Path) -> Any:
    """A JSON file another tool wrote (``mux import``).

    Raises:
      AuthFileError: not JSON (where, never what).
      OSError: the file cannot be read.
    """
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthFileError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno})") from None


class RevokedError(UpstreamError):
    """The refresh token is dead (``invalid_grant``): the account needs a new login."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.AUTHENTICATION, message)


class RefreshError(UpstreamError):
    """A refresh failed for another reason (network, 5xx, a malformed answer); retried later."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.UPSTREAM, message)


@attrs.frozen(kw_only=True)
class Credentials:
    """One subscription account's tokens. ``repr`` shows no token."""

    #: "claude" | "codex" | (later) "copilot" | "gemini-cli" | "antigravity"
    provider: str
    #: Email or account id: names the file and the account.
    account: str
    access_token: str = attrs.field(repr=False)
    refresh_token: str | None = attrs.field(default=None, repr=False)
    #: Unix seconds; None: unknown / never.
    expires_at: float | None = None
    #: Provider extras: account_id, plan, project_id, ...
    extras: Mapping[str, Any] = attrs.field(factory=dict)


Refresher = Callable[[Credentials], Awaitable[Credentials]]
"""Provider-specific: new credentials from old ones; raises RevokedError / RefreshError."""


# ------------------------------------------------------------------------------------------
# Files


def dump_credentials(credentials: Credentials, *, state: str | None = None) -> dict[str, Any]:
    """The JSON object of an auth file."""
    data: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "provider": credentials.provider,
        "account": credentials.account,
        "access_token": credentials.access_token,
        "refresh_token": credentials.refresh_token,
        "expires_at": credentials.expires_at,
        "extras": dict(credentials.extras),
    }
    if state is not None and state != "ok":
        data["state"] = state
    return data


def _kind(value: object) -> str:
    """What a JSON value is, for messages that must not quote it."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _parse(path: Path, data: object) -> tuple[Credentials, str]:
    def bad(key: str, expected: str, value: object) -> AuthFileError:
        return AuthFileError(f"{path}: {key}: expected {expected}, got {_kind(value)}")

    if not isinstance(data, dict):
        raise bad("(top level)", "an object", data)
    for key in ("provider", "account", "access_token"):
        if key not in data:
            raise AuthFileError(f"{path}: {key}: required key is missing")
        if not isinstance(data[key], str) or not data[key]:
            raise bad(key, "a non-empty string", data[key])
    refresh = data.get("refresh_token")
    if refresh is not None and not isinstance(refresh, str):
        raise bad("refresh_token", "a string or null", refresh)
    expires = data.get("expires_at")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))
                                or not math.isfinite(expires)):
        raise bad("expires_at", "a number of Unix seconds or null", expires)
    extras = data.get("extras", {})
    if not isinstance(extras, dict):
        raise bad("extras", "an object", extras)
    state = data.get("state", "ok")
    if state not in STATES:
        raise bad("state", f"one of {', '.join(STATES)}", state)
    credentials = Credentials(
        provider=data["provider"], account=data["account"], access_token=data["access_token"],
        refresh_token=refresh, expires_at=None if expires is None else float(expires),
        extras=extras,
    )
    return credentials, state


def _read(path: Path) -> tuple[Credentials, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AuthFileError(f"{path}: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # The position only: the message of a decode error quotes no input.
        raise AuthFileError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno})") from None
    return _parse(path, data)


def read_entry(path: Path) -> AuthEntry:
    """Read one auth file with the state recorded in it.

    Raises:
      AuthFileError: as :func:`load_credentials`.
    """
    return AuthEntry(path, *_read(path))


def load_credentials(path: Path) -> Credentials:
    """Read one auth file.

    Raises:
      AuthFileError: naming the file and the bad key (never a value).
    """
    return _read(path)[0]


@attrs.frozen
class AuthEntry:
    """One readable auth file: its credentials and the state recorded in it."""

    path: Path
    credentials: Credentials
    #: "ok" or "revoked" (the only state written to files).
    state: str = "ok"


def auth_dir(config: Config) -> Path:
    """The configured ``auth-dir`` (``~`` expanded), else the default."""
    return Path(config.auth_dir).expanduser() if config.auth_dir else default_auth_dir()


class AuthStore:
    """The auth dir: one JSON file per account."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def from_config(cls, config: Config) -> AuthStore:
        """The store at the config's ``auth-dir``."""
        return cls(auth_dir(config))

    def path_for(self, provider: str, account: str) -> Path:
        """``<provider>-<account>.json``, the account sanitised to ``[A-Za-z0-9@._-]``."""
        safe = _UNSAFE.sub("_", account).lstrip(".") or "account"
        return self.directory / f"{_UNSAFE.sub('_', provider)}-{safe}.json"

    def files(self) -> list[Path]:
        """The auth files (``*.json``, not hidden), sorted by name; none if no directory."""
        try:
            names = sorted(os.listdir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [self.directory / n for n in names if n.endswith(".json") and not n.startswith(".")]

    def entries(self) -> list[AuthEntry]:
        """Every readable file with its state; bad files are logged (no secrets) and skipped."""
        found = []
        for path in self.files():
            try:
                credentials, state = _read(path)
            except AuthFileError as exc:
                log.warning("skipping an auth file: %s", exc)
                continue
            found.append(AuthEntry(path, credentials, state))
        return found

    def load_all(self) -> list[Credentials]:
        """Every readable account; bad files are logged (no secrets) and skipped."""
        return [entry.credentials for entry in self.entries()]

    def save(self, credentials: Credentials, *, state: str | None = None) -> Path:
        """Write the account's file atomically (mode 0600; the directory 0700).

        Raises:
          OSError: the file could not be written (the old one, if any, is intact).
        """
        path = self.path_for(credentials.provider, credentials.account)
        self._write(path, dump_credentials(credentials, state=state))
        return path

    def _write(self, path: Path, data: Mapping[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        # mkstemp makes the file 0600 and unique; hidden, so a reader of the directory
        # never takes it for an account.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(self.directory)

    def mark(self, credentials: Credentials, state: str) -> Path:
        """Rewrite the account's file with ``state`` recorded (``"ok"`` clears it)."""
        return self.save(credentials, state=state)

    def remove(self, provider: str, account: str | None = None) -> list[Path]:
        """Delete the provider's accounts (all of them, or the one named ``account``: its
        email/id or its file's name); returns the files removed."""
        wanted = None if account is None else self.path_for(provider, account).name
        removed = []
        for path in self.files():
            try:
                credentials, _ = _read(path)
            except AuthFileError:
                # An unreadable file is removed only when named exactly.
                if path.name != wanted:
                    continue
            else:
                if credentials.provider != provider:
                    continue
                if account is not None and account not in (credentials.account, path.name,
                                                           path.stem) and path.name != wanted:
                    continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
        return removed


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory is; not every platform can open one.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# Keeping tokens fresh


@attrs.frozen
class _Outcome:
    credentials: Credentials | None = None
    error: Exception | None = None


@attrs.define(eq=False)
class _Flight:
    """One refresh in flight: its waiters read the outcome once ``done`` is set."""

    done: trio.Event = attrs.Factory(trio.Event)
    outcome: _Outcome = attrs.Factory(_Outcome)


class TokenKeeper:
    """One account's newest credentials and the single-flight refresh of them.

    Attributes:
      credentials: the newest credentials.
      state: "ok", "refresh-failing" or "revoked".
      error: why the last refresh failed (no secrets), else None.
      path: the account's file.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        path: Path,
        store: AuthStore,
        refresher: Refresher | None,
        lead: float = 300.0,
        clock: Callable[[], float] = time.time,
        state: str = "ok",
    ) -> None:
        self.credentials = credentials
        self.state = state
        self.error: str | None = None
        self.path = path
        self._store = store
        self._refresher = refresher
        self._lead = lead
        self._clock = clock
        #: When the current token was obtained by a refresh here (None: read from a file).
        self._obtained: float | None = None
        self._inflight: _Flight | None = None
        self._failures = 0
        self._next_attempt = -math.inf
        #: The file was removed: a refresh still running must not write it back.
        self.removed = False

    def __repr__(self) -> str:
        return f"<TokenKeeper {self.credentials.provider}:{self.credentials.account} {self.state}>"

    @property
    def provider(self) -> str:
        return self.credentials.provider

    @property
    def account(self) -> str:
        return self.credentials.account

    @property
    def refreshing(self) -> bool:
        """A refresh is in flight."""
        return self._inflight is not None

    def due_at(self) -> float:
        """When the token should be refreshed (``inf``: never, its expiry is unknown).

        ``lead`` seconds before expiry, but never earlier than half-way through the life of a
        token obtained here, so that a token living less than ``lead`` is not refreshed in a
        loop.
        """
        expires = self.credentials.expires_at
        if expires is None:
            return math.inf
        lead = self._lead
        if self._obtained is not None:
            lead = min(lead, max(0.0, (expires - self._obtained) / 2))
        return expires - lead

    def expired(self) -> bool:
        expires = self.credentials.expires_at
        return expires is not None and self._clock() >= expires

    async def fresh(self) -> Credentials:
        """The credentials, refreshed first if the token expired or is within the lead time.

        A refresh in flight is waited for rather than doubled. If the token is only due (not
        expired) and the refresh fails for a transient reason, the still-valid token is
        returned; after such a failure, requests do not try again until the backoff has
        passed (15 s, doubling to 5 min).

        Raises:
          RevokedError: the account is revoked.
          RefreshError: the token has expired and could not be refreshed.
        """
        if self.state == "revoked":
            raise RevokedError(self._revoked_message())
        now = self._clock()
        if not self.refreshing:
            if now < self.due_at():
                return self.credentials
            if now < self._next_attempt:
                # A refresh failed moments ago: requests do not each wait for another try
                # (the background task retries with backoff).
                if self.expired():
                    raise RefreshError(self.error or "the token expired")
                return self.credentials
        try:
            return await self.refresh()
        except RefreshError:
            if self.expired():
                raise
            return self.credentials

    async def refresh(self, *, stale: str | None = None) -> Credentials:
        """Refresh now (after an upstream 401); concurrent callers share one refresh. The new
        credentials are saved atomically before this returns.

        Args:
          stale: the access token the upstream refused. If the keeper already holds a
            different one (another request refreshed meanwhile), it is returned as it is.

        Raises:
          RevokedError: the refresh token is dead (the account is now revoked).
          RefreshError: the refresh failed otherwise; ``state`` is "refresh-failing".
        """
        if self.state == "revoked":
            raise RevokedError(self._revoked_message())
        flight = self._inflight
        if flight is None:
            if stale is not None and stale != self.credentials.access_token:
                return self.credentials
            flight = self._inflight = _Flight()
            try:
                flight.outcome = await self._run_refresh()
            finally:
                flight.done.set()
                self._inflight = None
        else:
            await flight.done.wait()
        outcome = flight.outcome
        if outcome.credentials is not None:
            return outcome.credentials
        # A fresh exception per caller: one object raised in many tasks tangles tracebacks.
        error = outcome.error
        if isinstance(error, RevokedError):
            raise RevokedError(str(error))
        raise RefreshError(str(error) if error else "the refresh was interrupted")

    async def _run_refresh(self) -> _Outcome:
        old = self.credentials
        name = f"{old.provider} account {old.account}"
        if self._refresher is None:
            self.error = f"{name}: mux cannot refresh {old.provider} tokens"
            self.state = "refresh-failing"
            return _Outcome(error=RefreshError(self.error))
        # Shielded: once the token endpoint has rotated the refresh token, the new one must
        # be saved even if the request that asked for it has gone away.
        with trio.CancelScope(shield=True):
            with trio.move_on_after(REFRESH_TIMEOUT) as timer:
                try:
                    new = await self._refresher(old)
                except RevokedError as exc:
                    return self._revoked(old, str(exc))
                except RefreshError as exc:
                    return self._failed(f"{name}: {exc}")
                except Exception as exc:  # a refresher bug must not kill the background task
                    log.exception("refreshing %s failed", name)
                    return self._failed(f"{name}: refresh failed ({type(exc).__name__})")
            if timer.cancelled_caught:
                return self._failed(f"{name}: the refresh took longer than {REFRESH_TIMEOUT:g}s")
            if not self.removed:
                try:
                    # In the event loop, not a worker thread: one small file per account
                    # per token lifetime.
                    self.path = self._store.save(new)
                except OSError as exc:
                    # The refreshed token works, but will be lost at exit; say so loudly.
                    log.error("%s: cannot save the refreshed token to %s: %s", name,
                              self._store.path_for(new.provider, new.account), exc.strerror)
        self.credentials = new
        self._obtained = self._clock()
        self.state = "ok"
        self.error = None
        self._failures = 0
        self._next_attempt = -math.inf
        log.info("%s: token refreshed", name)
        return _Outcome(credentials=new)

    def _revoked(self, old: Credentials, why: str) -> _Outcome:
        self.state = "revoked"
        self.error = why
        log.warning("%s account %s is revoked (%s): log in again", old.provider, old.account, why)
        if not self.removed:
            try:
                self._store.mark(old, "revoked")
            except OSError as exc:
                log.error("cannot record the revocation in %s: %s", self.path, exc.strerror)
        return _Outcome(error=RevokedError(self._revoked_message()))

    def _failed(self, why: str) -> _Outcome:
        self.state = "refresh-failing"
        self.error = why
        self._failures += 1
        backoff = min(RETRY_BACKOFF * 2 ** (self._failures - 1), RETRY_BACKOFF_MAX)
        self._next_attempt = self._clock() + backoff
        log.warning("%s; next try in %.0fs", why, backoff)
        return _Outcome(error=RefreshError(why))

    def _revoked_message(self) -> str:
        c = self.credentials
        return (f"{c.provider} account {c.account} is revoked (its refresh token no longer "
                f"works): run `mux login {c.provider}` again")

    def _replace(self, credentials: Credentials, state: str, path: Path) -> None:
        """New contents of the file, written by someone else (a new login, another mux)."""
        changed = credentials != self.credentials
        self.credentials = credentials
        self.path = path
        if changed:
            self._obtained = None
            self._failures = 0
            self._next_attempt = -math.inf
            self.error = None
            self.state = state
        elif state == "revoked":
            self.state = "revoked"

    def _background_due(self) -> bool:
        return (self.state != "revoked" and self._refresher is not None
                and not self.refreshing and self._clock() >= self.due_at()
                and self._clock() >= self._next_attempt)


class Accounts:
    """Every subscription account in the auth dir, live.

    Args:
      store: the auth dir.
      refreshers: per provider name; accounts of other providers are listed but never
        refreshed.
      lead: seconds before expiry at which tokens are refreshed (``refresh-lead``).
      clock: Unix seconds now (tests pass ``trio.current_time``).
    """

    def __init__(
        self,
        store: AuthStore,
        refreshers: Mapping[str, Refresher],
        *,
        lead: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._refreshers = dict(refreshers)
        self._lead = lead
        self._clock = clock
        #: By file name: (signature, keeper).
        self._files: dict[str, tuple[tuple[int, int, int], TokenKeeper]] = {}
        self.reload()

    def keepers(self, provider: str) -> list[TokenKeeper]:
        """The provider's accounts that are not revoked, in a stable order (file name)."""
        return [k for k in self.all() if k.provider == provider and k.state != "revoked"]

    def all(self) -> list[TokenKeeper]:
        """Every account, revoked ones included (for status)."""
        return [keeper for _, (_, keeper) in sorted(self._files.items())]

    def reload(self) -> None:
        """Re-read the directory: new, changed and removed files take effect now."""
        seen = set()
        for path in self.store.files():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            seen.add(path.name)
            known = self._files.get(path.name)
            if known is not None and known[0] == signature:
                continue
            try:
                credentials, state = _read(path)
            except AuthFileError as exc:
                # A file being replaced by hand may be half-written: keep what we had, and
                # look again when it changes.
                log.warning("skipping an auth file: %s", exc)
                if known is not None:
                    self._files[path.name] = (signature, known[1])
                continue
            if known is not None and known[1].provider == credentials.provider:
                known[1]._replace(credentials, state, path)
                self._files[path.name] = (signature, known[1])
                continue
            if known is not None:
                known[1].removed = True
            keeper = TokenKeeper(
                credentials, path=path, store=self.store,
                refresher=self._refreshers.get(credentials.provider), lead=self._lead,
                clock=self._clock, state=state,
            )
            self._files[path.name] = (signature, keeper)
            log.info("%s account %s loaded from %s", credentials.provider, credentials.account,
                     path.name)
        for name in set(self._files) - seen:
            _, keeper = self._files.pop(name)
            keeper.removed = True
            log.info("%s account %s removed", keeper.provider, keeper.account)

    async def run(
        self, *, poll: float = 1.0, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Forever: reload the directory every ``poll`` seconds and refresh each token that is
        due, each in its own task (a slow token endpoint holds up no other account)."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                for keeper in self.all():
                    if keeper._background_due():
                        nursery.start_soon(self._refresh_quietly, keeper)
                await trio.sleep(poll)
                try:
                    self.reload()
                except OSError as exc:
                    log.warning("cannot read the auth dir %s: %s", self.store.directory,
                                exc.strerror)

    @staticmethod
    async def _refresh_quietly(keeper: TokenKeeper) -> None:
        with contextlib.suppress(RevokedError, RefreshError):  # recorded in keeper.state
            await keeper.refresh()
