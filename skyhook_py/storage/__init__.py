"""The storage layer: RADOS objects and the dataset manifest.

``rados_io`` is the only module of the package that imports ``rados`` (a ruff
banned-api rule in pyproject.toml enforces it); ``manifest`` knows the on-disk layout
of a dataset (formats/README.md).  What it ignores: queries and their languages,
planning, and the wire protocol.
"""
