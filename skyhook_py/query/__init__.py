"""The query path: a query in one of its languages -> one IR checked against the
dataset's schema -> a plan over the partitions -> execution in the OSDs (or the
reference evaluator on a plain read) -> results.

What it ignores: where bytes live and how they are written (``storage``), how a
query arrives over the network (``service``), and how partitions are made
(``transcode``).
"""
