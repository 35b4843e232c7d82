"""JwtAuthenticator settings are checked at construction; dari token mints what it accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest

from dari.auth.base import Credentials
from dari.auth.jwt import JwtAuthenticator
from dari.auth.tokens import mint_token
from dari.cli import main
from dari.protocol.errors import AccessError, ErrorCode
from dari.settings import AuthSettings
from tests.security.conftest import SECRET, KeyPair


def auth(**fields: Any) -> AuthSettings:
    return AuthSettings(**{"mode": "jwt", **fields})


def jwks_file(tmp_path: Path, *pairs: tuple[str | None, KeyPair, str]) -> Path:
    keys = []
    for kid, pair, alg in pairs:
        jwk = json.loads(
            jwt.algorithms.get_default_algorithms()[alg].to_jwk(pair.private.public_key())
        )
        if kid is not None:
            jwk["kid"] = kid
        jwk["alg"] = alg
        keys.append(jwk)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


# --- refused settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"secret": None}, "auth.secret is required"),
        ({"secret": "x" * 31}, "at least 32"),
        ({"secret": "x" * 40, "algorithms": ["HS512"]}, "at least 64"),
        ({"secret": SECRET, "algorithms": []}, "empty"),
        ({"secret": SECRET, "algorithms": ["none"]}, "not accepted"),
        ({"secret": SECRET, "algorithms": ["HS256", "RS256"]}, "mixes HMAC"),
        ({"secret": SECRET, "algorithms": ["RS256", "HS256"]}, "mixes HMAC"),
        ({"algorithms": ["RS256"]}, "exactly one of auth.public_key_file"),
        ({"mode": "none", "secret": SECRET}, "auth.mode = 'jwt'"),
    ],
    ids=[
        "hs_without_secret",
        "hs256_short_secret",
        "hs512_short_secret",
        "no_algorithms",
        "alg_none",
        "mixed_hs_rs",
        "mixed_rs_hs",
        "rs_without_key",
        "mode_none",
    ],
)
def test_bad_settings_raise_value_error(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        JwtAuthenticator(auth(**fields))


def test_rs_with_secret_refused(keys: dict[str, KeyPair]) -> None:
    with pytest.raises(ValueError, match=r"auth\.secret is set"):
        JwtAuthenticator(
            auth(algorithms=["RS256"], secret=SECRET, public_key_file=keys["rsa"].public_file)
        )


def test_hs_with_key_file_refused(keys: dict[str, KeyPair]) -> None:
    with pytest.raises(ValueError, match="remove the key file"):
        JwtAuthenticator(auth(secret=SECRET, public_key_file=keys["rsa"].public_file))


def test_private_key_as_public_key_file_refused(keys: dict[str, KeyPair]) -> None:
    with pytest.raises(ValueError, match="holds a private key"):
        JwtAuthenticator(auth(algorithms=["RS256"], public_key_file=keys["rsa"].private_file))


def test_key_type_must_fit_every_algorithm(keys: dict[str, KeyPair]) -> None:
    with pytest.raises(ValueError, match="cannot verify"):
        JwtAuthenticator(auth(algorithms=["ES256"], public_key_file=keys["rsa"].public_file))
    with pytest.raises(ValueError, match="cannot verify"):
        JwtAuthenticator(
            auth(algorithms=["RS256", "ES256"], public_key_file=keys["ec"].public_file)
        )


def test_jwks_with_symmetric_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "a"}]}))
    with pytest.raises(ValueError, match="symmetric"):
        JwtAuthenticator(auth(algorithms=["RS256"], jwks_file=path))


def test_jwks_several_keys_need_kids(tmp_path: Path, keys: dict[str, KeyPair]) -> None:
    path = jwks_file(tmp_path, (None, keys["rsa"], "RS256"), ("b", keys["rsa_other"], "RS256"))
    with pytest.raises(ValueError, match="needs a 'kid'"):
        JwtAuthenticator(auth(algorithms=["RS256"], jwks_file=path))


def test_good_settings_build() -> None:
    authenticator = JwtAuthenticator(auth(secret=SECRET))
    assert authenticator.mode == "jwt" and authenticator.algorithms == ("HS256",)


# --- claims, checked in process --------------------------------------------------------------


def _principal(token: str, **fields: Any) -> Any:
    return JwtAuthenticator(auth(secret=SECRET, **fields)).authenticate(Credentials(bearer=token))


def test_claims_become_the_principal() -> None:
    token = jwt.encode(
        {
            "sub": "alice",
            "exp": 4_000_000_000,
            "projects": ["p1", "p2"],
            "agents": {"p1": ["echo"]},
            "admin": True,
        },
        SECRET,
    )
    principal = _principal(token, leeway_s=0)
    assert principal.user_id == "alice" and principal.admin is True
    assert principal.projects == frozenset({"p1", "p2"})
    assert principal.can_use("p1", "echo") and not principal.can_use("p1", "slow")
    assert principal.can_use("p2", "slow") and not principal.can_see_project("p3")
    assert principal.expires_at == 4_000_000_000


def test_custom_claim_names() -> None:
    token = jwt.encode(
        {"sub": "bob", "exp": 4_000_000_000, "https://dari/p": ["p9"], "roles_admin": True},
        SECRET,
    )
    principal = _principal(token, projects_claim="https://dari/p", admin_claim="roles_admin")
    assert principal.projects == frozenset({"p9"}) and principal.admin


def test_aud_in_token_without_configured_audience_is_refused() -> None:
    # RFC 7519 4.1.3: a recipient that does not identify with `aud` must reject the token.
    token = jwt.encode({"sub": "a", "exp": 4_000_000_000, "projects": [], "aud": "x"}, SECRET)
    with pytest.raises(AccessError) as info:
        _principal(token)
    assert info.value.code == ErrorCode.UNAUTHORIZED


def test_refusal_messages_never_echo_the_token() -> None:
    bad = jwt.encode({"sub": "s" * 50, "exp": 1, "projects": []}, SECRET)
    for candidate in (bad, bad + "x", "a" * 100, bad.replace(".", "", 1)):
        with pytest.raises(AccessError) as info:
            _principal(candidate)
        assert all(part not in info.value.message for part in candidate.split(".") if len(part) > 6)
        assert len(info.value.message) < 100


# --- minting -------------------------------------------------------------------------------


def test_mint_hs256_round_trips() -> None:
    settings = auth(secret=SECRET, audience="aud", issuer="iss")
    token = mint_token(
        settings,
        sub="alice",
        projects=["p1"],
        agents=["p1:echo", "p1:집사"],
        admin=True,
        ttl_s=60,
        private_key_file=None,
    )
    principal = JwtAuthenticator(settings).authenticate(Credentials(bearer=token))
    assert principal.user_id == "alice" and principal.admin
    assert principal.agents == {"p1": frozenset({"echo", "집사"})}


def test_mint_rs256_with_the_matching_private_key(keys: dict[str, KeyPair]) -> None:
    settings = auth(algorithms=["RS256"], public_key_file=keys["rsa"].public_file)
    token = mint_token(
        settings,
        sub="a",
        projects=["*"],
        agents=[],
        admin=False,
        ttl_s=60,
        private_key_file=keys["rsa"].private_file,
    )
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    with pytest.raises(ValueError, match="would refuse"):
        mint_token(
            settings,
            sub="a",
            projects=["*"],
            agents=[],
            admin=False,
            ttl_s=60,
            private_key_file=keys["rsa_other"].private_file,
        )
    with pytest.raises(ValueError, match="--private-key"):
        mint_token(
            settings,
            sub="a",
            projects=["*"],
            agents=[],
            admin=False,
            ttl_s=60,
            private_key_file=None,
        )


def test_mint_with_jwks_sets_the_kid(tmp_path: Path, keys: dict[str, KeyPair]) -> None:
    path = jwks_file(tmp_path, ("k-rsa", keys["rsa"], "RS256"), ("k-ec", keys["ec"], "ES256"))
    settings = auth(algorithms=["RS256", "ES256"], jwks_file=path)
    token = mint_token(
        settings,
        sub="a",
        projects=["*"],
        agents=[],
        admin=False,
        ttl_s=60,
        private_key_file=keys["ec"].private_file,
    )
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "k-ec", "typ": "JWT"}


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"sub": " "}, "--sub"),
        ({"ttl_s": 0}, "--ttl"),
        ({"agents": ["echo"]}, "project:agent"),
        ({"projects": ["p1"], "agents": ["p2:echo"]}, "not in --projects"),
    ],
    ids=["blank_sub", "zero_ttl", "agent_without_project", "agent_outside_projects"],
)
def test_mint_refuses_bad_input(kwargs: dict[str, Any], says: str) -> None:
    args: dict[str, Any] = {
        "sub": "a",
        "projects": ["*"],
        "agents": [],
        "admin": False,
        "ttl_s": 60,
        "private_key_file": None,
        **kwargs,
    }
    with pytest.raises(ValueError, match=says):
        mint_token(auth(secret=SECRET), **args)


def test_dari_token_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DARI_AUTH__MODE", "jwt")
    monkeypatch.setenv("DARI_AUTH__SECRET", SECRET)
    assert main(["token", "--sub", "carol", "--projects", "p1,p2", "--admin"]) == 0
    printed = capsys.readouterr().out.strip()
    claims = jwt.decode(printed, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "carol" and claims["projects"] == ["p1", "p2"] and claims["admin"]
    monkeypatch.setenv("DARI_AUTH__SECRET", "short")
    assert main(["token", "--sub", "carol"]) == 2
    assert "at least 32" in capsys.readouterr().err
