"""The wire protocol, pure: no asyncio, no web framework, no I/O.

Everything here can be tested synchronously, without a socket or an event loop.
"""
