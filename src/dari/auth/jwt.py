"""JWT authentication: one fixed algorithm family, strict claims, messages that never echo.

The settings are checked once, at construction, so a gateway that starts can only verify tokens
the way its operator meant:

- the algorithm list is fixed in config and never taken from a token; HMAC (``HS*``) and
  public-key (``RS*``, ``PS*``, ``ES*``) algorithms cannot be mixed, so a public key can never be
  used as an HMAC secret (algorithm confusion); ``none`` is refused;
- HMAC secrets must be at least as long as the hash (32 bytes for HS256);
- public keys come from a PEM file or a JWKS file, loaded and type-checked against the list.

Every token must carry ``exp`` and a non-empty ``sub``; ``aud`` and ``iss`` are compared exactly
when configured. Claim types are checked strictly: a wrong type is a refused token, never a
coerced value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from dari.auth.base import Authenticator, Credentials, Principal
from dari.protocol.errors import AccessError, ErrorCode
from dari.settings import AuthSettings

# Minimum secret length per HMAC algorithm: the hash size (RFC 7518 section 3.2).
HMAC_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64}
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
PUBLIC_KEY_ALGORITHMS = RSA_ALGORITHMS | EC_ALGORITHMS.keys()
MIN_RSA_BITS = 2048
MAX_NAME_CHARS = 128  # project and agent names, as on the wire
MAX_SUB_CHARS = 256

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _denied(message: str) -> NoReturn:
    raise AccessError(message, code=ErrorCode.UNAUTHORIZED)


# --- settings ------------------------------------------------------------------------------


def check_algorithms(algorithms: list[str]) -> tuple[str, ...]:
    """The configured list, refused when empty, unknown, ``none`` or mixing HMAC and keys."""
    if not algorithms:
        raise ValueError("auth.algorithms is empty; use e.g. ['HS256'] or ['RS256']")
    unknown = [a for a in algorithms if a not in HMAC_ALGORITHMS and a not in PUBLIC_KEY_ALGORITHMS]
    if unknown:
        raise ValueError(
            f"auth.algorithms: {unknown} not accepted; choose from "
            f"{sorted(HMAC_ALGORITHMS)} or {sorted(PUBLIC_KEY_ALGORITHMS)}"
        )
    hmac = [a for a in algorithms if a in HMAC_ALGORITHMS]
    if hmac and len(hmac) != len(algorithms):
        raise ValueError(
            "auth.algorithms mixes HMAC (HS*) and public-key algorithms; use one family, "
            "otherwise a public key could be used as an HMAC secret"
        )
    return tuple(dict.fromkeys(algorithms))


def _check_secret(auth: AuthSettings, algorithms: tuple[str, ...]) -> bytes:
    if auth.public_key_file is not None or auth.jwks_file is not None:
        raise ValueError(
            "auth.algorithms are HMAC (HS*) but auth.public_key_file or auth.jwks_file is set; "
            "remove the key file, or use RS256/ES256"
        )
    if not auth.secret:
        raise ValueError(f"auth.secret is required for {algorithms[0]} (DARI_AUTH__SECRET)")
    secret = auth.secret.encode()
    needed = max(HMAC_ALGORITHMS[a] for a in algorithms)
    if len(secret) < needed:
        raise ValueError(
            f"auth.secret is {len(secret)} bytes; {'/'.join(algorithms)} needs at least "
            f"{needed} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return secret


def key_fits(key: object, algorithm: str) -> bool:
    """Whether ``key`` (public or private) can verify or sign with ``algorithm``."""
    if algorithm in RSA_ALGORITHMS:
        return isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey)
    curve = EC_ALGORITHMS.get(algorithm)
    if curve is None:
        return False
    return (
        isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey)
        and key.curve.name == curve
    )


def _check_public_key(key: object, algorithms: tuple[str, ...], where: str) -> PublicKey:
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"{where}: only RSA and EC public keys are supported")
    misfits = [a for a in algorithms if not key_fits(key, a)]
    if misfits:
        raise ValueError(f"{where}: the key cannot verify {misfits}; fix auth.algorithms")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"{where}: RSA key has {key.key_size} bits; at least 2048 needed")
    return key


def load_public_key(path: Path, algorithms: tuple[str, ...]) -> PublicKey:
    """A PEM public key (or certificate) that fits every configured algorithm."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise ValueError(
            f"auth.public_key_file {path} holds a private key; give the server the public key "
            "only (openssl pkey -in key.pem -pubout)"
        )
    try:
        if b"BEGIN CERTIFICATE" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"auth.public_key_file {path}: not a PEM public key ({exc})") from None
    return _check_public_key(key, algorithms, f"auth.public_key_file {path}")


