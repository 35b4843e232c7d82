"""Durable state: history, idempotency keys, client ownership, delegated tasks."""

from dari.stores.base import Store, open_store

__all__ = ["Store", "open_store"]
