"""Compatibility alias: ``skyhook_py.storage.rados_io`` is the librados module.

Kept only because ``skyhook_py.cluster`` (rewritten in another branch) still imports
``from .rados_io import Store``; remove once it imports ``.storage.rados_io``.
This file does not import ``rados``.
"""

from .storage.rados_io import Store  # noqa: F401
