# cython: always_allow_keywords=False, binding=False
"""A traffic generator in the core: a thread without the GIL offering frames at a set rate.

``Generator`` owns a bounded rx ring (the NIC's receive FIFO) and a POSIX
thread that fills it with copies of one template frame, paced by
``clock_gettime``; a frame arriving at a full ring is dropped there and only
counted (``rx_ring_full``).  ``rx_batch`` copies queued frames into
``BufferPool`` buffers (the NIC's DMA) and ``wait`` sleeps for the
"interrupt", both without the GIL.  ``fastproto.phy.generator`` wraps it as
an interface.  See ``docs/livelock.md`` and ``src/generator.h``.
"""
import math as _math
import os as _os
import time as _time

from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from fastproto._core.buffers cimport BufferPool

cdef extern from *:
    # gcc's atomic builtins: the generator thread writes these counters
    int __ATOMIC_RELAXED
    uint64_t __atomic_load_n(uint64_t *p, int order) nogil

#: longest frame a generator offers, bytes
MAX_FRAME = GEN_MAX_FRAME
#: the shortest Ethernet frame without its FCS, bytes (IEEE 802.3: 64 with it)
MIN_FRAME = 60
#: default burst bound: the frames due in this many seconds at the set rate
BURST_WINDOW = 1e-3
#: the burst bound is at least this many frames
MIN_BURST = 16

STAT_NAMES = (
    "offered", "rx_ring_full", "rx_dropped_down", "interrupts", "notifies", "lag_frames", "gen_wakes",
    "gen_cpu_ns", "elapsed_ns", "rx_frames", "rx_bytes", "rx_no_buffer", "rx_oversize",
    "rx_ring_queued",
)

# longest wait without the GIL before looking at signals (Ctrl-C)
cdef enum:
    _WAIT_SLICE_MS = 100


def udp_offsets(frame):
    """(source port offset, checksum offset) of the UDP header in an Ethernet
    frame carrying a whole IPv4/UDP datagram (one 802.1Q tag allowed); None
    if the frame is anything else (not IPv4, not UDP, a fragment, short)."""
    cdef bytes b = bytes(frame)
    cdef Py_ssize_t off = 12
    if len(b) < 14:
        return None
    etype = (b[off] << 8) | b[off + 1]
    if etype == 0x8100:
        off += 4
        if len(b) < off + 2:
            return None
        etype = (b[off] << 8) | b[off + 1]
    off += 2
    if etype != 0x0800 or len(b) < off + 20 or b[off] >> 4 != 4:
        return None
    ihl = (b[off] & 0x0F) * 4
    frag = ((b[off + 6] << 8) | b[off + 7]) & 0x3FFF    # MF and the offset (RFC 791 3.1)
    if ihl < 20 or b[off + 9] != 17 or frag or len(b) < off + ihl + 8:
        return None
    return off + ihl, off + ihl + 6


def default_burst(double rate_pps):
    """The burst bound for ``rate_pps``: frames due in BURST_WINDOW, at least MIN_BURST."""
    return max(MIN_BURST, <long>_math.ceil(rate_pps * BURST_WINDOW))


