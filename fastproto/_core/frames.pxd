# C-level frame batches, for cimport by transmit paths (TSO) and devices.
#
#     from fastproto._core.frames cimport FrameBatch, fb_reserve, fb_tail, fb_push
#     cdef FrameBatch b = FrameBatch()
#     if fb_reserve(b, total_bytes, nframes) != 0:
#         raise MemoryError()
#     with nogil:
#         for i in range(nframes):
#             n = write_frame(fb_tail(b), ...)    # into the reserved room
#             fb_push(b, n)
#
# A FrameBatch holds frames back to back in one buffer: frame i is
# ``buf[offs[i] : offs[i] + lens[i]]``, i < n.  Only an unsealed owner grows
# (fb_reserve may move buf, offs and lens); sealing (transmit, a slice)
# freezes it, after which its memory never moves or changes while the object
# lives, so a sealed batch may be read from any thread, without the GIL.
# A view (a slice) shares its owner's memory and keeps the owner alive.
#
# Filling without the GIL: with the GIL, check ``not b.frozen and not
# b.busy``, fb_reserve the room, set ``b.busy``; then, without it, write the
# frames (fb_tail/fb_push); then, with it again, clear ``b.busy``.  While
# busy, fb_reserve fails and every Python-level use of the batch but len,
# nbytes, max_len and sealed raises ValueError: nothing can move or read the
# memory being written.

from libc.stdint cimport uint8_t, uint32_t

cdef enum:
    # every frame starts on this boundary (a cache line): the copies out of
    # the batch then read whole lines (fb_reserve counts the padding)
    FB_ALIGN = 64


cdef class FrameBatch:
    cdef uint8_t *buf           # frame bytes (the owner's allocation)
    cdef size_t *offs           # offs[i]: where frame i starts in buf
    cdef uint32_t *lens         # lens[i]: its length in bytes
    cdef Py_ssize_t n           # frames
    cdef Py_ssize_t ncap        # room in offs/lens (an owner's)
    cdef size_t used            # bytes of buf filled (an owner's)
    cdef size_t cap             # bytes of buf allocated (an owner's)
    cdef size_t total           # sum of lens[0..n)
    cdef uint32_t longest       # max of lens[0..n), 0 if empty
    cdef bint frozen            # sealed: no more frames, memory fixed
    cdef bint busy              # being filled without the GIL (see above)
    cdef object base            # the owner whose memory a view shares; None for an owner
    cdef FrameBatch _view(self, Py_ssize_t lo, Py_ssize_t hi)
    cdef int _check_idle(self) except -1
    cdef int _check_open(self) except -1


# Room for ``nbytes`` more bytes in ``nframes`` more frames (their padding
# to FB_ALIGN counted here): 0, or -1 if the
# batch is sealed or busy or memory ran out (no frame changed then).
cdef int fb_reserve(FrameBatch b, size_t nbytes, Py_ssize_t nframes) noexcept nogil


cdef inline uint8_t *fb_tail(FrameBatch b) noexcept nogil:
    """Where the next frame's bytes go (inside room fb_reserve made)."""
    return b.buf + b.used


cdef inline void fb_push(FrameBatch b, size_t length) noexcept nogil:
    """Record the ``length`` bytes written at fb_tail as the next frame
    (within room fb_reserve made: one frame, ``length`` < 2**32)."""
    b.offs[b.n] = b.used
    b.lens[b.n] = <uint32_t>length
    b.n += 1
    b.used = (b.used + length + (FB_ALIGN - 1)) & ~(<size_t>(FB_ALIGN - 1))
    b.total += length
    if length > b.longest:
        b.longest = <uint32_t>length
