"""The socket receive buffer (sockbuf.pyx): a plain bytearray is the oracle."""
from __future__ import annotations

import array
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from demux_rig import demux_rig
from fastproto._core.gro import coalesce, stage_segment
from fastproto._core.sockbuf import SendBuf, SockBuf

CAP = 256

# (op, size): append size bytes, read/read_into/drop/cut up to size bytes, clear
ops = st.lists(st.tuples(st.sampled_from(["append", "read", "read_into", "drop", "cut", "clear"]),
                         st.integers(0, 300)), max_size=60)


class Model:
    """A SockBuf's bytes in a bytearray, and when it must move or grow its
    allocation (head and tail kept apart the way the buffer keeps them)."""

    def __init__(self, cap: int) -> None:
        self.data = bytearray()
        self.cap = cap
        self.head = self.tail = 0
        self.compactions = self.grows = 0

    def room(self, n: int) -> None:
        if self.cap - self.tail >= n:
            return
        if len(self.data) + n <= self.cap:
            self.compactions += 1
        else:
            self.grows += 1
            self.cap = max(2 * self.cap, len(self.data) + n)
        self.head, self.tail = 0, len(self.data)

    def put(self, b: bytes) -> None:
        self.room(len(b))
        self.data += b
        self.tail += len(b)

    def take(self, n: int) -> bytes:
        out = bytes(self.data[:n])
        del self.data[:n]
        self.head += n
        if not self.data:
            self.head = self.tail = 0
        return out

    def cut(self, n: int) -> None:
        del self.data[len(self.data) - n:]
        self.tail -= n
        if not self.data:
            self.head = self.tail = 0


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(1, CAP))
def test_behaves_as_a_bytearray_fifo(seq, cap):
    buf, model = SockBuf(cap), Model(cap)
    counter = 0
    for op, n in seq:
        live = len(model.data)
        if op == "append":
            b = bytes((counter + i) & 255 for i in range(n))
            counter += n
            model.put(b)
            buf.append(b if n % 2 else memoryview(bytearray(b)))
        elif op == "read":
            assert buf.read(n) == model.take(min(n, live))
        elif op == "read_into":
            out = bytearray(n)
            k = buf.read_into(out)
            assert k == min(n, live) and bytes(out[:k]) == model.take(k)
        elif op == "drop":
            k = min(n, live)
            buf.drop(k)
            model.take(k)
        elif op == "cut":
            k = min(n, live)
            buf.cut(k)
            model.cut(k)
        else:
            buf.clear()
            model.take(live)
        assert buf.tobytes() == bytes(model.data) and len(buf) == len(model.data)
        assert bool(buf) == bool(model.data)
        assert buf.capacity == model.cap and buf.space == model.cap - len(model.data)
        assert buf.compactions == model.compactions and buf.grows == model.grows


def test_is_allocated_on_the_first_append_and_kept():
    buf = SockBuf(1000)
    assert not buf.allocated and len(buf) == 0 and buf.space == 1000 and buf.read(10) == b""
    buf.append(b"abc")
    assert buf.allocated and bytes(buf) == b"abc"
    buf.clear()
    assert buf.allocated and len(buf) == 0 and buf.space == 1000


def test_a_reader_that_keeps_up_needs_no_larger_allocation():
    buf = SockBuf(4096 + 1000)
    want = os.urandom(1 << 20)
    got = bytearray()
    for i in range(0, len(want), 1000):
        buf.append(want[i:i + 1000])
        if len(buf) > 4096:
            got += buf.read(3000)
    got += buf.read(len(buf))
    assert got == want and buf.grows == 0 and buf.compactions > 0 and buf.capacity == 5096


def test_live_bytes_beyond_the_capacity_grow_it_and_are_counted():
    buf = SockBuf(10)
    buf.append(b"0123456789")
    assert buf.grows == 0 and buf.space == 0
    buf.append(b"ab")
    assert buf.grows == 1 and buf.capacity == 20 and buf.tobytes() == b"0123456789ab"
    big = SockBuf(4)
    big.append(b"x" * 100)         # larger than twice the capacity: just what it needs
    assert big.capacity == 100 and big.grows == 1


