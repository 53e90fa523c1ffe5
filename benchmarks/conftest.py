"""pytest-benchmark runs the same cases as ``fastproto bench``: fastproto and
its baseline side by side, grouped per operation."""