cdef class Generator:
    """Generator(frame, rate_pps, ring_size=1024, burst=None, sport_span=1, limit=0)

    Offers copies of ``frame`` (bytes, 14..MAX_FRAME) at ``rate_pps`` frames
    per second into a ring of ``ring_size`` slots, once :meth:`start` is
    called.  ``burst``: most frames offered at one wake of the thread when it
    fell behind (default :func:`default_burst`); frames due beyond it are
    not offered (``lag_frames``).  ``sport_span`` > 1 cycles the UDP source
    port over that many consecutive values from the template's, keeping the
    UDP checksum right (RFC 1624); the frame must then be IPv4/UDP.
    ``limit`` > 0: the thread ends after offering that many frames.
    """

    def __cinit__(self, frame, double rate_pps, Py_ssize_t ring_size=1024, burst=None,
                  Py_ssize_t sport_span=1, unsigned long long limit=0):
        self.g = NULL
        cdef bytes b = bytes(frame)
        if not 14 <= len(b) <= GEN_MAX_FRAME:
            raise ValueError(f"a frame is 14..{GEN_MAX_FRAME} bytes, not {len(b)}")
        if not rate_pps >= 0 or rate_pps == _math.inf:
            raise ValueError(f"rate_pps must be a finite number >= 0, not {rate_pps}")
        if not 1 <= ring_size <= (1 << 24):
            raise ValueError(f"ring_size must be 1..{1 << 24}, not {ring_size}")
        if not 1 <= sport_span <= 65536:
            raise ValueError(f"sport_span must be 1..65536, not {sport_span}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        offs = udp_offsets(b) if sport_span > 1 else None
        if sport_span > 1 and offs is None:
            raise ValueError("sport_span > 1 needs an IPv4/UDP frame (whole datagram)")
        cdef gen_t *g = <gen_t *>PyMem_Calloc(1, sizeof(gen_t))
        if g == NULL:
            raise MemoryError()
        g.irq_fd = -1
        g.notify_fd = -1
        g.wake_fd = -1
        g.size = <uint32_t>ring_size
        g.frame_len = <uint32_t>len(b)
        g.slot_len = <uint32_t>((len(b) + 63) // 64 * 64)
        memcpy(g.tmpl, <const char *>b, len(b))
        g.sport_off = -1
        g.csum_off = -1
        g.sport_span = <uint32_t>sport_span
        if offs is not None:
            g.sport_off = offs[0]
            g.csum_off = offs[1]
            g.sport_base = <uint16_t>((b[offs[0]] << 8) | b[offs[0] + 1])
            g.csum_base = <uint16_t>((b[offs[1]] << 8) | b[offs[1] + 1])
        g.limit = limit
        gen_set_rate(g, rate_pps)
        gen_set_burst(g, <uint64_t>(default_burst(rate_pps) if burst is None else burst))
        cdef int rc = gen_init(g)
        if rc != 0:
            PyMem_Free(g)
            raise OSError(rc, _os.strerror(rc))
        self.g = g
        self.frame = b
        self.wakeups = 0

    def __dealloc__(self):
        if self.g != NULL:
            with nogil:
                gen_destroy(self.g)
            PyMem_Free(self.g)
            self.g = NULL

    cdef int _open(self) except -1:
        if self.g.slots == NULL:
            raise ValueError("generator is closed")
        return 0

    # -- the wire side ----------------------------------------------------------

    def start(self):
        """Start offering frames (a new thread); RuntimeError if already running."""
        self._open()
        cdef int rc = gen_start(self.g)
        if rc == 16:  # EBUSY
            raise RuntimeError("generator already running")
        if rc != 0:
            raise OSError(rc, _os.strerror(rc))

    def stop(self):
        """Stop offering and join the thread (frames queued stay queued).  Idempotent."""
        with nogil:
            gen_stop(self.g)

    @property
    def running(self):
        """True while the thread is offering frames (started, not stopped, limit not reached)."""
        cdef gen_t *g = self.g
        if not g.running:
            return False
        return g.limit == 0 or g.offered < g.limit

    @property
    def rate(self):
        """Frames per second asked for."""
        return gen_rate(self.g)

    def set_rate(self, double rate_pps, burst=None):
        """Offer ``rate_pps`` frames per second from now on (running or not);
        ``burst`` as in the constructor (default :func:`default_burst`)."""
        if not rate_pps >= 0 or rate_pps == _math.inf:
            raise ValueError(f"rate_pps must be a finite number >= 0, not {rate_pps}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        gen_set_burst(self.g, <uint64_t>(default_burst(rate_pps) if burst is None else burst))
        gen_set_rate(self.g, rate_pps)

    @property
    def burst(self):
        return self.g.burst

    def set_up(self, bint up):
        """Pass frames (True) or drop them as they arrive (``rx_dropped_down``)."""
        self.g.up = 1 if up else 0

    # -- the stack side (call rx_batch and flush with the interface's lock) ---------

    def rx_batch(self, BufferPool pool not None, uint64_t[::1] handles, uint32_t[::1] lengths):
        """Copy up to ``min(len(handles), len(lengths))`` queued frames into
        buffers of ``pool``, oldest first, without the GIL; fill the arrays
        and return how many.  The caller owns the buffers.  Frames that find
        no free buffer are taken off the ring and dropped (``rx_no_buffer``),
        frames longer than a buffer too (``rx_oversize``)."""
        self._open()
        cdef size_t n = <size_t>min(handles.shape[0], lengths.shape[0])
        if n == 0:
            return 0
        cdef size_t got
        with nogil:
            got = gen_rx_batch(self.g, pool.pool, &handles[0], &lengths[0], n)
        return got

    def flush(self):
        """Drop every queued frame (the interface went down, ``rx_dropped_down``); how many."""
        self._open()
        return gen_rx_flush(self.g)

    def queued(self):
        """Frames on the ring now."""
        return gen_rx_queued(self.g)

    def wakeup(self):
        """End every wait in progress (they return False unless frames are queued)."""
        # The count moves before the signal: a waiter seeing the signal with
        # its count unchanged knows it is a stale one.
        self.wakeups += 1
        if self.g.wake_fd >= 0:
            gen_wake(self.g)

    def wait(self, timeout=None):
        """Sleep, without the GIL, until frames are queued (True), ``timeout``
        seconds pass or :meth:`wakeup` is called (False).  Sleeps in slices
        of at most 100 ms so that signals (Ctrl-C) are seen."""
        self._open()
        cdef double deadline = 0.0
        cdef double left
        cdef int ms, rc
        cdef uint64_t seen = self.wakeups
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
            if self.g.slots == NULL:
                return False    # closed meanwhile
            with nogil:
                rc = gen_wait(self.g, ms)
            if rc == 1:
                return True
            if self.wakeups != seen:
                return False
            if rc == 2:
                gen_wake_clear(self.g)
            if timeout is not None and _time.monotonic() >= deadline:
                return False
            PyErr_CheckSignals()

    def set_routed(self, bint routed):
        """Send the interrupt to :meth:`notify_wait` (True) instead of :meth:`wait`,
        or back (False; a sleeping ``wait`` is woken if frames are queued)."""
        self._open()
        gen_set_routed(self.g, 1 if routed else 0)

    @property
    def routed(self):
        return bool(self.g.routed)

    def notify_wait(self, double timeout):
        """Sleep, without the GIL, up to ``timeout`` seconds (at most 0.1) for
        the routed interrupt; True if frames arrived (or :meth:`notify_kick`
        was called) since the last call: edge-triggered, no arrival is
        missed, some may be told twice.  False on timeout."""
        self._open()
        cdef int ms = max(0, min(_WAIT_SLICE_MS, <int>(timeout * 1000.0)))
        cdef int rc
        with nogil:
            rc = gen_notify_wait(self.g, ms)
        return rc == 1

    def notify_kick(self):
        """End a notify_wait in progress (it returns True)."""
        self._open()
        gen_notify_kick(self.g)

    def stats(self):
        """{counter: value} for every name in STAT_NAMES (docs/livelock.md).

        ``offered`` counts every frame put on the wire (including those the
        ring dropped); ``elapsed_ns`` the time from the first to the latest
        offer, so ``offered * 1e9 / elapsed_ns`` is the rate achieved."""
        cdef gen_t *g = self.g
        cdef uint64_t offered = __atomic_load_n(&g.offered, __ATOMIC_RELAXED)
        cdef uint64_t start = __atomic_load_n(&g.start_ns, __ATOMIC_RELAXED)
        cdef uint64_t end = __atomic_load_n(&g.end_ns, __ATOMIC_RELAXED)
        return {
            "offered": offered,
            "rx_ring_full": __atomic_load_n(&g.ring_full, __ATOMIC_RELAXED),
            "rx_dropped_down": __atomic_load_n(&g.dropped_down, __ATOMIC_RELAXED) + g.rx_flushed_down,
            "interrupts": __atomic_load_n(&g.interrupts, __ATOMIC_RELAXED),
            "notifies": __atomic_load_n(&g.notifies, __ATOMIC_RELAXED),
            "lag_frames": __atomic_load_n(&g.lag_frames, __ATOMIC_RELAXED),
            "gen_wakes": __atomic_load_n(&g.wakes, __ATOMIC_RELAXED),
            "gen_cpu_ns": __atomic_load_n(&g.cpu_ns, __ATOMIC_RELAXED),
            "elapsed_ns": end - start if end > start else 0,
            "rx_frames": g.rx_frames,
            "rx_bytes": g.rx_bytes,
            "rx_no_buffer": g.rx_no_buffer,
            "rx_oversize": g.rx_oversize,
            "rx_ring_queued": gen_rx_queued(g),
        }

    @property
    def thread_id(self):
        """The generator thread's kernel thread id (``/proc/self/task/<id>``);
        0 before the first start."""
        return __atomic_load_n(&self.g.tid, __ATOMIC_RELAXED)

    @property
    def ring_size(self):
        return self.g.size

    @property
    def closed(self):
        return self.g.slots == NULL

    def close(self):
        """Stop the thread, free the ring, close the eventfds.  Idempotent."""
        with nogil:
            gen_destroy(self.g)


def udp_checksum_update(uint16_t checksum, uint16_t old, uint16_t new):
    """The UDP checksum after a 16-bit word of the datagram went from ``old``
    to ``new`` (RFC 1624 eqn. 3); 0 (no checksum) stays 0."""
    return gen_udp_csum_update(checksum, old, new)


def spin(double seconds):
    """Spend ``seconds`` of CPU in a busy loop without the GIL (an
    application's own work in the livelock experiment, done as a C
    extension would do it, letting other Python threads run meanwhile)."""
    if not seconds > 0:
        return
    cdef uint64_t end = gen_now_ns() + <uint64_t>(seconds * 1e9)
    with nogil:
        while gen_now_ns() < end:
            pass
