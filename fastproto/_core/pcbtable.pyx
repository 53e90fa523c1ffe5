"""Hashed pcbtable: (proto, laddr, lport, faddr, fport) -> socket id.

Lookups take per-bucket reader locks and never block each other; insert and
remove write-lock one bucket.  The bucket is chosen by SipHash-1-3 under a
per-table random key, so remote peers cannot aim their packets at one bucket.
See ``docs/pcbtable.md``.
"""
import errno as _errno
import ipaddress as _ipaddress
import operator as _operator
import os as _os

import numpy as _np

cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_FromUnsignedLongLong
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.stddef cimport ptrdiff_t
from libc.string cimport memcmp, memcpy, memset

cnp.import_array()

cdef extern from "pcbtable.h" nogil:
    # private: the hashes, for the tests that check them against a reference
    ctypedef struct pcb_kw:
        pass
    pcb_kw pcb_kw_of(const pcb_key *k)
    uint64_t pcb_hash_kind(sip_key key, const pcb_kw *w, int kind)
    sip_key sip_key_from_bytes(const uint8_t *k)
    uint64_t siphash(sip_key key, const uint8_t *msg, size_t len, int c, int d)

    # private: walking the buckets for items()
    ctypedef struct pcb_entry:
        pcb_key key
        uint64_t value
    ctypedef struct pcb_node:
        pcb_entry e
        pcb_node *next
    ctypedef struct pcb_bucket_fields "pcb_bucket":
        unsigned int lock
        unsigned int n
        pcb_node *overflow
        pcb_entry slot[2]
    ctypedef struct pcbtable_fields "pcbtable":
        pcb_bucket_fields *buckets
        uint64_t mask
    void rw_rdlock(unsigned int *l)
    void rw_rdunlock(unsigned int *l)


# first 12 bytes of an IPv4-mapped IPv6 address (RFC 4291 section 2.5.5.2)
cdef uint8_t[12] _V4MAPPED = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]

cdef str _bad_key(int kind):
    """Why a key is not a valid entry (kind < 0 from pcb_key_kind)."""
    if kind == PCB_BAD_FAMILY:
        return "local and foreign addresses are of different families"
    if kind == PCB_BAD_FADDR_ONLY:
        return "foreign address given but local address is the wildcard"
    return "foreign port given without a foreign address"


cdef inline bint _is_v4(const uint8_t *a) noexcept nogil:
    return memcmp(a, _V4MAPPED, 12) == 0


cdef inline void _set_v4(uint8_t *out, const uint8_t *v4) noexcept nogil:
    memset(out, 0, 10)
    out[10] = 0xff
    out[11] = 0xff
    memcpy(out + 12, v4, 4)


cdef int _addr_slow(object a, uint8_t *out, str what) except -1:
    cdef uint8_t b4[4]
    cdef unsigned long long v
    if isinstance(a, (bytearray, memoryview)):
        return _addr(bytes(a), out, what)
    if isinstance(a, int) and not isinstance(a, bool):
        if not 0 <= a <= 0xFFFFFFFF:
            raise ValueError(f"{what}: integer IPv4 address out of range: {a}")
        v = a
        b4[0] = (v >> 24) & 0xff
        b4[1] = (v >> 16) & 0xff
        b4[2] = (v >> 8) & 0xff
        b4[3] = v & 0xff
        _set_v4(out, b4)
        return 0
    if isinstance(a, str):
        a = _ipaddress.ip_address(a)
    if isinstance(a, (_ipaddress.IPv4Address, _ipaddress.IPv6Address)):
        return _addr(a.packed, out, what)
    raise TypeError(f"{what}: expected an address (bytes, str, int or ipaddress object), "
                    f"got {type(a).__name__}")


cdef inline int _addr(object a, uint8_t *out, str what) except -1:
    """Store address ``a`` as 16 bytes (IPv4 mapped) at ``out``."""
    cdef Py_ssize_t n
    if type(a) is bytes:
        n = PyBytes_GET_SIZE(a)
        if n == 16:
            memcpy(out, PyBytes_AS_STRING(a), 16)
            return 0
        if n == 4:
            _set_v4(out, <const uint8_t *>PyBytes_AS_STRING(a))
            return 0
        raise ValueError(f"{what}: a packed address is 4 or 16 bytes, not {n}")
    return _addr_slow(a, out, what)


cdef int _uint_slow(object x, long limit, str what) except -1:
    v = _operator.index(x)
    if not 0 <= v <= limit:
        raise ValueError(f"{what} out of range 0..{limit}: {v}")
    return v


