"""Tokens over real sockets: every bad token is accepted-then-closed 4401, good ones get welcome."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio

from tests.security.conftest import (
    AUDIENCE,
    DROP,
    HS_AUTH,
    ISSUER,
    SECRET,
    bearer,
    claims,
    handshake,
    raw_token,
    refused,
    token,
)
from tests.support.server import RunningServer, make_settings, start_server

PATH = "/ws/chat/sec-client"
# One server for every case here: they only handshake, and starting one per case is most of
# the time (each case is still its own test).
pytestmark = pytest.mark.asyncio(loop_scope="module")
NOW = int(time.time())

# Each case builds a token the HS256 server (audience and issuer set) must refuse.
HS_REFUSED: dict[str, Callable[[], str | None]] = {
    "no_token": lambda: None,
    "empty_bearer": lambda: "",
    "bad_signature": lambda: token(key="another-secret-that-is-long-enough-000"),
    "tampered_payload": lambda: _tamper(token(projects=["p1"]), projects=["*"]),
    "signature_stripped": lambda: token().rsplit(".", 1)[0] + ".",
    "alg_none": lambda: raw_token({"alg": "none", "typ": "JWT"}, claims()),
    "alg_None": lambda: raw_token({"alg": "None", "typ": "JWT"}, claims()),
    "alg_missing": lambda: raw_token({"typ": "JWT"}, claims(), b"x" * 32),
    "alg_hs512_not_configured": lambda: token(algorithm="HS512", key=SECRET * 2),
    "expired": lambda: token(ttl=-3600),
    "expired_past_leeway": lambda: token(ttl=-6),
    "nbf_in_future": lambda: token(nbf=NOW + 3600),
    "iat_in_future": lambda: token(iat=NOW + 3600),
    "missing_exp": lambda: token(exp=DROP),
    "exp_as_string": lambda: _hs(exp=str(NOW + 600)),
    "exp_as_bool": lambda: _hs(exp=True),
    "nbf_as_string": lambda: _hs(nbf="0"),
    "wrong_aud": lambda: token(aud="another-service"),
    "aud_prefix": lambda: token(aud=AUDIENCE[:-1]),
    "aud_suffix": lambda: token(aud=AUDIENCE + "-evil"),
    "aud_list_without_ours": lambda: token(aud=["a", "b"]),
    "missing_aud": lambda: token(aud=DROP),
    "wrong_iss": lambda: token(iss="https://evil.example"),
    "iss_prefix": lambda: token(iss=ISSUER[:-1]),
    "iss_suffix": lambda: token(iss=ISSUER + ".evil.com"),
    "iss_trailing_slash": lambda: token(iss=ISSUER + "/"),
    "iss_as_list": lambda: _hs(iss=[ISSUER]),
    "missing_iss": lambda: token(iss=DROP),
    "oversized": lambda: token(pad="x" * 1600),
    "missing_sub": lambda: token(sub=DROP),
    "empty_sub": lambda: token(sub=""),
    "blank_sub": lambda: token(sub="   "),
    "sub_as_number": lambda: _hs(sub=42),
    "missing_projects": lambda: token(projects=DROP),
    "projects_as_string": lambda: _hs(projects="p1"),
    "projects_with_number": lambda: _hs(projects=["p1", 7]),
    "projects_as_object": lambda: _hs(projects={"p1": True}),
    "projects_with_empty_name": lambda: _hs(projects=[""]),
    "agents_as_list": lambda: _hs(agents=["p1:echo"]),
    "agents_value_as_string": lambda: _hs(agents={"p1": "echo"}),
    "admin_as_string": lambda: _hs(admin="true"),
    "admin_as_number": lambda: _hs(admin=1),
    "not_a_jwt": lambda: "not-a-token",
    "two_segments": lambda: ".".join(token().split(".")[:2]),
    "non_ascii": lambda: token() + "é",
    "deeply_nested_header": lambda: raw_token({"alg": "HS256", "x": _nested(600)}, claims()),
    "json_payload_not_object": lambda: _signed_raw({"alg": "HS256", "typ": "JWT"}, b"[1,2,3]"),
}


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def _hs(**extra: Any) -> str:
    """Signed by hand: PyJWT refuses to encode some malformed claim types."""
    return _signed_raw({"alg": "HS256", "typ": "JWT"}, json.dumps(claims(**extra)).encode())


def _tamper(value: str, **changes: Any) -> str:
    head, _, sig = value.split(".")
    body = claims(**changes)
    return (
        raw_token(json.loads(jwt.utils.base64url_decode(head)), body).rsplit(".", 1)[0] + "." + sig
    )


def _signed_raw(header: dict[str, Any], payload: bytes, key: bytes = SECRET.encode()) -> str:
    b64 = jwt.utils.base64url_encode
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(payload)
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hs_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    server = await start_server(make_settings(tmp_path_factory.mktemp("hs"), auth=HS_AUTH))
    yield server
    await server.stop()


def _leaks(value: str | None, text: str) -> bool:
    return value is not None and any(p in text for p in value.split(".") if len(p) > 6)


@pytest.mark.parametrize("make", HS_REFUSED.values(), ids=HS_REFUSED.keys())
async def test_refused_token_closes_4401(
    hs_server: RunningServer, make: Callable[[], str | None]
) -> None:
    server = hs_server
    value = make()
    headers = None if value is None else {"Authorization": f"Bearer {value}"}
    outcome = await refused(server.ws(PATH), headers)
    assert outcome.close_code == 4401 and outcome.frames == []
    assert not _leaks(value, outcome.close_reason)


async def test_valid_token_by_bearer_gets_welcome(hs_server: RunningServer) -> None:
    server = hs_server
    outcome = await handshake(server.ws(PATH), bearer(token()))
    assert outcome.welcome is not None and outcome.welcome["type"] == "welcome"


async def test_token_within_leeway_is_accepted(hs_server: RunningServer) -> None:
    server = hs_server  # leeway 5 s
    outcome = await handshake(server.ws(PATH), bearer(token(ttl=-2)))
    assert outcome.welcome is not None


async def test_token_at_the_size_limit_is_accepted(hs_server: RunningServer) -> None:
    server = hs_server
    limit = HS_AUTH["max_token_bytes"]
    pad = max(n for n in range(0, limit, 3) if len(token(pad="x" * n)) <= limit)
    assert len(token(pad="x" * pad)) > limit - 8
    assert (await handshake(server.ws(PATH), bearer(token(pad="x" * pad)))).welcome is not None
    assert (await refused(server.ws(PATH), bearer(token(pad="x" * (pad + 8))))).close_code == 4401


async def test_aud_list_containing_ours_is_accepted(hs_server: RunningServer) -> None:
    server = hs_server
    outcome = await handshake(server.ws(PATH), bearer(token(aud=["other", AUDIENCE])))
    assert outcome.welcome is not None


async def test_valid_token_by_query_parameter(hs_server: RunningServer) -> None:
    server = hs_server
    assert (await handshake(server.ws(f"{PATH}?token={token()}"))).welcome is not None
    bad = await refused(server.ws(f"{PATH}?token={token(ttl=-3600)}"))
    assert bad.close_code == 4401


async def test_valid_token_by_session_cookie(hs_server: RunningServer) -> None:
    server = hs_server
    value = token()
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.post("/api/auth/session", json={"token": value})
        assert response.status_code == 200 and response.json()["user"] == "alice"
        set_cookie = response.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
        cookie = response.cookies["dari_session"]
    # The same cookie authenticates REST.
    async with httpx.AsyncClient(base_url=server.http, cookies={"dari_session": cookie}) as http:
        assert (await http.get("/api/projects")).status_code == 200
    outcome = await handshake(server.ws(PATH), {"Cookie": f"dari_session={cookie}"})
    assert outcome.welcome is not None


async def test_session_refuses_bad_token_and_sets_no_cookie(hs_server: RunningServer) -> None:
    server = hs_server
    value = token(key="another-secret-that-is-long-enough-000")
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.post("/api/auth/session", json={"token": value})
    assert response.status_code == 401 and "set-cookie" not in response.headers
    assert response.json()["error"]["code"] == "unauthorized"
    assert not _leaks(value, response.text)


async def test_bad_cookie_closes_4401(hs_server: RunningServer) -> None:
    server = hs_server
    outcome = await refused(server.ws(PATH), {"Cookie": f"dari_session={token(ttl=-3600)}"})
    assert outcome.close_code == 4401


async def test_rest_refuses_bad_token_401(hs_server: RunningServer) -> None:
    server = hs_server
    async with httpx.AsyncClient(base_url=server.http) as http:
        assert (await http.get("/api/projects")).status_code == 401
        assert (await http.get("/api/projects", headers=bearer(token(aud="x")))).status_code == 401
        assert (await http.get("/api/projects", headers=bearer(token()))).status_code == 200
