"""mux.oauth: PKCE, pasted codes, the loopback callback server (real sockets, hit with httpx),
token endpoint calls and errors through mux's own upstream client (loopback fakes, a proxy),
and device-flow polling (a loopback fake on the autojump clock, so intervals are exact virtual
seconds)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

from mux import oauth
from mux.auth import RefreshError, RevokedError
from mux.config import ProviderConfig
from mux.oauth import (
    LoginContext,
    LoginError,
    code_from_pasted,
    jwt_claims,
    pkce,
    poll_device_token,
    post_token,
    state_token,
    url_overrides,
    wait_for_callback,
)
from mux.server import HttpRequest, HttpResponse, Server
from mux.upstream import HttpClient, Timeouts, Upstreams

STEP = 5.0
REFRESH = "rt-SECRET-refresh-0123456789"


# ------------------------------------------------------------------------------------------
# PKCE, state, JWT


def test_pkce_matches_rfc7636_appendix_b(monkeypatch: pytest.MonkeyPatch) -> None:
    octets = bytes([116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186,
                    22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121])
    monkeypatch.setattr(oauth.secrets, "token_bytes", lambda n: octets[:n])
    assert pkce() == ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")


def test_pkce_pairs_are_fresh_and_s256() -> None:
    pairs = {pkce() for _ in range(20)}
    assert len(pairs) == 20
    for verifier, challenge in pairs:
        assert len(verifier) == 43 and "=" not in verifier + challenge
        digest = hashlib.sha256(verifier.encode()).digest()
        assert base64.urlsafe_b64decode(challenge + "=") == digest


def test_state_tokens_are_unique_and_url_safe() -> None:
    states = {state_token() for _ in range(20)}
    assert len(states) == 20
    assert all(len(s) >= 32 and s.replace("-", "").replace("_", "").isalnum() for s in states)


def jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_jwt_claims_decodes_without_verifying() -> None:
    claims = {"email": "ada@example.com",
              "https://api.openai.com/auth": {"chatgpt_account_id": "acc-1"}}
    assert jwt_claims(jwt(claims)) == claims


@pytest.mark.parametrize(("token", "message"), [
    ("SECRETnodots", "not a JWT (expected header.payload.signature)"),
    ("a.SECRET%%%.c", "not a JWT (the payload is not base64url JSON)"),
    ("a." + base64.urlsafe_b64encode(b"[1]").decode() + ".c",
     "not a JWT (the payload is not a JSON object)"),
])
def test_jwt_claims_rejects_without_quoting(token: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^{__import__('re').escape(message)}$"):
        jwt_claims(token)


# ------------------------------------------------------------------------------------------
# Pasted codes


@pytest.mark.parametrize(("text", "code"), [
    ("http://localhost:54545/callback?code=abc123&state=S1", "abc123"),
    ("  http://localhost:1455/auth/callback?code=a%2Bb&scope=x&state=S1\n", "a+b"),
    ("?code=abc&state=S1", "abc"),
    ("code=abc&state=S1", "abc"),
    ("abc123#S1", "abc123"),
    ("abc123", "abc123"),
    ("http://localhost/callback?code=abc", "abc"),  # no state in it: nothing to check
])
def test_code_from_pasted(text: str, code: str) -> None:
    assert code_from_pasted(text, "S1") == code


@pytest.mark.parametrize(("text", "message"), [
    ("", "nothing was pasted"),
    ("http://localhost/callback?code=abc&state=OTHER", "another login attempt"),
    ("abc#OTHER", "another login attempt"),
    ("http://localhost/callback?error=access_denied&error_description=User+said+no",
     "the provider refused the login: access_denied (User said no)"),
    ("http://localhost/callback?state=S1", "has no code= parameter"),
    ("two words", "does not look like an authorization code"),
])
def test_code_from_pasted_refuses(text: str, message: str) -> None:
    with pytest.raises(LoginError, match=__import__("re").escape(message)):
        code_from_pasted(text, "S1")


def test_url_overrides() -> None:
    assert url_overrides(None) == {}
    entry = ProviderConfig(name="c", type="claude", base_url="http://127.0.0.1:1",
                           oauth_token_url="http://127.0.0.1:2/token",
                           urls={"profile-url": "http://127.0.0.1:3/me"})
    assert url_overrides(entry) == {"base-url": "http://127.0.0.1:1",
                                    "oauth-token-url": "http://127.0.0.1:2/token",
                                    "profile-url": "http://127.0.0.1:3/me"}


# ------------------------------------------------------------------------------------------
# The callback server


async def start_callback(nursery: trio.Nursery, result: list[Any], **kw: Any) -> str:
    async def run(task_status: trio.TaskStatus[int]) -> None:
        try:
            result.append(await wait_for_callback(0, "/callback", task_status=task_status, **kw))
        except LoginError as exc:
            result.append(exc)

    port = await nursery.start(run)
    return f"http://127.0.0.1:{port}"


async def test_the_callback_checks_state_and_returns_the_code(nursery: trio.Nursery) -> None:
    result: list[Any] = []
    with trio.fail_after(STEP):
        base = await start_callback(nursery, result, state="S1", timeout=STEP)
        async with httpx.AsyncClient() as client:
            wrong_path = await client.get(base + "/favicon.ico")
            wrong_state = await client.get(base + "/callback", params={"code": "c", "state": "S2"})
            no_state = await client.get(base + "/callback", params={"code": "c"})
            assert (wrong_path.status_code, wrong_state.status_code, no_state.status_code) == (
                404, 400, 400)
            assert result == []  # still waiting
            good = await client.get(base + "/callback", params={"code": "the-code", "state": "S1"})
        assert good.status_code == 200
        assert "you can close this tab" in good.text.lower()
        assert good.headers["content-type"].startswith("text/html")
        while not result:
            await trio.sleep(0.01)
    assert result == ["the-code"]


async def test_an_error_redirect_raises(nursery: trio.Nursery) -> None:
    result: list[Any] = []
    with trio.fail_after(STEP):
        base = await start_callback(nursery, result, state="S1", timeout=STEP)
        async with httpx.AsyncClient() as client:
            page = await client.get(base + "/callback", params={
                "error": "access_denied", "error_description": "<b>no</b>", "state": "S1"})
        while not result:
            await trio.sleep(0.01)
    assert page.status_code == 200 and "&lt;b&gt;no&lt;/b&gt;" in page.text
    assert isinstance(result[0], LoginError)
    assert str(result[0]) == "the provider refused the login: access_denied (<b>no</b>)"


async def test_the_callback_times_out() -> None:
    with trio.fail_after(STEP):
        with pytest.raises(LoginError, match=r"^no login arrived at http://127\.0\.0\.1:0/cb "
                                             r"within 0\.2s$"):
            await wait_for_callback(0, "/cb", state="S", timeout=0.2)


async def test_a_busy_port_is_an_os_error(nursery: trio.Nursery) -> None:
    result: list[Any] = []
    base = await start_callback(nursery, result, state="S1", timeout=STEP)
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        await wait_for_callback(port, "/callback", state="S", timeout=1)


async def test_receive_code_takes_a_pasted_url_when_no_redirect_comes() -> None:
    """Headless: the browser is elsewhere; the user pastes the URL it ended on."""
    printed: list[str] = []
    asked: list[str] = []

    async def paste(prompt: str) -> str:
        asked.append(prompt)
        await trio.sleep(0.05)
        if len(asked) == 1:
            return "garbage with spaces"
        return "http://localhost:9/callback?code=pasted&state=S1"

    async with Upstreams(trust_env=False) as upstreams:
        ctx = LoginContext(http=upstreams.client(), open_browser=False, print=printed.append, input=paste,
                           browse=lambda url: pytest.fail("no browser with --no-browser"))
        with trio.fail_after(STEP):
            code = await ctx.receive_code("https://auth.example/authorize?x=1", port=0,
                                          path="/callback", state="S1")
    assert code == "pasted"
    assert printed[0] == "Open this URL to log in:\n\n  https://auth.example/authorize?x=1\n"
    assert "does not look like an authorization code" in printed[1]


async def test_receive_code_takes_the_redirect_and_opens_the_browser(
        nursery: trio.Nursery) -> None:
    opened: list[str] = []
    port_of: list[int] = []

    async def no_terminal(prompt: str) -> str:
        raise EOFError

    async def browser() -> None:
        with trio.fail_after(STEP):
            while not opened:
                await trio.sleep(0.01)
            async with httpx.AsyncClient() as client:
                while True:  # the server starts a moment after the browser opens
                    try:
                        await client.get(f"http://127.0.0.1:{port_of[0]}/cb",
                                         params={"code": "redirected", "state": "S1"})
                        return
                    except httpx.ConnectError:
                        await trio.sleep(0.01)

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port_of.append(sock.getsockname()[1])
    nursery.start_soon(browser)
    async with Upstreams(trust_env=False) as upstreams:
        ctx = LoginContext(http=upstreams.client(), print=lambda line: None, input=no_terminal,
                           browse=lambda url: bool(opened.append(url)) or True)
        with trio.fail_after(STEP):
            code = await ctx.receive_code("https://auth.example/a", port=port_of[0], path="/cb",
                                          state="S1")
    assert code == "redirected" and opened == ["https://auth.example/a"]


# ------------------------------------------------------------------------------------------
# Token endpoints


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    """mux's OAuth client (its default timeouts), straight to the loopback fakes."""
    async with Upstreams(trust_env=False) as upstreams:
        yield upstreams.client(provider="test")


