"""The gRPC service (skyhook.v1): the coordinator, its servicer, the message
conversions and the client library.

Only this room imports ``grpc`` (a ruff banned-api rule in pyproject.toml enforces
it).  The coordinator itself has no grpc import; ``server`` only translates requests,
calls the coordinator and translates its events.  What it ignores: query languages,
planning and librados (it calls ``query`` and ``storage``).
"""
