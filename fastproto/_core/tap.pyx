# cython: always_allow_keywords=False, binding=False
"""Linux TAP devices: the file descriptor and the batch loops that move frames.

``TapPort`` owns one non-blocking ``/dev/net/tun`` descriptor opened as a TAP
device (``IFF_TAP | IFF_NO_PI``, plus ``IFF_VNET_HDR`` and checksum/TSO
offloads when asked) and its counters.  Its batch methods read
frames straight into ``BufferPool`` buffers and write them out of the pool or
out of any bytes-like objects, each as one loop without the GIL
(``tap.pxd`` has the same loops for other Cython modules).  The module
functions configure a device by name (MTU, MAC, up/down) in the calling
thread's network namespace.  See ``docs/tap.md`` and ``src/tap.h``.
"""
import os as _os
import time as _time

import numpy as _np

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from posix.unistd cimport close as _close

from fastproto._core.buffers cimport BufferPool
from fastproto._core.frames cimport FrameBatch

cdef extern from "net/if.h":
    int IFNAMSIZ
    int IFF_UP

#: bytes of Ethernet header (the shortest frame a TAP accepts) and of one 802.1Q tag
ETH_HLEN = TAP_ETH_HLEN
VLAN_HLEN = 4

# longest wait without the GIL before looking at signals (Ctrl-C)
cdef enum:
    _WAIT_SLICE_MS = 100

STAT_NAMES = (
    "rx_frames", "rx_bytes", "rx_no_buffer", "rx_oversize", "rx_dropped_down", "rx_errors",
    "tx_frames", "tx_bytes", "tx_errors", "tx_oversize", "tx_runt", "tx_bad_handle",
    "tx_write_failed", "tx_dropped_down",
    "rx_gso_frames", "rx_gso_segments", "rx_csum_completed", "rx_vnet_truncated",
    "rx_gso_bad_type", "rx_gso_zero_size", "rx_gso_bad_hdr_len", "rx_csum_bad_offset",
    "rx_gso_bad_headers", "rx_gso_too_big", "tx_gso_frames", "tx_gso_bad", "tx_gso_segments",
)

#: bytes of virtio_net_hdr before each frame with offloads on
VNET_HDR_LEN = TAP_VNET_HDR_LEN
#: the TUN_F_* flags given to TUNSETOFFLOAD
OFFLOADS = TAP_OFFLOADS
#: the longest frame the offload receive path takes (a super-frame), in bytes
GSO_MAX_FRAME = TAP_GSO_BUF


cdef dict _stats_dict(const tap_stats_t *s):
    return {
        "rx_frames": s.rx_frames, "rx_bytes": s.rx_bytes, "rx_no_buffer": s.rx_no_buffer,
        "rx_oversize": s.rx_oversize, "rx_dropped_down": s.rx_dropped_down,
        "rx_errors": s.rx_errors,
        "tx_frames": s.tx_frames, "tx_bytes": s.tx_bytes, "tx_errors": s.tx_errors,
        "tx_oversize": s.tx_oversize, "tx_runt": s.tx_runt, "tx_bad_handle": s.tx_bad_handle,
        "tx_write_failed": s.tx_write_failed, "tx_dropped_down": s.tx_dropped_down,
        "rx_gso_frames": s.rx_gso_frames, "rx_gso_segments": s.rx_gso_segments,
        "rx_csum_completed": s.rx_csum_completed, "rx_vnet_truncated": s.rx_vnet_truncated,
        "rx_gso_bad_type": s.rx_gso_bad_type, "rx_gso_zero_size": s.rx_gso_zero_size,
        "rx_gso_bad_hdr_len": s.rx_gso_bad_hdr_len, "rx_csum_bad_offset": s.rx_csum_bad_offset,
        "rx_gso_bad_headers": s.rx_gso_bad_headers, "rx_gso_too_big": s.rx_gso_too_big,
        "tx_gso_frames": s.tx_gso_frames, "tx_gso_bad": s.tx_gso_bad,
        "tx_gso_segments": s.tx_gso_segments,
    }


