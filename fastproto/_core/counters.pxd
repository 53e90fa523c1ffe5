cdef void count_add(dict counters, str name, object n) except *
