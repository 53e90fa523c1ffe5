# C-level hot TCB (src/tcb.h), for cimport by the demux and anything else that
# runs the receive path without the GIL.  See src/tcb.h for who writes which
# field when.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t


cdef extern from "tcb.h" nogil:
    enum:
        TCB_TMPL_MAX
        TCB_TCP_OFF
        TCB_C_ACKS
        TCB_C_SEGMENTS
        TCB_C_OUT_OF_ORDER
        TCB_C_FLAGS
        TCB_C_BUSY
        TCB_C_WINDOW
        TCB_C_TIMESTAMPS
        TCB_C_FRAGMENT
        TCB_C_AREA_FULL
        TCB_C_ACK_UNSENT
        TCB_NCOUNTERS

    ctypedef struct tcb_t:
        uint32_t lock
        uint32_t armed
        uint32_t rcv_nxt
        uint32_t rcv_edge
        uint32_t last_ack
        uint32_t core_ack
        uint32_t core_edge
        uint32_t core_valid
        uint32_t unacked
        uint32_t mss
        uint32_t snd_nxt
        uint32_t ts_recent
        uint32_t ts_offset
        uint32_t psum
        uint8_t ts_ok
        uint8_t wscale
        uint16_t tmpl_len
        uint32_t acks
        uint32_t ack_bytes
        uint32_t pending
        uint32_t ts_max
        uint8_t tmpl[96]

    bint tcb_trylock(tcb_t *t)
    void tcb_lock(tcb_t *t)
    void tcb_unlock(tcb_t *t)
    void tcb_disarm(tcb_t *t)
    uint32_t tcb_clock_ms()
    int32_t tcb_seq_diff(uint32_t a, uint32_t b)
    uint32_t tcb_pseudo_sum(const uint8_t *ip, uint32_t tcp_len)
    uint32_t tcb_build_ack(const tcb_t *t, uint8_t *out, uint32_t tsval)
    int tcb_segment(tcb_t *t, uint32_t seq, uint32_t ack, uint32_t tcp_flags, uint32_t plen, int has_ts,
                    uint32_t tsval, int fragment, int room, uint8_t *out, uint32_t *out_len,
                    uint64_t *cnt)
    int tcb_flush(tcb_t *t, int room, uint8_t *out, uint32_t *out_len, uint64_t *cnt)
