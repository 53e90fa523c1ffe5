# cython: always_allow_keywords=False, binding=False
"""Serializer: the per-interface lock for its receive path and driver entry points.

After DragonFly's LWKT serializer: one lock per interface, taken by the
receive path and by every driver entry point (start, init, ioctl), so the
driver's state is only ever touched by one thread.  Not recursive: entering
twice from one thread raises RuntimeError instead of deadlocking, and only the
holder may exit.  From Cython without the GIL see ``serializer.pxd``; the
algorithm and its invariants are in ``src/serializer.h`` and
``docs/serializer.md``.
"""
import functools as _functools

cimport cython

from cpython.exc cimport PyErr_CheckSignals

# Python-level waits sleep in slices this long, so that a signal
# (KeyboardInterrupt) reaches a thread blocked in enter().
cdef long long _WAIT_SLICE_NS = 50_000_000


cdef class Serializer:
    """Serializer(name=""): a non-recursive lock, usable with ``with``.

    ``name`` (e.g. the interface's) appears in error messages.
    """

    def __cinit__(self, str name=""):
        self.s = serializer_create()
        if self.s == NULL:
            raise MemoryError("no memory for a serializer")
        self.name = name

    def __dealloc__(self):
        if self.s != NULL:
            serializer_destroy(self.s)
            self.s = NULL

    cdef str _label(self):
        return f"serializer {self.name!r}" if self.name else "serializer"

    cdef int _enter(self) except -1:
        cdef int rc = serializer_try_enter(self.s)
        if rc == SER_OK:
            return 0
        if rc == SER_EDEADLK:
            raise RuntimeError(f"{self._label()} is already held by this thread (not recursive)")
        while True:
            with nogil:
                rc = serializer_enter_timed(self.s, _WAIT_SLICE_NS)
            if rc == SER_OK:
                return 0
            PyErr_CheckSignals()

    cdef int _exit(self) except -1:
        if serializer_exit(self.s) != SER_OK:
            raise RuntimeError(f"{self._label()} is not held by this thread")
        return 0

    def enter(self):
        """Enter, waiting (without the GIL) while another thread holds it.

        Raises RuntimeError if the calling thread already holds it.
        """
        self._enter()

    def try_enter(self):
        """Enter if no thread holds it; True if entered, False if held elsewhere.

        Raises RuntimeError if the calling thread already holds it.
        """
        cdef int rc = serializer_try_enter(self.s)
        if rc == SER_OK:
            return True
        if rc == SER_EDEADLK:
            raise RuntimeError(f"{self._label()} is already held by this thread (not recursive)")
        return False

    def exit(self):
        """Leave.  Raises RuntimeError if the calling thread does not hold it."""
        self._exit()

    def held(self):
        """True if the calling thread holds it."""
        return serializer_held_by_me(self.s)

    def assert_held(self):
        """Raise AssertionError (naming the serializer) unless the caller holds it."""
        if not serializer_held_by_me(self.s):
            raise AssertionError(f"{self._label()} is not held by this thread")

    @property
    def locked(self):
        """True if any thread holds it (a snapshot)."""
        return serializer_is_held(self.s)

    @property
    def contended(self):
        """How many enters so far found it held and had to wait."""
        return serializer_contended(self.s)

    def __enter__(self):
        self._enter()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._exit()
        return False

    def __repr__(self):
        state = "held" if serializer_is_held(self.s) else "free"
        return f"<Serializer {self.name!r} {state}>"


@cython.binding(True)
def serialized(method):
    """Decorator for a driver entry point: run ``method`` inside ``self.serializer``.

    The entry point enters the object's serializer for the duration of the
    call and leaves it on every path, exception included.  Serializers are
    not recursive: an entry point called while its serializer is already held
    by the caller raises RuntimeError; code already inside calls the
    undecorated internal methods, which may check with :func:`requires_serializer`.
    """
    @_functools.wraps(method)
    def entry_point(self, *args, **kwargs):
        with self.serializer:
            return method(self, *args, **kwargs)
    return entry_point


@cython.binding(True)
def requires_serializer(method):
    """Decorator for code that must run inside ``self.serializer``.

    Raises AssertionError naming the serializer when the caller does not hold
    it; takes nothing itself.
    """
    @_functools.wraps(method)
    def checked(self, *args, **kwargs):
        self.serializer.assert_held()
        return method(self, *args, **kwargs)
    return checked
