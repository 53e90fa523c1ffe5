# C-level pcbtable API, for cimport by the receive path (all nogil).
#
#     from fastproto._core.pcbtable cimport PCBTable, pcbtable, pcb_key, pcbtable_lookup
#     cdef pcbtable *t = (<PCBTable>table).table
#     with nogil:
#         if pcbtable_lookup(t, &key, &sock_id): ...
#
# Keep a reference to the PCBTable object for as long as its C table is used.
# Bucket locks are leaf locks: between pcbtable_lookup_hold and
# pcbtable_release do not block, take the GIL or look anything else up.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stddef cimport ptrdiff_t


cdef extern from "pcbtable.h" nogil:
    # return codes of insert/remove
    int PCB_OK
    int PCB_EEXIST
    int PCB_ENOENT
    int PCB_EINVAL
    int PCB_ENOMEM
    # entry kinds (pcb_key_kind) and the reasons a key is not a valid entry
    int PCB_EXACT
    int PCB_BOUND
    int PCB_ANY
    int PCB_BAD_FAMILY
    int PCB_BAD_FADDR_ONLY
    int PCB_BAD_FPORT_ONLY

    ctypedef struct sip_key:
        uint64_t k0
        uint64_t k1

    # Addresses are 16 bytes, IPv4 as ::ffff:a.b.c.d; ports and proto host order.
    # The wildcard address is the unspecified address of laddr's family.
    ctypedef struct pcb_key:
        uint8_t laddr[16]
        uint8_t faddr[16]
        uint16_t lport
        uint16_t fport
        uint8_t proto
        uint8_t pad[3]

    ctypedef struct pcb_bucket:
        pass

    ctypedef struct pcbtable:
        sip_key key

    ctypedef struct pcb_columns:
        const uint8_t *proto
        ptrdiff_t proto_stride
        const uint8_t *laddr
        ptrdiff_t laddr_stride
        const uint8_t *lport
        ptrdiff_t lport_stride
        const uint8_t *faddr
        ptrdiff_t faddr_stride
        const uint8_t *fport
        ptrdiff_t fport_stride

    pcbtable *pcbtable_create(size_t nbuckets, const uint8_t *key)
    void pcbtable_destroy(pcbtable *t)
    size_t pcbtable_count(const pcbtable *t)
    size_t pcbtable_nbuckets(const pcbtable *t)
    int pcb_key_kind(const pcb_key *k)

    # PCB_OK, PCB_EEXIST, PCB_EINVAL, PCB_ENOMEM
    int pcbtable_insert(pcbtable *t, const pcb_key *key, uint64_t value)
    # PCB_OK (removed value in *value unless NULL), PCB_ENOENT, PCB_EINVAL
    int pcbtable_remove(pcbtable *t, const pcb_key *key, uint64_t *value)
    # exact entry only, no wildcard fallback
    bint pcbtable_get(pcbtable *t, const pcb_key *key, uint64_t *value)
    # most specific match: connected, listener on laddr, listener on any
    bint pcbtable_lookup(pcbtable *t, const pcb_key *key, uint64_t *value)
    # as pcbtable_lookup, but returns the matching bucket still read-locked
    # (NULL: no match, no lock held); pair with pcbtable_release
    pcb_bucket *pcbtable_lookup_hold(pcbtable *t, const pcb_key *key, uint64_t *value)
    void pcbtable_release(pcb_bucket *b)
    # the same lookup in two steps: start hashes and prefetches the buckets,
    # finish_hold probes them (and may be repeated on one start)
    ctypedef struct pcb_lookup:
        int n
    void pcbtable_lookup_start(pcbtable *t, const pcb_key *key, pcb_lookup *l)
    pcb_bucket *pcbtable_lookup_finish_hold(const pcb_lookup *l, uint64_t *value)
    # batch forms: values[i] = value or 0, found[i] = 1/0; return the number found
    size_t pcbtable_lookup_many(pcbtable *t, const pcb_key *keys, size_t n,
                                uint64_t *values, uint8_t *found)
    size_t pcbtable_lookup_columns(pcbtable *t, const pcb_columns *c, size_t n,
                                   uint8_t *values, ptrdiff_t values_stride,
                                   uint8_t *found, ptrdiff_t found_stride)


cdef class PCBTable:
    cdef pcbtable *table
