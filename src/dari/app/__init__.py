"""Wiring: the FastAPI app, its routes and its lifespan."""

from dari.app.factory import create_app

__all__ = ["create_app"]
