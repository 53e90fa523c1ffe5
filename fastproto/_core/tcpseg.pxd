# C-level declarations of fastproto._core.tcpseg: it has none beyond its
# Python function (tcp_fields); the rows it reads are parse.pxd's parsed_t.
