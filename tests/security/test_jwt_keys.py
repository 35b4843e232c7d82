"""Public keys over real sockets: RS256, ES256 and JWKS; algorithm confusion is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.security.conftest import (
    HS_AUTH,
    KeyPair,
    bearer,
    claims,
    handshake,
    raw_token,
    refused,
    token,
)
from tests.security.test_jwt_handshake import PATH, _signed_raw
from tests.security.test_jwt_settings import jwks_file


def rs_auth(keys: dict[str, KeyPair]) -> dict[str, Any]:
    return {
        **HS_AUTH,
        "secret": None,
        "algorithms": ["RS256"],
        "public_key_file": str(keys["rsa"].public_file),
    }


async def test_rs256_valid_token_accepted(
    server_factory: ServerFactory, keys: dict[str, KeyPair]
) -> None:
    server = await server_factory(auth=rs_auth(keys))
    value = token(key=keys["rsa"].private_pem, algorithm="RS256")
    assert (await handshake(server.ws(PATH), bearer(value))).welcome is not None


async def test_algorithm_confusion_hs256_with_public_key_refused(
    server_factory: ServerFactory, keys: dict[str, KeyPair]
) -> None:
    server = await server_factory(auth=rs_auth(keys))
    # PyJWT refuses to sign this, so build it by hand: HMAC keyed with the public key's PEM.
    forged = _signed_raw(
        {"alg": "HS256", "typ": "JWT"}, json.dumps(claims()).encode(), key=keys["rsa"].public_pem
    )
    assert (await refused(server.ws(PATH), bearer(forged))).close_code == 4401


@pytest.mark.parametrize(
    "case", ["other_rsa_key", "alg_none", "es256_not_configured", "rs512_not_configured"]
)
async def test_rs256_server_refuses(
    server_factory: ServerFactory, keys: dict[str, KeyPair], case: str
) -> None:
    server = await server_factory(auth=rs_auth(keys))
    value = {
        "other_rsa_key": lambda: token(key=keys["rsa_other"].private_pem, algorithm="RS256"),
        "alg_none": lambda: raw_token({"alg": "none"}, claims()),
        "es256_not_configured": lambda: token(key=keys["ec"].private_pem, algorithm="ES256"),
        "rs512_not_configured": lambda: token(key=keys["rsa"].private_pem, algorithm="RS512"),
    }[case]()
    assert (await refused(server.ws(PATH), bearer(value))).close_code == 4401


async def test_es256_public_key(server_factory: ServerFactory, keys: dict[str, KeyPair]) -> None:
    auth = {
        **HS_AUTH,
        "secret": None,
        "algorithms": ["ES256"],
        "public_key_file": str(keys["ec"].public_file),
    }
    server = await server_factory(auth=auth)
    good = token(key=keys["ec"].private_pem, algorithm="ES256")
    assert (await handshake(server.ws(PATH), bearer(good))).welcome is not None
    forged = _signed_raw({"alg": "HS256"}, json.dumps(claims()).encode(), key=keys["ec"].public_pem)
    assert (await refused(server.ws(PATH), bearer(forged))).close_code == 4401


async def test_jwks_picks_the_key_by_kid(
    server_factory: ServerFactory, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    path = jwks_file(tmp_path, ("k1", keys["rsa"], "RS256"), ("k2", keys["rsa_other"], "RS256"))
    auth = {**HS_AUTH, "secret": None, "algorithms": ["RS256"], "jwks_file": str(path)}
    server = await server_factory(auth=auth)
    url = server.ws(PATH)

    def signed(pair: str, kid: str | None) -> str:
        headers = None if kid is None else {"kid": kid}
        return token(key=keys[pair].private_pem, algorithm="RS256", headers=headers)

    assert (await handshake(url, bearer(signed("rsa", "k1")))).welcome is not None
    assert (await handshake(url, bearer(signed("rsa_other", "k2")))).welcome is not None
    # Right key, wrong kid; unknown kid; no kid: all refused.
    for value in (signed("rsa", "k2"), signed("rsa", "k3"), signed("rsa", None)):
        assert (await refused(url, bearer(value))).close_code == 4401
