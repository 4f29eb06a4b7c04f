"""The one place that imports the generated gRPC code of proto/skyhook/v1/skyhook.proto.

The stubs are produced by the build (``make setup``), never by hand and never on
import; from the repository root:

    .venv/bin/python -m grpc_tools.protoc -Iskyhook_py/_generated=proto \
        --python_out=. --grpc_python_out=. proto/skyhook/v1/skyhook.proto

(the ``-Iskyhook_py/_generated=proto`` mapping makes protoc write the package's own
import path into skyhook_pb2_grpc.py, so no fix-up of the generated files is needed).
"""

from __future__ import annotations

try:
    from .._generated.skyhook.v1 import skyhook_pb2 as pb  # noqa: F401
    from .._generated.skyhook.v1 import skyhook_pb2_grpc as rpc  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the build
    raise ImportError(
        "the gRPC stubs of proto/skyhook/v1/skyhook.proto are missing or stale "
        f"({e}); run `make setup` (or: .venv/bin/python -m grpc_tools.protoc "
        "-Iskyhook_py/_generated=proto --python_out=. --grpc_python_out=. "
        "proto/skyhook/v1/skyhook.proto from the repository root)"
    ) from e

__all__ = ["pb", "rpc"]