def test_read_into_fills_any_writable_buffer():
    buf = SockBuf(64)
    buf.append(array.array("H", [1, 2, 3]))
    out = np.zeros(4, dtype=np.uint8)
    assert buf.read_into(out, 3) == 3 and bytes(out[:3]) == array.array("H", [1, 2]).tobytes()[:3]
    rest = bytearray(10)
    assert buf.read_into(memoryview(rest)[2:]) == 3 and len(buf) == 0
    assert buf.read_into(bytearray(5)) == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="capacity"):
        SockBuf(0)
    with pytest.raises(ValueError, match="capacity"):
        SockBuf(-5)
    with pytest.raises(TypeError):
        SockBuf("big")
    buf = SockBuf(16)
    buf.append(b"abcd")
    with pytest.raises(ValueError):
        buf.read(-1)
    with pytest.raises(ValueError):
        buf.read_into(bytearray(4), -1)
    with pytest.raises(ValueError, match="drop 5 of 4"):
        buf.drop(5)
    with pytest.raises(ValueError):
        buf.drop(-1)
    with pytest.raises(ValueError, match="cut 5 of 4"):
        buf.cut(5)
    with pytest.raises(TypeError):
        buf.append("text")
    with pytest.raises(BufferError):
        buf.read_into(b"read-only")
    with pytest.raises(BufferError):
        buf.append(memoryview(b"abcdef")[::2])       # not contiguous
    assert buf.tobytes() == b"abcd"                  # nothing changed on the way


# -- staging (gro.pyx checksum on copy) onto the tail -------------------------------

LOCAL, PEER = "198.18.0.2", "198.18.0.1"


def _segment(seq: int, payload: bytes) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IP(src=PEER, dst=LOCAL, flags="DF")
                 / TCP(sport=4000, dport=80, seq=seq, ack=1000, flags="A", window=500) / payload)


class Staged:
    """Three deferred-checksum segments of one flow in a pool: one chunk, and
    the first on its own (both may be staged again after unstage)."""

    def __init__(self) -> None:
        self.payloads = [os.urandom(n) for n in (300, 200, 100)]
        self.pool, self.demux, pcq = demux_rig((6, LOCAL, 80, PEER, 4000), buffers=8, capacity=8,
                                               verify_l4=True, defer_tcp_checksum=True)
        frames = [_segment(1, self.payloads[0]), _segment(301, self.payloads[1]),
                  _segment(501, self.payloads[2])]
        batch = self.pool.batch_from_frames(frames)
        self.demux.input(batch.handles, batch.lengths)
        batch.clear()
        self.handles = pcq.get_many(8)
        _, (self.chunk,) = coalesce(self.demux.rows, self.handles, self.pool.data, 65535, True)
        self.data = b"".join(self.payloads)


_STAGED: list[Staged] = []


def staged() -> Staged:
    if not _STAGED:
        _STAGED.append(Staged())
    return _STAGED[0]


@settings(max_examples=200, deadline=None)
@given(cap=st.integers(1, 1200), pre=st.integers(0, 700), read=st.integers(0, 700),
       then=st.sampled_from(["commit", "unstage", "append_after", "read_all", "clear", "copy"]),
       single=st.booleans())
def test_staging_writes_at_the_tail_and_is_taken_or_cut_back(cap, pre, read, then, single):
    s = staged()
    buf = SockBuf(cap)
    old = os.urandom(pre)
    buf.append(old)
    buf.read(read)
    model = bytearray(old[read:])
    grows, cap0 = buf.grows, buf.capacity
    if single:
        chunk = stage_segment(s.demux.rows, int(s.handles[0]), s.pool.data, buf)
        data = s.payloads[0]
    else:
        chunk = s.chunk
        assert chunk.stage_into(buf) == 3
        data = s.data
    assert chunk is not None and not chunk.committed
    assert buf.tobytes() == bytes(model) + data            # staged bytes are live ones
    assert buf.grows == grows + (len(model) + len(data) > cap0)
    if then == "commit":
        chunk.append_to(buf)             # right after them: taken as they are
        assert chunk.committed
        model += data
    elif then == "append_after":
        buf.append(b"tail")              # bytes after the staged ones: they are cut out
        model += b"tail"
    elif then == "read_all":
        assert buf.read(len(buf)) == bytes(model) + data
        model = bytearray()
    elif then == "clear":
        buf.clear()
        model = bytearray()
    elif then == "copy":
        buf.append(b"x")
        chunk.append_to(buf)             # not last any more: copied, not committed
        assert not chunk.committed
        model += b"x" + data
    chunk.unstage()
    assert buf.tobytes() == bytes(model)
    chunk.unstage()                      # a second time: nothing more
    assert buf.tobytes() == bytes(model)


def test_staging_twice_or_onto_another_kind_of_buffer_is_refused():
    s = staged()
    buf = SockBuf(64)
    buf.append(b"keep")
    assert s.chunk.stage_into(buf) == 3
    with pytest.raises(ValueError, match="already staged"):
        s.chunk.stage_into(buf)
    s.chunk.unstage()
    assert buf.tobytes() == b"keep" and buf.grows == 1
    with pytest.raises(TypeError):
        s.chunk.stage_into(bytearray())
    with pytest.raises(TypeError):
        s.chunk.append_to(bytearray())
    with pytest.raises(TypeError):
        stage_segment(s.demux.rows, int(s.handles[0]), s.pool.data, bytearray())


