"""The compiled core: per-packet work on batches, usable without the GIL.

Each module has a ``.pxd`` (what other Cython modules ``cimport``) and a
``.pyi`` (the types Python users see).
"""