cdef inline int _uint(object x, long limit, str what) except -1:
    """``x`` as an int in 0..limit; ValueError outside it."""
    cdef int overflow = 0
    cdef long v
    if type(x) is int:
        v = PyLong_AsLongAndOverflow(x, &overflow)
        if overflow == 0 and 0 <= v <= limit:
            return <int>v
    return _uint_slow(x, limit, what)


cdef inline int _key(pcb_key *k, object proto, object laddr, object lport,
                     object faddr, object fport) except -1:
    """Fill ``k``; a None faddr is the wildcard of laddr's family."""
    k.proto = <uint8_t>_uint(proto, 255, "proto")
    _addr(laddr, k.laddr, "laddr")
    k.lport = <uint16_t>_uint(lport, 65535, "lport")
    if faddr is None:
        memset(k.faddr, 0, 16)
        if _is_v4(k.laddr):
            k.faddr[10] = 0xff
            k.faddr[11] = 0xff
    else:
        _addr(faddr, k.faddr, "faddr")
        if _is_v4(k.laddr) != _is_v4(k.faddr):
            raise ValueError(_bad_key(PCB_BAD_FAMILY))
    k.fport = <uint16_t>_uint(fport, 65535, "fport")
    k.pad[0] = k.pad[1] = k.pad[2] = 0
    return 0


cdef inline int _entry_key(pcb_key *k, object proto, object laddr, object lport,
                           object faddr, object fport) except -1:
    """Fill ``k`` with a key that is a valid entry; ValueError otherwise."""
    _key(k, proto, laddr, lport, faddr, fport)
    cdef int kind = pcb_key_kind(k)
    if kind < 0:
        raise ValueError(_bad_key(kind))
    return kind


cdef object _addr_obj(const uint8_t *a):
    if _is_v4(a):
        return _ipaddress.IPv4Address(PyBytes_FromStringAndSize(<const char *>a + 12, 4))
    return _ipaddress.IPv6Address(PyBytes_FromStringAndSize(<const char *>a, 16))


cdef object _key_tuple(const pcb_key *k):
    cdef bint wild_f = pcb_key_kind(k) != PCB_EXACT
    return (k.proto, _addr_obj(k.laddr), k.lport,
            None if wild_f else _addr_obj(k.faddr), k.fport)


cdef cnp.ndarray _column(object a, int typenum, int ndim, str what):
    """``a`` as an ndarray of exactly the NumPy type ``typenum`` in native byte
    order (any strides), else TypeError; ValueError for another ``ndim``."""
    if not isinstance(a, _np.ndarray):
        a = _np.asarray(a)
    cdef cnp.ndarray arr = a
    if cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{what}: expected a {cnp.PyArray_DescrFromType(typenum)} "
                        f"array in native byte order, got {arr.dtype}")
    if cnp.PyArray_NDIM(arr) != ndim:
        raise ValueError(f"{what}: expected {ndim} dimension(s), got shape {(<object>arr).shape}")
    return arr


cdef cnp.ndarray _addr_column(object a, str what):
    """An (n, 16) uint8 view with contiguous address bytes."""
    if isinstance(a, _np.ndarray) and cnp.PyArray_NDIM(<cnp.ndarray>a) == 1 \
            and a.dtype.kind in "SV" and a.dtype.itemsize == 16 and not a.dtype.fields:
        # one 16-byte item per row: view the bytes of each item
        a = a[:, None].view(_np.uint8)
    cdef cnp.ndarray arr = _column(a, cnp.NPY_UINT8, 2, what)
    if cnp.PyArray_DIM(arr, 1) != 16:
        raise ValueError(f"{what}: expected shape (n, 16), got {(<object>arr).shape}")
    if cnp.PyArray_STRIDE(arr, 1) != 1:
        arr = _np.ascontiguousarray(arr)
    return arr