# -- a connection's receive buffer ---------------------------------------------------

def _connected(**cfg):
    from fastproto.proto.tcp_timers import TcpConfig
    from tcp_harness import Wire

    wire = Wire(config_b=TcpConfig(**cfg) if cfg else None)
    wire.b.listen(iss=777)
    wire.a.connect(iss=1)
    wire.run(until=lambda: wire.a.state == 4 and wire.b.state == 4, max_time=100)
    assert wire.a.state == 4 and wire.b.state == 4
    return wire


def test_a_connection_makes_its_buffer_on_first_data_and_keeps_it():
    wire = _connected(rcvbuf=100_000)
    a, b = wire.a, wire.b
    assert b._rcvbuf is None
    data = os.urandom(300_000)
    got, sent = bytearray(), 0
    while len(got) < len(data):
        sent += a.send(data[sent:sent + 65536])
        wire.run(max_time=1)
        buf = b._rcvbuf
        if buf:
            if len(got) % 2:
                got += b.recv(70_000)
            else:
                out = bytearray(50_000)
                got += out[:b.recv_into(out)]
    assert got == data
    assert buf is b._rcvbuf and buf.capacity == 100_000 + 65536 and buf.grows == 0


def test_the_buffer_goes_when_no_more_data_can_come():
    wire = _connected()
    a, b = wire.a, wire.b
    a.send(b"hello")
    wire.run(max_time=1)
    assert b._rcvbuf is not None and b.recv(10) == b"hello"
    assert b._rcvbuf is not None            # kept while the connection receives
    b.shutdown(0)                           # SHUT_RD: later data is discarded
    assert b._rcvbuf is None and b.eof
    a.send(b"more")
    wire.run(max_time=1)
    assert b._rcvbuf is None and b.counters["tcp.rcv_after_shutdown"] == 1


def test_unread_data_stays_readable_after_the_peer_closes():
    wire = _connected()
    a, b = wire.a, wire.b
    a.send(b"last words")
    a.close()
    wire.run(max_time=1)
    assert b.state_name == "CLOSE_WAIT" and b.readable and not b.eof
    assert b.recv(4) == b"last" and b._rcvbuf is not None
    assert b.recv(100) == b" words"
    assert b._rcvbuf is None and b.recv(100) == b""      # read to the FIN: freed
    b.close()
    wire.run(max_time=10)
    assert b.state_name == "CLOSED" and b._rcvbuf is None


# ---------------------------------------------------------------------------
# Send buffer: a bytearray is the oracle for the bytes, and every view taken
# must keep reading the bytes it was taken over.

send_ops = st.lists(st.tuples(st.sampled_from(["append", "drop", "view", "release", "clear"]),
                              st.integers(0, 300), st.integers(0, 300)), max_size=60)


class SendModel:
    """A SendBuf's bytes in a bytearray, and when it moves its bytes in place,
    to a new allocation (views alive) or to a larger one."""

    def __init__(self, cap: int) -> None:
        self.data = bytearray()
        self.cap = cap
        self.allocated = False
        self.head = self.tail = 0
        self.compactions = self.relocations = self.grows = 0
        self.block = 0            # which allocation (0: none yet); views hold theirs

    def append(self, data: bytes, views_alive: bool) -> None:
        n = len(data)
        if n == 0:
            return
        if not self.allocated:
            self.allocated = True
            self.cap = max(self.cap, n)
            self.block += 1
        elif self.cap - self.tail < n:
            live, cap = len(self.data), self.cap
            if live + n > self.cap:
                self.cap = max(self.cap * 2, live + n)
                self.grows += 1
            elif views_alive:
                self.relocations += 1
            else:
                self.compactions += 1
            if self.cap != cap or views_alive:
                self.block += 1
            self.head, self.tail = 0, live
        self.data += data
        self.tail += n

    def drop(self, n: int, views_alive: bool) -> None:
        del self.data[:n]
        self.head += n
        if self.head == self.tail and self.allocated and not views_alive:
            self.head = self.tail = 0


