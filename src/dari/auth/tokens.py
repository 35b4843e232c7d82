"""Minting development tokens for ``dari token``.

The token is signed the way the settings verify it (HMAC secret, or the private key matching
the configured public key or JWKS) and checked with :class:`JwtAuthenticator` before it is
returned, so the command never prints a token the server would refuse.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from dari.auth.base import Credentials
from dari.auth.jwt import JwtAuthenticator, key_fits
from dari.protocol.errors import AccessError
from dari.settings import AuthSettings

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def agents_claim(pairs: list[str], projects: list[str]) -> dict[str, list[str]]:
    """``["p1:a", "p1:b"]`` → ``{"p1": ["a", "b"]}``, split at the first ``:``."""
    agents: dict[str, list[str]] = {}
    for pair in pairs:
        project, sep, agent = pair.partition(":")
        if not sep or not project or not agent:
            raise ValueError(f"--agents: {pair!r} is not project:agent")
        if "*" not in projects and project != "*" and project not in projects:
            raise ValueError(f"--agents: project {project!r} is not in --projects")
        names = agents.setdefault(project, [])
        if agent not in names:
            names.append(agent)
    return agents


def _claims(
    auth: AuthSettings,
    *,
    sub: str,
    projects: list[str],
    agents: list[str],
    admin: bool,
    ttl_s: int,
) -> dict[str, Any]:
    if not sub.strip():
        raise ValueError("--sub must be a non-empty user name")
    if ttl_s <= 0:
        raise ValueError("--ttl must be a positive number of seconds")
    if any(not project for project in projects):
        raise ValueError("--projects: empty project id")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "iat": now,
        "exp": now + ttl_s,
        auth.projects_claim: list(dict.fromkeys(projects)),
    }
    if agents:
        claims[auth.agents_claim] = agents_claim(agents, projects)
    if admin:
        claims[auth.admin_claim] = True
    if auth.audience is not None:
        claims["aud"] = auth.audience
    if auth.issuer is not None:
        claims["iss"] = auth.issuer
    return claims


def load_private_key(path: Path) -> PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:
        raise ValueError(f"{path}: encrypted private keys are not supported here") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: only RSA and EC private keys are supported")
    return key


def _signing(
    verifier: JwtAuthenticator, private_key_file: Path | None
) -> tuple[bytes | PrivateKey, str, dict[str, Any] | None]:
    """(key, algorithm, extra headers) matching what ``verifier`` accepts."""
    if verifier.secret is not None:
        return verifier.secret, verifier.algorithms[0], None
    if private_key_file is None:
        raise ValueError(
            f"{'/'.join(verifier.algorithms)} tokens are signed with a private key: "
            "pass --private-key key.pem"
        )
    key = load_private_key(private_key_file)
    if verifier.jwks:
        found = verifier.key_id_for(key.public_key())
        if found is None:
            raise ValueError(f"{private_key_file}: no key in auth.jwks_file matches it")
        kid, algorithm = found
        return key, algorithm, ({"kid": kid} if kid is not None else None)
    fitting = [a for a in verifier.algorithms if key_fits(key, a)]
    if not fitting:
        raise ValueError(f"{private_key_file}: cannot sign {list(verifier.algorithms)}")
    return key, fitting[0], None


def mint_token(
    auth: AuthSettings,
    *,
    sub: str,
    projects: list[str],
    agents: list[str],
    admin: bool,
    ttl_s: int,
    private_key_file: Path | None,
) -> str:
    """A signed token for ``sub``; raises ValueError with a message saying what to fix."""
    if auth.mode != "jwt":
        raise ValueError(
            "auth.mode is 'none', so the server checks no token; set auth.mode = 'jwt' "
            "(or DARI_AUTH__MODE=jwt) with a secret or key first"
        )
    verifier = JwtAuthenticator(auth)
    claims = _claims(auth, sub=sub, projects=projects, agents=agents, admin=admin, ttl_s=ttl_s)
    key, algorithm, headers = _signing(verifier, private_key_file)
    token = jwt.encode(claims, key, algorithm=algorithm, headers=headers)
    try:
        verifier.authenticate(Credentials(bearer=token))
    except AccessError as exc:
        raise ValueError(
            f"the server would refuse this token ({exc.message}); does the private key match "
            "auth.public_key_file, and is the token under auth.max_token_bytes?"
        ) from None
    return token