def _jwk_from(raw: object, algorithms: tuple[str, ...], path: Path) -> jwt.PyJWK | None:
    """One usable signing key of a JWKS, or None when it is not for signing with our list."""
    if not isinstance(raw, dict):
        raise ValueError(f"auth.jwks_file {path}: every key must be a JSON object")
    if raw.get("kty") == "oct":
        raise ValueError(f"auth.jwks_file {path}: holds a symmetric (oct) key; public keys only")
    if "d" in raw:
        raise ValueError(f"auth.jwks_file {path}: holds private key material; public keys only")
    if raw.get("use", "sig") != "sig":
        return None
    try:
        jwk = jwt.PyJWK(raw)
    except jwt.PyJWTError as exc:
        raise ValueError(f"auth.jwks_file {path}: unusable key ({exc})") from None
    if jwk.algorithm_name not in algorithms:
        return None
    _check_public_key(jwk.key, (jwk.algorithm_name,), f"auth.jwks_file {path}")
    return jwk


def load_jwks(path: Path, algorithms: tuple[str, ...]) -> dict[str | None, jwt.PyJWK]:
    """The JWKS's signing keys by ``kid`` (None only for a single key without one)."""
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"auth.jwks_file {path}: not JSON ({exc})") from None
    raw_keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(raw_keys, list):
        raise ValueError(f'auth.jwks_file {path}: expected {{"keys": [...]}}')
    keys: dict[str | None, jwt.PyJWK] = {}
    for raw in raw_keys:
        jwk = _jwk_from(raw, algorithms, path)
        if jwk is None:
            continue
        kid = raw.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError(f"auth.jwks_file {path}: 'kid' must be a string")
        if kid in keys:
            raise ValueError(f"auth.jwks_file {path}: kid {kid!r} appears twice")
        keys[kid] = jwk
    if not keys:
        raise ValueError(f"auth.jwks_file {path}: no signing key for {list(algorithms)}")
    if None in keys and len(keys) > 1:
        raise ValueError(f"auth.jwks_file {path}: with several keys, every key needs a 'kid'")
    return keys


# --- claims --------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _names(value: object, claim: str) -> frozenset[str]:
    """A list of project or agent names ("*" included), strictly typed."""
    if not isinstance(value, list) or not all(
        isinstance(item, str) and 0 < len(item) <= MAX_NAME_CHARS for item in value
    ):
        _denied(f"token claim '{claim}' must be a list of names")
    return frozenset(value)