@settings(max_examples=300, deadline=None)
@given(send_ops, st.integers(1, CAP))
def test_send_buffer_behaves_as_a_bytearray_and_its_views_stay_put(seq, cap):
    buf, model = SendBuf(cap), SendModel(cap)
    views: list = []          # (view, the bytes it must keep reading, its allocation)
    stamp = 0

    def seen() -> bool:
        return any(blk == model.block for _, _, blk in views if blk)

    for op, a, b in seq:
        if op == "append":
            stamp = (stamp + 1) % 251
            data = bytes((stamp + i) % 256 for i in range(a))
            limit = b if b % 3 == 0 else len(data)
            assert buf.append(data if a % 2 else bytearray(data), limit) == min(a, limit)
            model.append(data[:limit], seen())
        elif op == "drop":
            n = min(a, len(model.data))
            buf.drop(n)
            model.drop(n, seen())
        elif op == "view":
            off = min(a, len(model.data))
            end = min(off + b, len(model.data))
            views.append((memoryview(buf)[off:end], bytes(model.data[off:end]), model.block))
        elif op == "release":
            if views:
                views.pop(a % len(views))[0].release()
        else:
            buf.clear()
            model.drop(len(model.data), seen())
        assert len(buf) == len(model.data) and bool(buf) == bool(model.data)
        assert bytes(buf) == model.data and bytes(memoryview(buf)) == model.data
        assert buf.shared == seen()
        assert all(bytes(v) == want for v, want, _ in views)
        assert (buf.compactions, buf.relocations, buf.grows) == \
            (model.compactions, model.relocations, model.grows)
        assert buf.capacity == model.cap and buf.allocated == model.allocated


def test_a_view_taken_before_a_move_reads_the_old_bytes():
    buf = SendBuf(8)
    buf.append(b"abcdefgh")
    view = memoryview(buf)[2:6]
    buf.drop(6)
    buf.append(b"ABCDEF")               # must move to the front: a view is alive
    assert buf.relocations == 1 and buf.compactions == 0
    assert bytes(buf) == b"ghABCDEF" and bytes(view) == b"cdef"
    buf.append(b"123456789")            # and grow past the capacity
    assert buf.grows == 1 and buf.capacity == 17
    assert bytes(buf) == b"ghABCDEF123456789" and bytes(view) == b"cdef"
    del view
    buf.drop(10)
    buf.append(b"x" * 9)                # no view now: moves in place
    assert buf.compactions == 1 and bytes(buf) == b"3456789" + b"x" * 9


def test_an_emptied_buffer_starts_again_at_the_front_only_when_no_view_is_alive():
    buf = SendBuf(4)
    buf.append(b"abcd")
    view = memoryview(buf)
    buf.drop(4)
    buf.append(b"wxyz")                 # (a view: a new allocation, not over "abcd")
    assert bytes(view) == b"abcd" and buf.relocations == 1
    view.release()
    buf.drop(4)
    buf.append(b"1234")                 # empty and unseen: straight at the front
    assert bytes(buf) == b"1234" and (buf.compactions, buf.relocations) == (0, 1)


def test_send_buffer_views_are_read_only_memoryviews_over_the_live_bytes():
    buf = SendBuf(64)
    assert not buf.allocated and bytes(memoryview(buf)) == b"" and not buf.allocated
    buf.append(array.array("H", [1, 2, 3]))           # any buffer: its bytes
    buf.append(np.arange(4, dtype=np.uint8), 2)
    view = memoryview(buf)
    assert type(view) is memoryview and view.readonly and view.format == "B"
    assert view.nbytes == len(buf) == 8 and view.tobytes() == array.array("H", [1, 2, 3]).tobytes() + b"\0\1"
    assert np.frombuffer(view, np.uint8).sum() == 7
    with pytest.raises(TypeError):
        view[0] = 9
    with pytest.raises(BufferError):
        SockBuf(8).read_into(buf)                      # asks for a writable buffer


def test_send_buffer_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        SendBuf(0)
    buf = SendBuf(16)
    buf.append(b"abc")
    for n in (-1, 4):
        with pytest.raises(ValueError):
            buf.drop(n)
    with pytest.raises(ValueError):
        buf.append(b"x", -1)
    with pytest.raises(TypeError):
        buf.append("text")
    with pytest.raises(BufferError):
        buf.append(memoryview(bytes(8))[::2])          # not contiguous
    assert bytes(buf) == b"abc"


def test_a_connection_makes_its_send_buffer_on_first_send_and_never_grows_it():
    wire = _connected(sndbuf=50_000, rcvbuf=30_000)
    b, a = wire.a, wire.b      # (the configured end sends)
    assert a._sndbuf is None
    data = os.urandom(400_000)
    got, sent = bytearray(), 0
    while len(got) < len(data):
        if sent < len(data):
            sent += a.send(memoryview(data)[sent:sent + 70_000])
        buf = a._sndbuf
        assert buf is not None and len(buf) <= 50_000
        wire.run(max_time=1)
        got += b.recv(1 << 20) if b.readable else b""
    assert got == data
    assert buf is a._sndbuf and buf.capacity == 100_000 and buf.grows == 0
    a.close()
    wire.run(max_time=100)
    assert a._sndbuf is None
