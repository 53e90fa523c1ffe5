# C-level traffic generator API, for cimport by receive loops that run without the GIL.
#
#     from fastproto._core.generator cimport Generator, gen_t, gen_rx_batch, gen_wait
#     cdef gen_t *g = (<Generator>gen).g
#     with nogil:
#         got = gen_rx_batch(g, pool, handles, lengths, n)
#
# gen_rx_batch and gen_rx_flush are the ring's one consumer: call them with
# the interface's serializer held.  Keep a reference to the Generator (and
# the BufferPool) for as long as the pointers are used.

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

from fastproto._core.buffers cimport bufpool_t


cdef extern from "generator.h" nogil:
    int GEN_MAX_FRAME

    ctypedef struct gen_t:
        uint8_t *slots            # NULL once destroyed
        uint32_t size             # ring slots
        uint32_t slot_len
        uint32_t frame_len        # bytes of the template frame
        int32_t sport_off         # UDP source port offset, -1: fixed
        int32_t csum_off          # UDP checksum offset, -1: none
        uint32_t sport_span
        uint16_t sport_base
        uint16_t csum_base
        uint64_t burst            # most frames offered at one wake
        uint64_t limit            # frames to offer in all (0: no limit)
        uint8_t tmpl[9216]
        uint64_t head
        uint64_t tail
        int up
        int irq_fd
        int routed
        int notify_fd
        int wake_fd
        int running
        uint64_t offered
        uint64_t ring_full
        uint64_t dropped_down
        uint64_t interrupts
        uint64_t notifies
        uint64_t lag_frames
        uint64_t wakes
        uint64_t cpu_ns
        uint64_t start_ns
        uint64_t end_ns
        uint64_t tid
        uint64_t rx_frames
        uint64_t rx_bytes
        uint64_t rx_no_buffer
        uint64_t rx_oversize
        uint64_t rx_flushed_down

    uint64_t gen_now_ns()
    uint16_t gen_udp_csum_update(uint16_t hc, uint16_t old, uint16_t new_)
    int gen_init(gen_t *g)                  # 0 or an errno value
    int gen_start(gen_t *g)                 # 0 or an errno value
    void gen_stop(gen_t *g)                 # joins the thread
    void gen_destroy(gen_t *g)
    void gen_set_rate(gen_t *g, double rate)
    double gen_rate(const gen_t *g)
    void gen_set_burst(gen_t *g, uint64_t burst)
    uint64_t gen_rx_queued(const gen_t *g)
    # frames copied into pool buffers (the consumer; serialized)
    size_t gen_rx_batch(gen_t *g, bufpool_t *p, uint64_t *handles, uint32_t *lengths, size_t n)
    uint64_t gen_rx_flush(gen_t *g)
    void gen_wake(const gen_t *g)
    void gen_wake_clear(const gen_t *g)
    # 1 frames queued, 2 woken, 0 timed out
    int gen_wait(gen_t *g, int timeout_ms)
    # the interrupt to notify_fd (1) or to gen_wait (0)
    void gen_set_routed(gen_t *g, int routed)
    # 1 routed interrupt(s) (or a kick) since the last call, 0 timed out
    int gen_notify_wait(gen_t *g, int timeout_ms)
    void gen_notify_kick(const gen_t *g)


cdef class Generator:
    cdef gen_t *g
    cdef uint64_t wakeups
    cdef readonly bytes frame
    cdef int _open(self) except -1
