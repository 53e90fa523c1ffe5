# cython: binding=False
# (plain builtin functions: a few ns less per call than cyfunctions, which
# matters for packet-sized buffers)
"""Internet checksum (RFC 1071), checksum-while-copying, incremental update
(RFC 1624) and pseudo-header sums (RFC 768, RFC 793, RFC 8200 section 8.1).

All sums are in network convention: the value a plain sum of big-endian
16-bit words gives.  A *partial sum* is that sum folded to 16 bits with
end-around carries, not complemented; a *checksum* is its complement, the
value a header's checksum field holds.  Any partial sum (or any 32-bit sum,
such as :func:`pseudo_header_sum`'s) can be passed as ``initial``.  See
``docs/checksum.md``; the C-level API is in ``checksum.pxd``.
"""
from ipaddress import IPv4Address as _IPv4Address
from ipaddress import IPv6Address as _IPv6Address
from ipaddress import ip_address as _ip_address

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

cdef extern from "csum.h" nogil:
    # private: kernel choice, for the tests (every kernel) and the benchmarks
    int CSUM_IMPL_AUTO
    int CSUM_NIMPL
    const char *csum_impl_names[]
    int csum_impl_usable(int impl)
    int csum_impl_best()
    uint32_t csum_partial_impl(const void *p, size_t n, uint32_t initial, int impl)
    uint32_t csum_partial_copy_impl(void *dst, const void *src, size_t n, uint32_t initial,
                                    int impl)

# Buffers at least this long are summed without the GIL: below it, dropping
# and retaking the GIL costs more than other threads gain.
cdef Py_ssize_t _NOGIL_MIN = 1 << 16


cdef int64_t _uint_arg(object value, int64_t maximum, str name) except -1:
    """value as an integer in 0..maximum; TypeError if not an integer,
    ValueError if out of range."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or v < 0 or v > maximum:
        raise ValueError(f"{name} must be in 0..{maximum:#x}, not {value!r}")
    return v


cdef int _impl_arg(str impl) except -2:
    """The kernel named impl ("auto" for the best one); ValueError if unknown
    or if this CPU cannot run it."""
    if impl == "auto":
        return CSUM_IMPL_AUTO
    for i in range(CSUM_NIMPL):
        if impl == csum_impl_names[i].decode():
            if not csum_impl_usable(i):
                raise ValueError(f"checksum kernel {impl!r} needs CPU features this machine lacks")
            return i
    raise ValueError(f"unknown checksum kernel {impl!r}")


cdef inline uint32_t _sum_view(Py_buffer *view, uint32_t initial, int impl) noexcept:
    cdef uint32_t s
    if view.len >= _NOGIL_MIN:
        with nogil:
            s = csum_partial_impl(view.buf, view.len, initial, impl)
        return s
    return csum_partial_impl(view.buf, view.len, initial, impl)


cdef uint32_t _sum(object data, uint32_t initial, int impl) except? 0xffffffff:
    """Partial sum of data's bytes plus initial with kernel impl."""
    cdef Py_buffer view
    cdef uint32_t s
    if PyBytes_CheckExact(data):
        # immutable and kept alive by the caller: no buffer export needed
        view.buf = PyBytes_AS_STRING(data)
        view.len = PyBytes_GET_SIZE(data)
        return _sum_view(&view, initial, impl)
    _get_buffer(data, &view, PyBUF_SIMPLE, "data")
    s = _sum_view(&view, initial, impl)
    PyBuffer_Release(&view)
    return s


# Checksums are 16-bit: hand out shared int objects rather than allocating one
# per call (CPython caches only -5..256); 64 Ki objects, about 2.5 MB.
cdef tuple _U16 = tuple(range(1 << 16))


