"""``create_app(settings)``: routes, error handlers and lifespan; nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from dari import __version__
from dari.app import ag_ui, ai_sdk, rest, session_cookie, threads, ws
from dari.app.gateway import Gateway
from dari.app.logs import install_log_filters
from dari.app.web_headers import WithHeaders, ui_headers
from dari.collector import Collector
from dari.protocol.errors import DariError, ErrorCode
from dari.settings import Settings
from dari.transport import ExposeServerSend

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"

_HTTP_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.PROJECT_NOT_FOUND: 404,
    ErrorCode.AGENT_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.AGENT_NOT_RUNNING: 409,
    ErrorCode.QUEUE_FULL: 429,
    ErrorCode.BUSY: 409,
    ErrorCode.ALREADY_ANSWERED: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SHUTTING_DOWN: 503,
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    install_log_filters()
    gateway = Gateway(settings)  # validates the settings now, before anything listens

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        # Everything made so far (modules, classes, the app: ~150,000 objects) lives as long
        # as the process: frozen, never walked again. Full collections then run by the
        # heap's growth, not during every burst of new connections (dari.collector).
        collector = Collector(settings.server.gc_full_growth)
        collector.start()
        try:
            yield
        finally:
            await collector.stop()
            await gateway.stop()

    app = FastAPI(title="dari", version=__version__, lifespan=lifespan)
    app.state.gateway = gateway
    if settings.auth.mode == "none":
        # Without auth, only loopback names may reach us: a page on evil.example that re-resolves
        # to 127.0.0.1 (DNS rebinding) sends Host: evil.example and is refused here.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS))
    app.add_middleware(ExposeServerSend)  # added last: outermost of the app's own

    @app.exception_handler(DariError)
    async def dari_error(request: Request, exc: DariError) -> JSONResponse:
        status = _HTTP_STATUS.get(exc.code, 500)
        return JSONResponse(
            {"error": {"code": str(exc.code), "message": exc.message}}, status_code=status
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        # Not ready while the store, the bus or a shared replay log is unreachable; a load
        # balancer then sends new connections elsewhere until the node recovers by itself.
        node = {"node_id": settings.effective_node_id}  # which replica answered
        if gateway.draining:  # SIGTERM came: take no new clients, finish what runs
            return JSONResponse({"status": "draining", **node}, status_code=503)
        checks = await gateway.ready()
        if all(state == "ok" for state in checks.values()):
            return JSONResponse({"status": "ready", **node, **checks})
        return JSONResponse({"status": "not ready", **node, **checks}, status_code=503)

    from dari.app.metrics import router as metrics_router

    app.include_router(metrics_router)
    app.include_router(rest.router)
    app.include_router(threads.router)
    app.include_router(session_cookie.router)
    app.include_router(ws.router)
    app.include_router(ai_sdk.router)
    app.include_router(ag_ui.router)
    if (WEB_DIR / "index.html").is_file():
        ui = StaticFiles(directory=WEB_DIR, html=True)
        app.mount("/", WithHeaders(ui, ui_headers(settings)), name="web")
    return app
