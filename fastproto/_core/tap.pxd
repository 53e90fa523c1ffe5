# C-level TAP device API, for cimport by receive loops that run without the GIL.
#
#     from fastproto._core.tap cimport TapPort, tap_t, tap_rx_batch, tap_wait
#     cdef tap_t *t = &(<TapPort>port).t
#     with nogil:
#         serializer_enter(s)
#         got = tap_rx_batch(t, pool, handles, lengths, n)
#         serializer_exit(s)
#
# Call the batch functions with the interface's serializer held: they update
# t.st without atomics (one writer at a time).  Keep a reference to the
# TapPort (and the BufferPool) for as long as the pointers are used.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from fastproto._core.buffers cimport bufpool_t


cdef extern from "tap.h" nogil:
    int TAP_ETH_HLEN
    int TAP_MAX_FRAME

    ctypedef struct tap_stats_t:
        uint64_t rx_frames
        uint64_t rx_bytes
        uint64_t rx_no_buffer
        uint64_t rx_oversize
        uint64_t rx_dropped_down
        uint64_t rx_errors
        uint64_t tx_frames
        uint64_t tx_bytes
        uint64_t tx_errors
        uint64_t tx_oversize
        uint64_t tx_runt
        uint64_t tx_bad_handle
        uint64_t tx_write_failed
        uint64_t tx_dropped_down
        uint64_t rx_gso_frames
        uint64_t rx_gso_segments
        uint64_t rx_csum_completed
        uint64_t rx_vnet_truncated
        uint64_t rx_gso_bad_type
        uint64_t rx_gso_zero_size
        uint64_t rx_gso_bad_hdr_len
        uint64_t rx_csum_bad_offset
        uint64_t rx_gso_bad_headers
        uint64_t rx_gso_too_big
        uint64_t tx_gso_frames
        uint64_t tx_gso_bad
        uint64_t tx_gso_segments

    int TAP_VNET_HDR_LEN
    int TAP_OFFLOADS
    int TAP_GSO_BUF

    ctypedef struct tap_gso_t:
        uint8_t *buf
        uint32_t len, l3, l4, hlen, gso_size, next, seg, v6

    ctypedef struct tap_t:
        int fd                  # -1 when closed
        int wake_fd             # eventfd ending tap_wait early; -1 when closed
        uint32_t max_frame      # longest frame transmitted
        uint32_t vnet_hdr_len   # 0: no virtio_net_hdr (no offloads); 10 with offloads
        tap_stats_t st
        tap_gso_t gso           # receive segmentation state (offloads only)

    # control path: fd or -errno / 0 or an errno value
    int tap_open(const char *name, char *out_name)
    # offload != 0: IFF_VNET_HDR, 10-byte header, TUNSETOFFLOAD TAP_OFFLOADS
    int tap_open_vnet(const char *name, char *out_name, int offload)
    int tap_gso_init(tap_t *t)             # 0 or ENOMEM: the scratch area offloads need
    void tap_gso_free(tap_t *t)
    int tap_get_mtu(const char *name, int *mtu)
    int tap_set_mtu(const char *name, int mtu)
    int tap_get_hwaddr(const char *name, uint8_t *mac)
    int tap_set_hwaddr(const char *name, const uint8_t *mac)
    int tap_set_up(const char *name, int up)
    int tap_get_flags(const char *name, int *flags)

    int tap_wake_fd_open()                 # eventfd or -errno
    void tap_wake(const tap_t *t)          # every tap_wait in progress returns 2
    void tap_wake_clear(const tap_t *t)
    # 1 readable, 2 woken, 0 timed out, -errno
    int tap_wait(const tap_t *t, int timeout_ms)
    # one frame copied into buf: its length, 0 if none queued, -errno
    ssize_t tap_rx_copy(tap_t *t, uint8_t *buf, size_t cap)
    # drop up to max queued frames (rx_dropped_down); how many
    size_t tap_rx_drop_queued(tap_t *t, size_t max)
    # frames received into pool buffers, or -errno if the first read failed; with
    # offloads super-frames arrive as segments (some may stay pending for the next call)
    ssize_t tap_rx_batch(tap_t *t, bufpool_t *p, uint64_t *handles, uint32_t *lengths, size_t n)
    # 1 sent, 0 rejected (counted); with offloads a TCP frame > max_frame goes as GSO
    int tap_tx_one(tap_t *t, const uint8_t *frame, size_t length)
    # a TCP super-frame for the kernel to segment (mss 0: the MTU's) and checksum
    int tap_tx_gso(tap_t *t, const uint8_t *frame, size_t length, uint32_t mss)
    # segments of a pending super-frame still to be handed out
    size_t tap_gso_pending(const tap_t *t)
    size_t tap_rx_pending(tap_t *t, bufpool_t *p, uint64_t *handles, uint32_t *lengths, size_t n)
    # one virtio_net_hdr + frame from memory through the offload receive path
    size_t tap_vnet_inject(tap_t *t, bufpool_t *p, const uint8_t *pkt, size_t length,
                           uint64_t *handles, uint32_t *lengths, size_t n)
    # frames[0 .. n): how many form one coalescible TCP run (>= 1)
    size_t tap_tx_run(const uint8_t *const *frames, const size_t *lengths, size_t n)
    # a run of k >= 2 as one super-frame: k if sent, else 0
    size_t tap_tx_coalesced(tap_t *t, const uint8_t *const *frames, const size_t *lengths, size_t k)
    # with offloads, runs of one connection's segments go as super-frames
    size_t tap_tx_vec(tap_t *t, const uint8_t *const *frames, const size_t *lengths, size_t n)
    # frames sent straight from pool buffers (which stay allocated)
    size_t tap_tx_batch(tap_t *t, bufpool_t *p, const uint64_t *handles, const uint32_t *lengths,
                        size_t n)


cdef class TapPort:
    cdef tap_t t
    cdef readonly str name
    cdef int _open(self) except -1
    cdef uint64_t wakeups
    cdef bytearray _scratch
    cdef object _copy_pool     # BufferPool for rx_frames with offloads


cdef class VnetReceiver:
    cdef tap_t t
