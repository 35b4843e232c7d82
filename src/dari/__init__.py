"""dari (다리, "bridge"): a real-time WebSocket gateway for chatting with AI agents."""

__version__ = "0.1.0"