async def endpoint(nursery: trio.Nursery, handler: Handler, path: str = "/token") -> str:
    """A fake token endpoint on a loopback port; its URL."""
    port = await nursery.start(Server(handler).serve, "127.0.0.1", 0)
    return f"http://127.0.0.1:{port}{path}"


def answer(status: int, body: Any = None) -> HttpResponse:
    """A JSON answer (None: an empty body; a str: that text as HTML)."""
    if isinstance(body, str):
        return HttpResponse(status=status, headers=[("content-type", "text/html")],
                            body=body.encode())
    return HttpResponse(status=status, headers=[("content-type", "application/json")],
                        body=json.dumps(body).encode() if body is not None else b"")


async def test_post_token_sends_json_or_form_over_a_real_socket(
        nursery: trio.Nursery, http: HttpClient) -> None:
    seen: list[HttpRequest] = []

    async def handle(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return answer(200, {"access_token": "a", "expires_in": 3600})

    url = await endpoint(nursery, handle, "/v1/oauth/token")
    with trio.fail_after(STEP):
        got = await post_token(http, url, json={"grant_type": "refresh_token",
                                                "refresh_token": REFRESH})
        await post_token(http, url, form={"grant_type": "refresh_token",
                                          "refresh_token": REFRESH})
    assert got == {"access_token": "a", "expires_in": 3600}
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["accept"] == "application/json"
    assert json.loads(seen[0].body) == {"grant_type": "refresh_token", "refresh_token": REFRESH}
    assert seen[1].headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen[1].body == f"grant_type=refresh_token&refresh_token={REFRESH}".encode()


@pytest.mark.parametrize(("status", "body", "error", "message"), [
    (400, {"error": "invalid_grant", "error_description": f"Refresh token {REFRESH} not found"},
     RevokedError, "{where} answered 400 invalid_grant: Refresh token <redacted> not found"),
    (401, {"error": {"message": "Your refresh token has already been used",
                     "type": "invalid_request_error", "code": "refresh_token_reused"}},
     RevokedError, "{where} answered 401 refresh_token_reused: Your refresh token has already "
                   "been used"),
    (400, {"error": "invalid_client"}, RefreshError, "{where} answered 400 invalid_client"),
    (503, None, RefreshError, "{where} answered 503 error"),
    (200, {"error": "authorization_pending"}, RefreshError,
     "{where} answered 200 authorization_pending"),
    (200, "<html>", RefreshError, "{where}: the token endpoint answered 200 without JSON"),
])
async def test_post_token_errors(nursery: trio.Nursery, http: HttpClient, status: int,
                                 body: Any, error: type[Exception], message: str) -> None:
    async def handle(request: HttpRequest) -> HttpResponse:
        return answer(status, body)

    url = await endpoint(nursery, handle)
    with trio.fail_after(STEP), pytest.raises(error) as caught:
        await post_token(http, url, json={"grant_type": "refresh_token",
                                          "refresh_token": REFRESH})
    assert str(caught.value) == message.format(where=url)
    assert REFRESH not in str(caught.value)


async def test_post_token_network_failure_is_a_refresh_error(http: HttpClient) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(STEP), pytest.raises(
            RefreshError, match=rf"^http://127\.0\.0\.1:{port}/token: cannot reach the token "
                                r"endpoint \(cannot connect \(.+\)\)$"):
        await post_token(http, f"http://127.0.0.1:{port}/token",
                         form={"refresh_token": REFRESH})


async def test_post_token_invalid_url_is_a_refresh_error(http: HttpClient) -> None:
    with pytest.raises(RefreshError, match=r"^token endpoint: cannot reach the token endpoint "
                                           r"\(invalid URL\)$"):
        await post_token(http, "not a url", form={"refresh_token": REFRESH})


async def test_a_token_endpoint_timeout_names_the_host_not_the_token(
        nursery: trio.Nursery, http: HttpClient, autojump_clock: trio.abc.Clock) -> None:
    """An endpoint that never answers: after the OAuth first-byte timeout (30 virtual
    seconds) a RefreshError naming the endpoint, without the refresh token (which was in the
    body) or the bearer (in a header)."""
    arrived: list[bytes] = []

    async def hang(request: HttpRequest) -> HttpResponse:
        arrived.append(request.body)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    url = await endpoint(nursery, hang)
    start = trio.current_time()
    with pytest.raises(RefreshError) as caught:
        await post_token(http, url, json={"refresh_token": REFRESH},
                         headers={"authorization": "Bearer SECRET-bearer-0123456789"})
    assert str(caught.value) == f"{url}: no answer within 30s"
    assert trio.current_time() - start == pytest.approx(30)
    assert REFRESH.encode() in arrived[0]  # it was sent, and is not in the message
    assert "SECRET" not in str(caught.value) and caught.value.__cause__ is None


async def test_token_calls_go_through_the_proxy_url(nursery: trio.Nursery) -> None:
    """A refresh under a ``[[providers]]`` entry with ``proxy-url`` goes to that proxy (in
    absolute form, as for plain-HTTP upstreams), never straight to the endpoint."""
    from mux.auth import Credentials
    from mux.config import Config
    from mux.providers.subscriptions import refreshers

    seen: list[HttpRequest] = []

    async def proxy(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return answer(200, {"access_token": "new-access", "refresh_token": "new-refresh",
                            "expires_in": 3600})

    proxy_url = (await endpoint(nursery, proxy, "")).rstrip("/")
    entry = ProviderConfig(name="c", type="claude", proxy_url=proxy_url,
                           oauth_token_url="http://auth.invalid/v1/oauth/token")
    old = Credentials(provider="claude", account="a@example.com", access_token="old-access",
                      refresh_token=REFRESH, expires_at=0.0)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            refresh = refreshers(Config(providers=[entry]), upstreams)["claude"]
            new = await refresh(old)
    assert (new.access_token, new.refresh_token) == ("new-access", "new-refresh")
    assert [r.raw_path for r in seen] == ["http://auth.invalid/v1/oauth/token"]
    assert json.loads(seen[0].body)["refresh_token"] == REFRESH


def test_the_client_is_bound_to_the_proxy_and_short_timeouts() -> None:
    upstreams = Upstreams(trust_env=False)
    client = upstreams.client("http://127.0.0.1:3128", provider="claude")
    assert (client.proxy_url, client.provider) == ("http://127.0.0.1:3128", "claude")
    assert client.timeouts == Timeouts(connect=10.0, first_byte=30.0, idle=30.0)


# ------------------------------------------------------------------------------------------
# Device flow


class DeviceEndpoint:
    """Answers a scripted list of (status, body), recording when each poll came."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self.bodies: list[bytes] = []

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        self.times.append(trio.current_time())
        self.bodies.append(request.body)
        status, body = self.answers.pop(0)
        return answer(status, body)


async def test_device_polling_waits_slows_down_and_succeeds(
        nursery: trio.Nursery, http: HttpClient, autojump_clock: trio.abc.Clock) -> None:
    device = DeviceEndpoint(
        (400, {"error": "authorization_pending"}),
        (400, {"error": "slow_down"}),
        (200, {"error": "authorization_pending"}),  # GitHub answers pending with 200
        (200, {"access_token": "gho_x", "token_type": "bearer"}),
    )
    url = await endpoint(nursery, device, "/login/oauth/access_token")
    start = trio.current_time()
    got = await poll_device_token(
        http, url,
        form={"client_id": "cid", "device_code": "dc",
              "grant_type": "urn:ietf:params:oauth:grant-type:device_code"},
        interval=5, timeout=900)
    assert got == {"access_token": "gho_x", "token_type": "bearer"}
    assert [t - start for t in device.times] == [5, 10, 20, 30]  # +5 s after slow_down
    assert device.bodies[0] == (b"client_id=cid&device_code=dc&grant_type=urn%3Aietf%3Aparams"
                                b"%3Aoauth%3Agrant-type%3Adevice_code")


async def test_device_polling_takes_the_servers_new_interval(
        nursery: trio.Nursery, http: HttpClient, autojump_clock: trio.abc.Clock) -> None:
    device = DeviceEndpoint((400, {"error": "slow_down", "interval": 30}), (200, {"ok": 1}))
    url = await endpoint(nursery, device)
    start = trio.current_time()
    await poll_device_token(http, url, json={"d": 1}, interval=5)
    assert [t - start for t in device.times] == [5, 35]


async def test_device_polling_pending_statuses(
        nursery: trio.Nursery, http: HttpClient, autojump_clock: trio.abc.Clock) -> None:
    """OpenAI's device endpoint answers 403/404 until the user approves."""
    device = DeviceEndpoint((403, {"error": {"message": "pending"}}), (404, {}),
                            (200, {"authorization_code": "ac", "code_verifier": "v"}))
    url = await endpoint(nursery, device, "/deviceauth/token")
    got = await poll_device_token(http, url, json={"u": 1}, interval=5,
                                  pending_statuses=(403, 404))
    assert got["authorization_code"] == "ac" and len(device.times) == 3


@pytest.mark.parametrize(("reply", "message"), [
    ((400, {"error": "expired_token"}), "the device code expired before the login was approved"),
    ((400, {"error": "access_denied"}), "the login was denied"),
    ((400, {"error": "unsupported_grant_type", "error_description": "nope"}),
     "{url} answered 400 unsupported_grant_type: nope"),
])
async def test_device_polling_failures(nursery: trio.Nursery, http: HttpClient,
                                       autojump_clock: trio.abc.Clock,
                                       reply: tuple[int, Any], message: str) -> None:
    device = DeviceEndpoint((400, {"error": "authorization_pending"}), reply)
    url = await endpoint(nursery, device)
    with pytest.raises(LoginError) as caught:
        await poll_device_token(http, url, form={"d": "SECRET-device-code"})
    assert str(caught.value).startswith(message.format(url=url))
    assert "SECRET" not in str(caught.value)


async def test_device_polling_network_failure_is_a_login_error(http: HttpClient,
                                                               autojump_clock: trio.abc.Clock
                                                               ) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LoginError, match=rf"^http://127\.0\.0\.1:{port}/token: cannot reach "):
        await poll_device_token(http, f"http://127.0.0.1:{port}/token",
                                form={"device_code": "SECRET-device-code"}, interval=1)


async def test_device_polling_gives_up_at_the_timeout(
        nursery: trio.Nursery, http: HttpClient, autojump_clock: trio.abc.Clock) -> None:
    device = DeviceEndpoint(*[(400, {"error": "authorization_pending"})] * 100)
    url = await endpoint(nursery, device)
    start = trio.current_time()
    with pytest.raises(LoginError, match=r"^the login was not approved within 60s; "):
        await poll_device_token(http, url, form={}, interval=5, timeout=60)
    assert trio.current_time() - start == 60 and len(device.times) == 11
