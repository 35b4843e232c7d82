"""Fan-out between nodes: ``memory://`` (one process) or ``redis://…`` (pub/sub)."""

from dari.buses.base import Bus, BusError, BusMessage, Handler, open_bus

__all__ = ["Bus", "BusError", "BusMessage", "Handler", "open_bus"]