cdef class PCBTable:
    """Socket table: (proto, laddr, lport, faddr, fport) -> unsigned 64-bit value.

    ``nbuckets`` is a power of two; ``key`` is the 16-byte SipHash key (random
    from ``os.urandom`` by default; pass one for reproducible tests).
    Addresses are packed bytes (4 or 16), strings, ``ipaddress`` objects or
    ints (IPv4).  IPv4 and IPv6 are separate: a v4 key never matches a v6
    entry.  A None ``faddr`` (or the unspecified address) with ``fport`` 0 is
    the foreign wildcard; the unspecified ``laddr`` binds to any address.
    """

    def __cinit__(self, nbuckets=65536, key=None):
        self.table = NULL
        if key is None:
            key = _os.urandom(16)
        key = bytes(key)
        if len(key) != 16:
            raise ValueError(f"key must be 16 bytes, not {len(key)}")
        if not isinstance(nbuckets, int) or nbuckets <= 0 or nbuckets & (nbuckets - 1) \
                or nbuckets > 1 << 32:
            raise ValueError(f"nbuckets must be a power of two in 1..2**32, not {nbuckets!r}")
        self.table = pcbtable_create(<size_t>nbuckets, <const uint8_t *>PyBytes_AS_STRING(key))
        if self.table == NULL:
            raise MemoryError(f"cannot allocate a pcbtable of {nbuckets} buckets")

    def __dealloc__(self):
        pcbtable_destroy(self.table)
        self.table = NULL

    @property
    def nbuckets(self) -> int:
        """Number of hash buckets."""
        return pcbtable_nbuckets(self.table)

    def __len__(self):
        return pcbtable_count(self.table)

    def insert(self, proto, laddr, lport, faddr, fport, value):
        """Add an entry mapping the key to ``value`` (0 <= value < 2**64).

        OSError(EADDRINUSE) if that exact key is present; ValueError for a key
        that is not a valid entry.
        """
        cdef pcb_key k
        cdef int rc
        cdef uint64_t v
        _entry_key(&k, proto, laddr, lport, faddr, fport)
        if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFFFFFFFFFF:
            raise ValueError(f"value must be an int in 0..2**64-1, not {value!r}")
        v = PyLong_AsUnsignedLongLong(value)
        with nogil:
            rc = pcbtable_insert(self.table, &k, v)
        if rc == PCB_OK:
            return
        if rc == PCB_EEXIST:
            raise OSError(_errno.EADDRINUSE, f"address already in use: {_key_tuple(&k)}")
        if rc == PCB_ENOMEM:
            raise MemoryError("cannot allocate a pcbtable entry")
        raise ValueError("invalid key")

    def remove(self, proto, laddr, lport, faddr, fport):
        """Remove the entry with exactly this key and return its value; KeyError if absent."""
        cdef pcb_key k
        cdef int rc
        cdef uint64_t v = 0
        _entry_key(&k, proto, laddr, lport, faddr, fport)
        with nogil:
            rc = pcbtable_remove(self.table, &k, &v)
        if rc == PCB_OK:
            return PyLong_FromUnsignedLongLong(v)
        raise KeyError((proto, laddr, lport, faddr, fport))

    def lookup(self, proto, laddr, lport, faddr, fport):
        """The value of the most specific match for a received packet, or None.

        ``laddr``/``lport`` are the packet's destination, ``faddr``/``fport``
        its source.  Order: the connected entry, the listener bound to
        ``laddr``, the listener bound to any address.
        """
        cdef pcb_key k
        cdef uint64_t v
        _key(&k, proto, laddr, lport, faddr, fport)
        if pcbtable_lookup(self.table, &k, &v):
            return PyLong_FromUnsignedLongLong(v)
        return None

    def get_exact(self, proto, laddr, lport, faddr, fport):
        """The value of the entry with exactly this key (no wildcard fallback), or None."""
        cdef pcb_key k
        cdef uint64_t v
        _key(&k, proto, laddr, lport, faddr, fport)
        if pcbtable_get(self.table, &k, &v):
            return PyLong_FromUnsignedLongLong(v)
        return None

    def __contains__(self, key):
        """``(proto, laddr, lport, faddr, fport) in table``: an entry with exactly that key."""
        proto, laddr, lport, faddr, fport = key
        return self.get_exact(proto, laddr, lport, faddr, fport) is not None

    def items(self):
        """All entries as ``((proto, laddr, lport, faddr, fport), value)``.

        Addresses are ``ipaddress`` objects, a wildcard faddr is None.  Each
        bucket is copied under its read lock; entries changed meanwhile in
        other buckets may or may not be seen.
        """
        cdef pcbtable_fields *t = <pcbtable_fields *>self.table
        cdef pcb_bucket_fields *b
        cdef pcb_node *node
        cdef pcb_entry *buf = NULL
        cdef size_t cap = 0, i, j, m, nb = t.mask + 1
        cdef bint fits
        out = []
        try:
            for i in range(nb):
                b = &t.buckets[i]
                while True:
                    # copy under the lock, allocate (if the bucket outgrew the
                    # buffer) outside it
                    rw_rdlock(&b.lock)
                    m = b.n
                    fits = m <= cap
                    if fits:
                        j = 0
                        while j < m and j < 2:
                            buf[j] = b.slot[j]
                            j += 1
                        node = b.overflow
                        while node != NULL:
                            buf[j] = node.e
                            j += 1
                            node = node.next
                    rw_rdunlock(&b.lock)
                    if fits:
                        break
                    cap = 2 * m
                    PyMem_Free(buf)
                    buf = <pcb_entry *>PyMem_Malloc(cap * sizeof(pcb_entry))
                    if buf == NULL:
                        raise MemoryError()
                for j in range(m):
                    out.append((_key_tuple(&buf[j].key), PyLong_FromUnsignedLongLong(buf[j].value)))
        finally:
            PyMem_Free(buf)
        return out

    def lookup_batch(self, proto, laddr, lport, faddr, fport, out=None, found=None):
        """Look up n received packets at once, without the GIL.

        proto uint8 (n,), laddr/faddr uint8 (n, 16) in the IPv4-mapped form
        (or 16-byte items), lport/fport uint16 (n,), any strides (fields of a
        structured array do).  Returns ``(values, found)``: values uint64
        (n,), 0 where nothing matched, and found bool (n,).  ``out`` (uint64)
        and ``found`` (bool or uint8) may be given to be written instead.
        """
        cdef cnp.ndarray a_proto = _column(proto, cnp.NPY_UINT8, 1, "proto")
        cdef cnp.ndarray a_laddr = _addr_column(laddr, "laddr")
        cdef cnp.ndarray a_lport = _column(lport, cnp.NPY_UINT16, 1, "lport")
        cdef cnp.ndarray a_faddr = _addr_column(faddr, "faddr")
        cdef cnp.ndarray a_fport = _column(fport, cnp.NPY_UINT16, 1, "fport")
        cdef cnp.npy_intp n = a_proto.shape[0]
        cdef cnp.ndarray a_out, a_found
        cdef pcb_columns c
        if (a_laddr.shape[0] != n or a_lport.shape[0] != n or a_faddr.shape[0] != n
                or a_fport.shape[0] != n):
            raise ValueError("proto, laddr, lport, faddr and fport must have the same length")
        if out is None:
            a_out = cnp.PyArray_EMPTY(1, &n, cnp.NPY_UINT64, 0)
        else:
            a_out = _column(out, cnp.NPY_UINT64, 1, "out")
            if a_out.shape[0] != n:
                raise ValueError(f"out: expected length {n}, got {a_out.shape[0]}")
            if not cnp.PyArray_ISWRITEABLE(a_out):
                raise ValueError("out: array is read-only")
        if found is None:
            a_found = cnp.PyArray_EMPTY(1, &n, cnp.NPY_BOOL, 0)
        else:
            if not isinstance(found, _np.ndarray) or cnp.PyArray_TYPE(<cnp.ndarray>found) not in (
                    cnp.NPY_BOOL, cnp.NPY_UINT8):
                raise TypeError("found: expected a bool or uint8 array")
            a_found = found
            if cnp.PyArray_NDIM(a_found) != 1 or a_found.shape[0] != n:
                raise ValueError(f"found: expected shape ({n},), got {(<object>a_found).shape}")
            if not cnp.PyArray_ISWRITEABLE(a_found):
                raise ValueError("found: array is read-only")
        c.proto = <const uint8_t *>cnp.PyArray_DATA(a_proto)
        c.proto_stride = a_proto.strides[0]
        c.laddr = <const uint8_t *>cnp.PyArray_DATA(a_laddr)
        c.laddr_stride = a_laddr.strides[0]
        c.lport = <const uint8_t *>cnp.PyArray_DATA(a_lport)
        c.lport_stride = a_lport.strides[0]
        c.faddr = <const uint8_t *>cnp.PyArray_DATA(a_faddr)
        c.faddr_stride = a_faddr.strides[0]
        c.fport = <const uint8_t *>cnp.PyArray_DATA(a_fport)
        c.fport_stride = a_fport.strides[0]
        cdef uint8_t *p_out = <uint8_t *>cnp.PyArray_DATA(a_out)
        cdef ptrdiff_t s_out = a_out.strides[0]
        cdef uint8_t *p_found = <uint8_t *>cnp.PyArray_DATA(a_found)
        cdef ptrdiff_t s_found = a_found.strides[0]
        with nogil:
            pcbtable_lookup_columns(self.table, &c, <size_t>n, p_out, s_out, p_found, s_found)
        return a_out, a_found

    def _lookup_hold(self, proto, laddr, lport, faddr, fport):
        """lookup through pcbtable_lookup_hold/pcbtable_release (for tests)."""
        cdef pcb_key k
        cdef uint64_t v
        cdef pcb_bucket *b
        _key(&k, proto, laddr, lport, faddr, fport)
        b = pcbtable_lookup_hold(self.table, &k, &v)
        if b == NULL:
            return None
        pcbtable_release(b)
        return PyLong_FromUnsignedLongLong(v)

    def _churn(self, proto, laddr, lport, faddr, fport, values, size_t rounds):
        """Insert then remove every row, ``rounds`` times, without the GIL (for
        the tests that race lookups against updates).  The keys are columns as
        for lookup_batch; a wildcard faddr is the unspecified address.  Returns
        the number of operations that did not return PCB_OK (0 when the rows
        were all absent to begin with)."""
        cdef cnp.ndarray a_proto = _column(proto, cnp.NPY_UINT8, 1, "proto")
        cdef cnp.ndarray a_laddr = _addr_column(laddr, "laddr")
        cdef cnp.ndarray a_lport = _column(lport, cnp.NPY_UINT16, 1, "lport")
        cdef cnp.ndarray a_faddr = _addr_column(faddr, "faddr")
        cdef cnp.ndarray a_fport = _column(fport, cnp.NPY_UINT16, 1, "fport")
        cdef cnp.ndarray a_values = _column(values, cnp.NPY_UINT64, 1, "values")
        cdef cnp.npy_intp n = a_proto.shape[0]
        if (a_laddr.shape[0] != n or a_lport.shape[0] != n or a_faddr.shape[0] != n
                or a_fport.shape[0] != n or a_values.shape[0] != n):
            raise ValueError("all columns must have the same length")
        cdef pcb_key *keys = <pcb_key *>PyMem_Malloc(sizeof(pcb_key) * max(n, 1))
        cdef uint64_t *vals = <uint64_t *>PyMem_Malloc(sizeof(uint64_t) * max(n, 1))
        cdef cnp.npy_intp i
        cdef size_t r, failures = 0
        if keys == NULL or vals == NULL:
            PyMem_Free(keys)
            PyMem_Free(vals)
            raise MemoryError()
        try:
            for i in range(n):
                keys[i].proto = (<uint8_t *>cnp.PyArray_GETPTR1(a_proto, i))[0]
                memcpy(keys[i].laddr, cnp.PyArray_GETPTR2(a_laddr, i, 0), 16)
                keys[i].lport = (<uint16_t *>cnp.PyArray_GETPTR1(a_lport, i))[0]
                memcpy(keys[i].faddr, cnp.PyArray_GETPTR2(a_faddr, i, 0), 16)
                keys[i].fport = (<uint16_t *>cnp.PyArray_GETPTR1(a_fport, i))[0]
                vals[i] = (<uint64_t *>cnp.PyArray_GETPTR1(a_values, i))[0]
            with nogil:
                for r in range(rounds):
                    for i in range(n):
                        failures += pcbtable_insert(self.table, &keys[i], vals[i]) != PCB_OK
                    for i in range(n):
                        failures += pcbtable_remove(self.table, &keys[i], NULL) != PCB_OK
        finally:
            PyMem_Free(keys)
            PyMem_Free(vals)
        return failures

    def _hash(self, proto, laddr, lport, faddr, fport):
        """The 64-bit SipHash-1-3 of an entry key (for tests)."""
        cdef pcb_key k
        cdef int kind = _entry_key(&k, proto, laddr, lport, faddr, fport)
        cdef pcb_kw w = pcb_kw_of(&k)
        return pcb_hash_kind(self.table.key, &w, kind)


def _siphash(key, data, int c=2, int d=4):
    """SipHash-c-d of ``data`` under the 16-byte ``key`` (for tests)."""
    cdef bytes k = bytes(key)
    cdef bytes m = bytes(data)
    if len(k) != 16:
        raise ValueError("key must be 16 bytes")
    return siphash(sip_key_from_bytes(<const uint8_t *>PyBytes_AS_STRING(k)),
                   <const uint8_t *>PyBytes_AS_STRING(m), len(m), c, d)