def internet_checksum(data, initial=0):
    """The Internet checksum (RFC 1071) of ``data``, starting from ``initial``.

    ``data`` is any C-contiguous bytes-like object (read-only is fine); its
    bytes are summed as big-endian 16-bit words, an odd last byte padded
    with zero.  ``initial`` is a 32-bit sum in network convention (e.g. a
    :func:`pseudo_header_sum`), 0 by default.  Returns the complemented
    16-bit one's-complement sum: the value for a header's checksum field,
    and 0 when ``data`` is a header holding its correct checksum.
    """
    cdef uint32_t init = 0
    if initial is not 0:
        init = <uint32_t>_uint_arg(initial, 0xffffffff, "initial")
    if PyBytes_CheckExact(data) and PyBytes_GET_SIZE(data) < _NOGIL_MIN:
        # the common case (a packet), with the least overhead
        return _U16[(~csum_partial(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), init)) & 0xffff]
    return _U16[(~_sum(data, init, CSUM_IMPL_AUTO)) & 0xffff]


def partial_sum(data, initial=0):
    """The one's-complement sum of ``data`` plus ``initial``, folded to 16 bits
    and not complemented (network convention; 0 only if every word and
    ``initial`` are 0).

    For chaining: ``partial_sum(b, partial_sum(a))`` is the sum of ``a + b``
    when ``len(a)`` is even, and ``internet_checksum(d, i)`` is
    ``~partial_sum(d, i) & 0xffff``.
    """
    cdef uint32_t init = 0
    if initial is not 0:
        init = <uint32_t>_uint_arg(initial, 0xffffffff, "initial")
    return _sum(data, init, CSUM_IMPL_AUTO)


cdef int _get_buffer(object obj, Py_buffer *view, int flags, str name) except -1:
    """PyObject_GetBuffer, with one error for each way a buffer is unfit
    (exporters disagree: memoryview says BufferError, NumPy ValueError)."""
    try:
        PyObject_GetBuffer(obj, view, flags)  # TypeError if not a buffer at all
    except (BufferError, ValueError):
        m = memoryview(obj)
        if flags & PyBUF_WRITABLE and m.readonly:
            raise TypeError(
                f"{name} must be a writable bytes-like object, not a read-only {type(obj).__name__}"
            ) from None
        if not m.c_contiguous:
            raise BufferError(f"{name} must be C-contiguous") from None
        raise
    return 0


cdef uint32_t _copy(object dst, object src, uint32_t initial, int impl) except? 0xffffffff:
    """Copy src to the start of dst and return the partial sum of src plus initial."""
    cdef Py_buffer d, s
    cdef uint32_t r
    cdef const char *sb
    cdef char *db
    _get_buffer(dst, &d, PyBUF_WRITABLE, "dst")
    try:
        _get_buffer(src, &s, PyBUF_SIMPLE, "src")
    except BaseException:
        PyBuffer_Release(&d)
        raise
    try:
        if d.len < s.len:
            raise ValueError(f"dst holds {d.len} bytes, too few for the {s.len} bytes of src")
        sb = <const char *>s.buf
        db = <char *>d.buf
        if s.len and db < sb + s.len and sb < db + s.len:
            raise ValueError("dst and src overlap")
        if s.len >= _NOGIL_MIN:
            with nogil:
                r = csum_partial_copy_impl(d.buf, s.buf, s.len, initial, impl)
        else:
            r = csum_partial_copy_impl(d.buf, s.buf, s.len, initial, impl)
    finally:
        PyBuffer_Release(&s)
        PyBuffer_Release(&d)
    return r


def checksum_copy(dst, src, initial=0):
    """Copy ``src`` into the start of ``dst`` and return the Internet checksum
    of ``src`` (as :func:`internet_checksum` would), in one pass over the bytes.

    ``dst`` must be a writable C-contiguous bytes-like object at least as long
    as ``src`` (ValueError if shorter, TypeError if read-only) and must not
    overlap it (ValueError).  Bytes of ``dst`` past ``len(src)`` are left
    alone.  To chain sums, ``~checksum_copy(...) & 0xffff`` is the partial sum.
    """
    cdef uint32_t init = 0
    if initial is not 0:
        init = <uint32_t>_uint_arg(initial, 0xffffffff, "initial")
    return (~_copy(dst, src, init, CSUM_IMPL_AUTO)) & 0xffff


