# C-level demux, for cimport by interfaces that pull frames without the GIL.
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from fastproto._core.buffers cimport BufferPool
from fastproto._core.parse cimport parsed_t
from fastproto._core.pcbtable cimport PCBTable
from fastproto._core.pcq cimport pcq_t
from fastproto._core.tcb cimport tcb_t


cdef class Demux:
    cdef readonly BufferPool pool
    cdef readonly PCBTable table
    cdef pcq_t **pcqs                  # socket id -> its receive PCQ (NULL: none)
    cdef list _pcq_refs                # keeps each attached PCQ object alive
    cdef uint8_t *marked               # socket id -> already on this batch's wake list
    cdef readonly Py_ssize_t max_sockets
    cdef readonly Py_ssize_t capacity  # most frames per input() call
    cdef int parse_flags
    cdef object _rows                  # the parse of each buffer's frame, by handle
    cdef parsed_t *rowp
    cdef object _woken, _other, _unmatched, _dropped
    cdef uint32_t *woken               # socket ids with new packets, once each
    cdef uint32_t *other               # batch indices: for no socket in particular
    cdef uint32_t *unmatched           # batch indices: L4 with no pcb (RST / unreachable)
    cdef uint64_t *dropped             # handles dropped this batch, freed to the pool
    cdef uint64_t *cnt                  # per reason, see counters()
    # Immediate ACKs (src/tcb.h): socket id -> its hot TCB; the ACK frames
    # built since take_acks(), TCB_TMPL_MAX bytes apart
    cdef tcb_t *tcbs
    cdef object _tcb_arr, _ack_arr, _acklen_arr
    cdef uint8_t *ackbuf
    cdef uint32_t *acklen
    cdef Py_ssize_t nacks
    cdef uint64_t *tcb_cnt
    cdef Py_ssize_t input_c(self, const uint64_t *handles, const uint32_t *lengths,
                            Py_ssize_t n, Py_ssize_t *nwoken, Py_ssize_t *nother,
                            Py_ssize_t *nunmatched) noexcept nogil
