"""The dataset catalogue: metadata (metadata.py), the ``--where`` filter language
(where.py), listings by pattern and filter (listing.py) and queries over several
datasets at once (multi.py).  Versions themselves are the manifest's business
(storage/manifest.py, storage/versions.py)."""
