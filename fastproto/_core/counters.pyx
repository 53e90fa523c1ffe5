"""Counter dicts that threads add to without a lock.

The stack's counters are plain ``{name: int}`` dicts that several threads
add to (each socket under its own lock, in whichever thread runs it).  In
Python ``d[k] = d.get(k, 0) + n`` is several bytecodes, and the interpreter
may switch threads between the read and the write, losing the other
thread's increment; a lock around it costs more than the addition.

:func:`count` does the read, the addition and the write in one compiled
call that holds the GIL throughout.  Invariant: nothing in it runs Python
code, so no other thread can run in between.  That holds because the keys
are ``str`` (hash cached, compared in C), the values ``int`` (added and
freed in C, not tracked by the garbage collector, so no allocation here
starts a collection that could run a finaliser) and the dict an exact
``dict`` (a subclass's own ``__setitem__`` could run Python code).  Any
other mutable mapping is added to under one module lock instead.
"""
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject

import threading
from collections.abc import MutableMapping

#: serialises additions to mappings that are not plain dicts
_mapping_lock = threading.Lock()


cdef void count_add(dict counters, str name, object n) except *:
    """``count`` for Cython callers (``counters`` and ``name`` not None)."""
    cdef PyObject *old = PyDict_GetItem(counters, name)
    if old is NULL:
        PyDict_SetItem(counters, name, n)
    else:
        PyDict_SetItem(counters, name, <object>old + n)


def count(counters, str name not None, n=1):
    """Add ``n`` to ``counters[name]`` (0 when missing); atomic with respect
    to other threads' calls on the same dict while the values are ints.
    ``counters``: a dict (lock-free), or another mutable mapping (under a
    lock); TypeError for anything else."""
    if type(counters) is dict:
        count_add(<dict>counters, name, n)
        return
    if not isinstance(counters, MutableMapping):
        raise TypeError(f"counters must be a dict or a mutable mapping, not {type(counters).__name__}")
    with _mapping_lock:
        counters[name] = counters.get(name, 0) + n
