"""[auth.oidc]: checked when settings load, told to the page by GET /api/config (public, nothing
secret in it) and allowed by the UI's CSP only as far as the token endpoint's origin."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from dari.settings import OidcSettings
from tests.security.conftest import SECRET

OIDC = {
    "name": "Company SSO",
    "authorization_endpoint": "https://sso.example.com/authorize",
    "token_endpoint": "https://tokens.example.com:8443/oauth/token",
    "client_id": "dari-web",
}


@pytest.mark.parametrize(
    "change",
    [
        {"authorization_endpoint": "javascript:alert(1)"},
        {"token_endpoint": "ftp://tokens.example.com/"},
        {"redirect_path": "//evil.example.com/"},
        {"redirect_path": "callback"},
        {"client_id": ""},
        {"token": "refresh_token"},
        {"client_secret": "public clients have none"},
    ],
)
def test_unusable_provider_settings_refuse_to_start(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OidcSettings(**{**OIDC, **change})


async def test_config_tells_the_page_the_provider_and_the_csp_allows_only_its_token_origin(
    server_factory: Any,
) -> None:
    server = await server_factory(auth={"mode": "jwt", "secret": SECRET, "oidc": OIDC})
    async with httpx.AsyncClient(base_url=server.http) as http:
        config = (await http.get("/api/config")).json()  # no token: public
        page = await http.get("/")
    assert config["oidc"] == {
        **OIDC,
        "issuer": None,
        "scopes": ["openid"],
        "redirect_path": "/",
        "token": "access_token",
        "extra_params": {},
    }
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in page.headers["content-security-policy"].split(";")
    )
    assert policy["connect-src"] == "'self' https://tokens.example.com:8443"
    assert policy["form-action"] == "'self'"


async def test_without_jwt_or_a_provider_there_is_none(server_factory: Any) -> None:
    plain = await server_factory()
    ignored = await server_factory(auth={"mode": "none", "oidc": OIDC})
    for server in (plain, ignored):
        async with httpx.AsyncClient(base_url=server.http) as http:
            assert (await http.get("/api/config")).json()["oidc"] is None
            page = await http.get("/")
        assert "connect-src 'self';" in page.headers["content-security-policy"]