cdef bytes _ifname(object name):
    """The device name as bytes for ifr_name; OSError(EINVAL) if it cannot be one."""
    if not isinstance(name, str):
        raise TypeError(f"an interface name is a str, not {type(name).__name__}")
    if not (<str>name).isascii() or not 0 < len(<str>name) < IFNAMSIZ or "\0" in <str>name:
        raise OSError(22, f"{_os.strerror(22)}: an interface name is 1 to {IFNAMSIZ - 1} ASCII characters",
                      name)
    return (<str>name).encode("ascii")


cdef int _check(int rc, object name) except -1:
    if rc != 0:
        raise OSError(rc, _os.strerror(rc), name)
    return 0


def get_mtu(name):
    """The MTU of interface ``name`` in bytes (SIOCGIFMTU)."""
    cdef bytes b = _ifname(name)
    cdef int mtu = 0
    _check(tap_get_mtu(b, &mtu), name)
    return mtu


def set_mtu(name, int mtu):
    """Set the MTU of interface ``name`` in bytes (SIOCSIFMTU); OSError(EINVAL) if out of range."""
    cdef bytes b = _ifname(name)
    _check(tap_set_mtu(b, mtu), name)


def get_mac(name):
    """The hardware address of interface ``name``, 6 bytes (SIOCGIFHWADDR)."""
    cdef bytes b = _ifname(name)
    cdef uint8_t mac[6]
    _check(tap_get_hwaddr(b, mac), name)
    return (<char *>mac)[:6]


def set_mac(name, mac):
    """Set the hardware address of interface ``name`` from 6 bytes (SIOCSIFHWADDR)."""
    cdef bytes b = _ifname(name)
    cdef const uint8_t[::1] m = bytes(mac)
    if m.shape[0] != 6:
        raise ValueError(f"a MAC address is 6 bytes, not {m.shape[0]}")
    _check(tap_set_hwaddr(b, &m[0]), name)


def set_up(name, bint up):
    """Set (True) or clear (False) IFF_UP on interface ``name``."""
    cdef bytes b = _ifname(name)
    _check(tap_set_up(b, up), name)


def is_up(name):
    """True if interface ``name`` has IFF_UP set."""
    cdef bytes b = _ifname(name)
    cdef int flags = 0
    _check(tap_get_flags(b, &flags), name)
    return bool(flags & IFF_UP)


cdef class _Frames:
    """Frames (bytes-like, C-contiguous, or a FrameBatch) held as buffers for
    C: ``ptrs[i]`` and ``lens[i]`` are valid while the object lives; released
    with it."""
    cdef Py_buffer *views
    cdef const uint8_t **ptrs
    cdef size_t *lens
    cdef Py_ssize_t n, held
    cdef FrameBatch batch      # a batch's frames are pointed at, not copied

    def __cinit__(self, seq):
        self.n = len(seq)
        self.held = 0
        n = max(self.n, 1)
        self.views = <Py_buffer *>PyMem_Calloc(<size_t>n, sizeof(Py_buffer))
        self.ptrs = <const uint8_t **>PyMem_Malloc(<size_t>n * sizeof(uint8_t *))
        self.lens = <size_t *>PyMem_Malloc(<size_t>n * sizeof(size_t))
        if self.views == NULL or self.ptrs == NULL or self.lens == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        cdef FrameBatch b
        if type(seq) is FrameBatch:
            # Sealed, it keeps its memory where it is while referenced here.
            b = <FrameBatch>seq
            b._check_idle()
            b.frozen = True
            self.batch = b
            for i in range(self.n):
                self.ptrs[i] = b.buf + b.offs[i]
                self.lens[i] = b.lens[i]
            return
        for i in range(self.n):
            PyObject_GetBuffer(seq[i], &self.views[i], PyBUF_SIMPLE)
            self.held += 1
            self.ptrs[i] = <const uint8_t *>self.views[i].buf
            self.lens[i] = <size_t>self.views[i].len

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.views != NULL:
            for i in range(self.held):
                PyBuffer_Release(&self.views[i])
        PyMem_Free(self.views)
        PyMem_Free(<void *>self.ptrs)
        PyMem_Free(self.lens)