def _agents(value: object, claim: str) -> Mapping[str, frozenset[str]]:
    """``{"project": ["agent", ...]}``; a project absent here allows all its agents."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        _denied(f"token claim '{claim}' must map project ids to lists of agent names")
    agents: dict[str, frozenset[str]] = {}
    for project, names in value.items():
        if not 0 < len(project) <= MAX_NAME_CHARS:
            _denied(f"token claim '{claim}' has an invalid project id")
        agents[project] = _names(names, claim)
    return agents


def _times(claims: Mapping[str, Any]) -> float:
    """``exp`` (and ``nbf``/``iat`` when present) must be JSON numbers; returns ``exp``."""
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _is_number(claims[name]):
            _denied(f"token claim '{name}' must be a number")
    return float(claims["exp"])


# --- the authenticator ---------------------------------------------------------------------


class JwtAuthenticator(Authenticator):
    mode = "jwt"

    def __init__(self, auth: AuthSettings) -> None:
        if auth.mode != "jwt":
            raise ValueError(f"JwtAuthenticator needs auth.mode = 'jwt', not {auth.mode!r}")
        self.settings = auth
        self.algorithms = check_algorithms(auth.algorithms)
        self.secret: bytes | None = None
        self.public_key: PublicKey | None = None
        self.jwks: dict[str | None, jwt.PyJWK] = {}
        if self.algorithms[0] in HMAC_ALGORITHMS:
            self.secret = _check_secret(auth, self.algorithms)
            return
        if auth.secret:
            raise ValueError(
                "auth.secret is set but auth.algorithms are public-key algorithms; remove it"
            )
        if (auth.public_key_file is None) == (auth.jwks_file is None):
            raise ValueError(
                f"{'/'.join(self.algorithms)} needs exactly one of auth.public_key_file "
                "(PEM) or auth.jwks_file"
            )
        if auth.public_key_file is not None:
            self.public_key = load_public_key(auth.public_key_file, self.algorithms)
        else:
            assert auth.jwks_file is not None
            self.jwks = load_jwks(auth.jwks_file, self.algorithms)

    def authenticate(self, credentials: Credentials) -> Principal:
        token = credentials.token()
        if not token:
            _denied("no token: send Authorization: Bearer, ?token= or sign in")
        # Compact JWS is base64url and dots: ASCII, so characters are bytes.
        if not token.isascii():
            _denied("malformed token")
        if len(token) > self.settings.max_token_bytes:
            _denied(f"token larger than {self.settings.max_token_bytes} bytes")
        claims = self._verified_claims(token)
        return self._principal(claims)

    # --- verification ----------------------------------------------------------------------

    def _key_for(self, token: str) -> bytes | PublicKey | jwt.PyJWK:
        if self.secret is not None:
            return self.secret
        if self.public_key is not None:
            return self.public_key
        kid = jwt.get_unverified_header(token).get("kid")
        jwk = self.jwks.get(kid) if kid is None or isinstance(kid, str) else None
        if jwk is None:
            _denied("token signing key is unknown")
        return jwk

    def _verified_claims(self, token: str) -> dict[str, Any]:
        auth = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key_for(token),
                algorithms=list(self.algorithms),
                audience=auth.audience,
                issuer=auth.issuer,
                leeway=auth.leeway_s,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            _denied("token expired")
        except jwt.ImmatureSignatureError:
            _denied("token not valid yet")
        except jwt.MissingRequiredClaimError as exc:
            _denied(f"token lacks the '{exc.claim}' claim")
        except jwt.InvalidAudienceError:
            _denied("token audience not accepted")
        except jwt.InvalidIssuerError:
            _denied("token issuer not accepted")
        except jwt.InvalidAlgorithmError:
            _denied("token algorithm not accepted")
        except jwt.InvalidSignatureError:
            _denied("token signature invalid")
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, RecursionError):
            # Never echo the token or PyJWT's text, which may quote parts of it.
            _denied("malformed token")
        # Exact comparisons again, independent of the library's matching rules.
        if auth.issuer is not None and claims.get("iss") != auth.issuer:
            _denied("token issuer not accepted")
        return claims

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        auth = self.settings
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUB_CHARS:
            _denied("token 'sub' must be a non-empty string")
        expires_at = _times(claims)
        if auth.projects_claim not in claims:
            _denied(f"token lacks the '{auth.projects_claim}' claim")
        projects = _names(claims[auth.projects_claim], auth.projects_claim)
        agents = _agents(claims.get(auth.agents_claim), auth.agents_claim)
        admin = claims.get(auth.admin_claim, False)
        if not isinstance(admin, bool):
            _denied(f"token claim '{auth.admin_claim}' must be true or false")
        return Principal(
            user_id=sub,
            projects=projects,
            agents=agents,
            admin=admin,
            # The socket lives as long as the token would still be accepted.
            expires_at=expires_at + auth.leeway_s,
        )

    def key_id_for(self, public_key: PublicKey) -> tuple[str | None, str] | None:
        """The (kid, algorithm) of the JWKS key equal to ``public_key``, for minting."""
        wanted = public_key.public_numbers()
        for kid, jwk in self.jwks.items():
            key = jwk.key
            if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) and (
                key.public_numbers() == wanted
            ):
                return kid, jwk.algorithm_name
        return None