def checksum_update(checksum, old16, new16):
    """The checksum after a 16-bit word it covers changes from ``old16`` to
    ``new16`` (RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m')).  All three are
    16-bit values as read big-endian from the packet."""
    cdef uint16_t hc = <uint16_t>_uint_arg(checksum, 0xffff, "checksum")
    cdef uint16_t m = <uint16_t>_uint_arg(old16, 0xffff, "old16")
    cdef uint16_t m1 = <uint16_t>_uint_arg(new16, 0xffff, "new16")
    return csum_update16(hc, m, m1)


cdef bytes _packed_address(object addr, str name):
    """addr as 4 or 16 bytes in network order."""
    cdef bytes b
    if isinstance(addr, (_IPv4Address, _IPv6Address)):
        return addr.packed
    if isinstance(addr, str):
        return _ip_address(addr).packed  # ValueError if not an address
    if isinstance(addr, (bytes, bytearray, memoryview)):
        b = bytes(addr)
        if len(b) != 4 and len(b) != 16:
            raise ValueError(f"{name} as bytes must be 4 (IPv4) or 16 (IPv6) long, not {len(b)}")
        return b
    raise TypeError(
        f"{name} must be an IPv4Address/IPv6Address, a str or packed bytes, not {type(addr).__name__}"
    )


def pseudo_header_sum(src, dst, proto, length):
    """Partial sum (16 bits, folded, not complemented, network convention) of
    the pseudo-header that TCP, UDP and ICMPv6 checksums cover.

    IPv4 (RFC 768, RFC 793 section 3.1): source, destination, zero byte,
    ``proto``, 16-bit ``length``.  IPv6 (RFC 8200 section 8.1): source,
    destination, 32-bit upper-layer ``length``, three zero bytes, next header
    ``proto``.  ``length`` is the L4 header plus payload in bytes.  Addresses
    are ``ipaddress`` objects, strings or packed bytes (4 or 16 long); both must
    be of one family (ValueError).  Pass the result as ``initial`` to
    :func:`internet_checksum` over the L4 header and payload.
    """
    cdef bytes s = _packed_address(src, "src")
    cdef bytes d = _packed_address(dst, "dst")
    if len(s) != len(d):
        raise ValueError("src and dst are of different address families")
    cdef uint8_t p = <uint8_t>_uint_arg(proto, 0xff, "proto")
    cdef const uint8_t *sp = <const uint8_t *>PyBytes_AS_STRING(s)
    cdef const uint8_t *dp = <const uint8_t *>PyBytes_AS_STRING(d)
    if len(s) == 4:
        return csum_pseudo_v4(sp, dp, p, <uint16_t>_uint_arg(length, 0xffff, "length"))
    return csum_pseudo_v6(sp, dp, p, <uint32_t>_uint_arg(length, 0xffffffff, "length"))


# ---- private: kernel choice ------------------------------------------------

def _impls():
    """Names of the checksum kernels this CPU runs, portable first."""
    return tuple(csum_impl_names[i].decode() for i in range(CSUM_NIMPL) if csum_impl_usable(i))


def _impl():
    """Name of the kernel the public functions use for large buffers."""
    return csum_impl_names[csum_impl_best()].decode()


def _internet_checksum_impl(str impl, data, initial=0):
    """internet_checksum with the kernel named ``impl``, at every length."""
    cdef int k = _impl_arg(impl)
    cdef uint32_t init = <uint32_t>_uint_arg(initial, 0xffffffff, "initial")
    return (~_sum(data, init, k)) & 0xffff


def _checksum_copy_impl(str impl, dst, src, initial=0):
    """checksum_copy with the kernel named ``impl``, at every length."""
    cdef int k = _impl_arg(impl)
    cdef uint32_t init = <uint32_t>_uint_arg(initial, 0xffffffff, "initial")
    return (~_copy(dst, src, init, k)) & 0xffff