def tx_runs(frames):
    """How transmit with offloads groups ``frames`` (bytes-like, in order): run lengths.

    Each run of two or more is one super-frame for the kernel to segment
    (consecutive segments of one TCP connection, see docs/tap.md); a 1 is a
    frame written alone.  The lengths add up to len(frames).
    """
    cdef _Frames f = _Frames(list(frames))
    cdef size_t k, at = 0, n = <size_t>f.n
    out = []
    while at < n:
        k = tap_tx_run(f.ptrs + at, f.lens + at, n - at)
        out.append(k)
        at += k
    return out


cdef class TapPort:
    """TapPort(name, max_frame, offload=False): an open TAP device and its counters.

    Creates (or attaches to) TAP device ``name`` in the current network
    namespace.  ``max_frame`` is the longest frame ``tx_*`` will write, in
    bytes (with ``offload``, longer TCP frames go as GSO super-frames).
    ``offload`` opens it with ``IFF_VNET_HDR`` (a 10-byte virtio_net_hdr per
    frame) and announces checksum and TSO offloads (``OFFLOADS``): the
    kernel may then send super-frames and partial checksums, which
    ``rx_batch`` turns into ordinary checksummed frames.  OSError with the
    errno when the device cannot be opened (EACCES or EPERM without
    CAP_NET_ADMIN, EINVAL for a bad name, EBUSY when in use).
    The batch methods expect the caller to hold the interface's serializer.
    """

    def __cinit__(self):
        self.t.fd = -1
        self.t.wake_fd = -1

    def __init__(self, name, Py_ssize_t max_frame=1518, bint offload=False):
        cdef bytes b = _ifname(name)
        cdef char out[64]
        if self.t.fd >= 0:
            raise RuntimeError(f"TapPort {self.name!r} is already open")
        if not TAP_ETH_HLEN <= max_frame <= TAP_MAX_FRAME:
            raise ValueError(f"max_frame must be {TAP_ETH_HLEN}..{TAP_MAX_FRAME}, not {max_frame}")
        cdef int wake_fd = tap_wake_fd_open()
        if wake_fd < 0:
            raise OSError(-wake_fd, _os.strerror(-wake_fd))
        if offload and self.t.gso.buf == NULL and tap_gso_init(&self.t) != 0:
            _close(wake_fd)
            raise MemoryError()
        cdef int fd = tap_open_vnet(b, out, offload)
        if fd < 0:
            _close(wake_fd)
            raise OSError(-fd, _os.strerror(-fd), name)
        self.t.fd = fd
        self.t.wake_fd = wake_fd
        self.wakeups = 0
        self._scratch = bytearray(TAP_MAX_FRAME)
        self.t.max_frame = <uint32_t>max_frame
        self.t.vnet_hdr_len = TAP_VNET_HDR_LEN if offload else 0
        self._copy_pool = None
        self.name = out.decode("ascii", "replace")

    def __dealloc__(self):
        if self.t.fd >= 0:
            _close(self.t.fd)
            self.t.fd = -1
        if self.t.wake_fd >= 0:
            _close(self.t.wake_fd)
            self.t.wake_fd = -1
        tap_gso_free(&self.t)

    cdef int _open(self) except -1:
        if self.t.fd < 0:
            raise ValueError(f"TAP device {self.name!r} is closed")
        return 0

    @property
    def closed(self):
        return self.t.fd < 0

    @property
    def offload(self):
        """True if the device carries a virtio_net_hdr per frame (checksum and TSO offloads)."""
        return self.t.vnet_hdr_len != 0

    @property
    def max_frame(self):
        """Longest frame written, in bytes (MTU + 14-byte header + one 4-byte VLAN tag)."""
        return self.t.max_frame

    @max_frame.setter
    def max_frame(self, Py_ssize_t value):
        if not TAP_ETH_HLEN <= value <= TAP_MAX_FRAME:
            raise ValueError(f"max_frame must be {TAP_ETH_HLEN}..{TAP_MAX_FRAME}, not {value}")
        self.t.max_frame = <uint32_t>value

    def fileno(self):
        self._open()
        return self.t.fd

    def close(self):
        """Close the descriptor, which removes the (non-persistent) device.  Idempotent.

        Waits in progress are woken first and return False.
        """
        cdef int fd = self.t.fd
        cdef int wake_fd = self.t.wake_fd
        if fd < 0:
            return
        self.wakeup()
        self.t.fd = -1
        self.t.wake_fd = -1
        _close(fd)
        _close(wake_fd)

    def rx_batch(self, BufferPool pool not None, uint64_t[::1] handles, uint32_t[::1] lengths):
        """Read up to len(handles) frames into buffers allocated from ``pool``.

        Frame i is ``pool.data[handles[i], :lengths[i]]``; the caller owns
        (and frees) those buffers.  Returns how many (at most the shorter
        array's length); 0 when nothing is queued.  OSError if the first
        read fails with an error other than EAGAIN.  With offloads a
        super-frame arrives as its segments, and segments that did not fit
        in the arrays come first in the next call (``pending``).
        """
        self._open()
        cdef size_t n = <size_t>min(handles.shape[0], lengths.shape[0])
        if n == 0:
            return 0
        cdef ssize_t got
        with nogil:
            got = tap_rx_batch(&self.t, pool.pool, &handles[0], &lengths[0], n)
        if got < 0:
            raise OSError(-got, _os.strerror(-got), self.name)
        return got

    def tx_handles(self, BufferPool pool not None, const uint64_t[::1] handles,
                   const uint32_t[::1] lengths):
        """Write buffer handles[i] of ``pool``, lengths[i] bytes, for each i, without copying.

        Returns how many frames the kernel took; each rejected one is counted
        under its reason (tx_bad_handle, tx_runt, tx_oversize,
        tx_write_failed) and in tx_errors.  The buffers stay allocated.
        """
        self._open()
        cdef size_t n = <size_t>handles.shape[0]
        if <size_t>lengths.shape[0] != n:
            raise ValueError(f"{handles.shape[0]} handles but {lengths.shape[0]} lengths")
        if n == 0:
            return 0
        cdef size_t sent
        with nogil:
            sent = tap_tx_batch(&self.t, pool.pool, &handles[0], &lengths[0], n)
        return sent

    def tx_gso(self, frame, Py_ssize_t mss=0):
        """Write one TCP frame of up to 65535 IP bytes for the kernel to segment and checksum.

        ``mss`` is the payload bytes per segment (0: the MTU's, max_frame -
        18 - IP and TCP header lengths).  The frame is Ethernet + IPv4 (header
        checksum right) or IPv6 + TCP, IP length covering the frame; its TCP
        checksum field is ignored.  Needs offloads.  True if the kernel took
        it; False if rejected (tx_gso_bad, tx_write_failed; in tx_errors).
        """
        self._open()
        if not 0 <= mss <= 0xffff:
            raise ValueError(f"mss must be 0..65535, not {mss}")
        cdef const uint8_t[::1] f = frame
        cdef int ok
        if f.shape[0] == 0:
            self.t.st.tx_runt += 1
            self.t.st.tx_errors += 1
            return False
        with nogil:
            ok = tap_tx_gso(&self.t, &f[0], <size_t>f.shape[0], <uint32_t>mss)
        return bool(ok)

    @property
    def pending(self):
        """Segments of a received super-frame not yet handed out by rx_batch."""
        return tap_gso_pending(&self.t)

    def tx_frames(self, frames):
        """Write each bytes-like frame (C-contiguous) of a sequence, or each
        frame of a FrameBatch (sealed by this, and read in place); returns
        how many the kernel took.

        Rejected frames are counted as in ``tx_handles`` and do not raise.
        """
        self._open()
        cdef _Frames f = _Frames(frames if isinstance(frames, (list, tuple, FrameBatch))
                                 else list(frames))
        cdef size_t sent = 0
        if f.n == 0:
            return 0
        with nogil:
            sent = tap_tx_vec(&self.t, f.ptrs, f.lens, <size_t>f.n)
        return sent

    def rx_frames(self, Py_ssize_t max_frames):
        """Up to ``max_frames`` queued frames, each copied into a new bytes object."""
        self._open()
        out = []
        cdef uint8_t *buf = <uint8_t *><char *>self._scratch
        cdef ssize_t r
        cdef Py_ssize_t i, got
        if self.t.vnet_hdr_len:
            # segments need pool buffers: receive into a private pool, then copy
            if self._copy_pool is None:
                self._copy_pool = BufferPool(64, max(2048, (self.t.max_frame + 63) // 64 * 64))
            pool = <BufferPool>self._copy_pool
            hs = _np.zeros(64, _np.uint64)
            ls = _np.zeros(64, _np.uint32)
            while len(out) < max_frames:
                got = self.rx_batch(pool, hs[:min(64, max_frames - len(out))],
                                    ls[:min(64, max_frames - len(out))])
                if got == 0:
                    break
                for i in range(got):
                    out.append(bytes(pool.data[hs[i], :ls[i]]))
                pool.free_many(hs[:got])
            return out
        while len(out) < max_frames:
            with nogil:
                r = tap_rx_copy(&self.t, buf, TAP_MAX_FRAME)
            if r < 0:
                if not out:
                    raise OSError(-r, _os.strerror(-r), self.name)
                break
            if r == 0:
                break
            out.append((<char *>buf)[:r])
        return out

    def drop_queued(self, Py_ssize_t max_frames=65536):
        """Read and drop up to ``max_frames`` queued frames (rx_dropped_down); how many."""
        self._open()
        cdef size_t n
        with nogil:
            n = tap_rx_drop_queued(&self.t, <size_t>max_frames)
        return n

    def count_tx_dropped_down(self, Py_ssize_t frames):
        """Count ``frames`` frames not sent because the interface was down."""
        if frames > 0:
            self.t.st.tx_dropped_down += <uint64_t>frames
            self.t.st.tx_errors += <uint64_t>frames

    def wakeup(self):
        """End every wait in progress (they return False unless a frame is ready)."""
        # The count moves before the signal, so a waiter that sees the
        # signal with its count unchanged knows it is an earlier one (stale).
        self.wakeups += 1
        if self.t.wake_fd >= 0:
            tap_wake(&self.t)

    @property
    def wake_count(self):
        """How many ``wakeup`` calls so far: pass it as ``wait``'s ``seen`` to
        count a wakeup made between reading it and the wait."""
        return self.wakeups

    def rx_ready(self):
        """True if a receive would find a frame: segments of a super-frame
        still to cut, or a frame (or an error to report) on the descriptor.
        A look with a zero-timeout poll(2), without the serializer."""
        cdef tap_t snap
        if self.t.fd < 0:
            return False
        if tap_gso_pending(&self.t):
            return True
        snap.fd = self.t.fd
        snap.wake_fd = -1           # (poll(2) skips a negative descriptor)
        return tap_wait(&snap, 0) == 1

    def wait(self, timeout=None, seen=None):
        """Wait up to ``timeout`` seconds (None: no limit) for a frame, without the GIL.

        True if a read would not block (a frame, segments of a super-frame
        still to cut, or an error to report); False on timeout, or when
        ``wakeup`` or ``close`` ends it early.  ``seen``: a ``wake_count``
        read before, so that a wakeup since then ends the wait at once.
        Waits in slices of at most 100 ms so signals (Ctrl-C) are seen.
        """
        self._open()
        cdef double deadline = 0.0
        cdef double left
        cdef int ms, rc
        cdef tap_t snap
        cdef uint64_t seen_ = self.wakeups if seen is None else <uint64_t>seen
        if tap_gso_pending(&self.t):
            return True
        if timeout is not None:
            if timeout < 0:
                raise ValueError(f"timeout must be >= 0, not {timeout}")
            deadline = _time.monotonic() + timeout
        while True:
            if timeout is None:
                ms = _WAIT_SLICE_MS
            else:
                left = deadline - _time.monotonic()
                ms = 0 if left <= 0 else min(_WAIT_SLICE_MS, <int>(left * 1000.0) + 1)
            if self.t.fd < 0:
                return False
            # the descriptors as of now: close() may run while we sleep
            snap.fd = self.t.fd
            snap.wake_fd = self.t.wake_fd
            with nogil:
                rc = tap_wait(&snap, ms)
            if rc < 0:
                raise OSError(-rc, _os.strerror(-rc), self.name)
            if rc == 1:
                return True
            if self.wakeups != seen_:
                return False
            if rc == 2 and self.t.fd >= 0:
                tap_wake_clear(&snap)
            if timeout is not None and _time.monotonic() >= deadline:
                return False
            PyErr_CheckSignals()

    def stats(self):
        """{counter: value} for every name in STAT_NAMES (see docs/tap.md)."""
        return _stats_dict(&self.t.st)

    def __repr__(self):
        state = "closed" if self.t.fd < 0 else f"fd={self.t.fd}"
        off = " offload" if self.t.vnet_hdr_len else ""
        return f"<TapPort {self.name!r} {state} max_frame={self.t.max_frame}{off}>"


cdef class VnetReceiver:
    """VnetReceiver(): the offload receive path of a TapPort, fed from memory.

    ``input`` takes what one read of an offload TAP descriptor returns (a
    10-byte virtio_net_hdr, then an Ethernet frame) and runs it through the
    same code as ``TapPort.rx_batch``: super-frames are segmented, partial
    checksums completed, bad headers dropped and counted.  For replaying
    captured traffic and for testing the segmenter without a device.  One
    caller at a time (its counters and pending state have one writer).
    """

    def __cinit__(self):
        self.t.fd = -1
        self.t.wake_fd = -1
        self.t.vnet_hdr_len = TAP_VNET_HDR_LEN
        self.t.max_frame = TAP_MAX_FRAME
        if tap_gso_init(&self.t) != 0:
            raise MemoryError()

    def __dealloc__(self):
        tap_gso_free(&self.t)

    def input(self, BufferPool pool not None, packet, uint64_t[::1] handles not None,
              uint32_t[::1] lengths not None):
        """Receive ``packet`` (virtio_net_hdr + frame): frames into buffers of ``pool``; how many.

        Frame i is ``pool.data[handles[i], :lengths[i]]`` (the caller frees
        it).  Segments beyond the arrays' length stay pending (``drain``).
        """
        cdef const uint8_t[::1] pkt = packet
        cdef size_t n = <size_t>min(handles.shape[0], lengths.shape[0])
        cdef size_t got
        cdef uint8_t empty = 0
        cdef const uint8_t *ptr = &pkt[0] if pkt.shape[0] > 0 else &empty
        if n == 0:
            return 0
        with nogil:
            got = tap_vnet_inject(&self.t, pool.pool, ptr, <size_t>pkt.shape[0], &handles[0],
                                  &lengths[0], n)
        return got

    def drain(self, BufferPool pool not None, uint64_t[::1] handles not None,
              uint32_t[::1] lengths not None):
        """Up to len(handles) more segments of the pending super-frame; how many."""
        cdef size_t n = <size_t>min(handles.shape[0], lengths.shape[0])
        cdef size_t got
        with nogil:
            got = tap_rx_pending(&self.t, pool.pool, &handles[0] if n else NULL,
                                 &lengths[0] if n else NULL, n)
        return got

    @property
    def pending(self):
        """Segments of the last super-frame not yet handed out."""
        return tap_gso_pending(&self.t)

    def stats(self):
        """{counter: value} for every name in STAT_NAMES (only rx_* move)."""
        return _stats_dict(&self.t.st)
