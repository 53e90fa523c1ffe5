"""TCP sockets of a :class:`fastproto.stack.Stack`, with the semantics of Python's ``socket``.

A :class:`TCPSocket` is one of three things in its life:

- fresh: bound or not, neither listening nor connected;
- listening: a :class:`fastproto.proto.tcp_listen.Listener` answers SYNs
  (SYN queue, SYN cookies when it is full) and completed handshakes become
  child sockets waiting on the accept queue;
- connected: a :class:`fastproto.proto.tcp.TcpConnection` (the TCB) runs
  RFC 9293 for it.

Like a UDP socket it has an id, a receive PCQ the core's demux puts packet
handles on, and a pcbtable entry: ``(6, laddr, lport, None, 0)`` while
listening, ``(6, laddr, lport, faddr, fport)`` once connected (the connected
entry wins the lookup, so an accepted connection's segments reach the child,
not the listener).  The stack's dispatch model runs the socket's protocol
input (``_protocol_input``): the segments on the PCQ go, in order, to the
connection or the listener, straight from the parser's rows (no second
parse) and from the packet buffers (the connection copies the payload once,
into its receive buffer).

One lock per socket serialises everything that touches its connection: the
application's calls, protocol input, timers.  Output segments the connection
emits while the lock is held are sent as one batch when the call ends.
Timers are one continuation per socket on the stack's TCP timer queue,
moved after a call only when the connection's next deadline is earlier than
the armed time (lazy: a run that comes early re-arms for what is due then).

Errors are the ones Python's socket raises on Linux: ``ConnectionRefusedError``
(RST to our SYN), ``ConnectionResetError`` (peer abort), ``BrokenPipeError``
(write after the connection closed for sending), ``TimeoutError``,
``BlockingIOError`` (non-blocking and not ready; ``EINPROGRESS`` for a
non-blocking connect), ``OSError`` with ``EADDRINUSE``, ``EISCONN``,
``ENOTCONN``, ``EINVAL`` where Linux gives them.
"""
from __future__ import annotations

import errno
import struct
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from fastproto._core.counters import count
from fastproto._core.gro import coalesce, fold_acks, stage_segment
from fastproto._core.parse import Flag
from fastproto._core.pcq import PCQ
from fastproto._core.tcpseg import tcp_checksum_ok, tcp_fields
from fastproto.proto.tcp import (CLOSE_WAIT, CLOSED, ERROR_EXCEPTIONS, ESTABLISHED, EV_READABLE,
                                 EV_STATE, SYN_SENT, TIME_WAIT, TcpConnection)
from fastproto.proto.tcp_listen import Listener, TcpOptions
from fastproto.proto.tcp_states import RECEIVING
from fastproto.sched.continuation import Continuation
from fastproto.socket import (AF_INET, AF_INET6, SHUT_RD, SHUT_RDWR, SHUT_WR, SOL_SOCKET, Addr,
                              Timeouts, _address, _address6, _oserror)
from fastproto.wire.tcp import FIN, TcpSegment

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from fastproto.stack import Stack

import socket as _pysocket

SOCK_STREAM = _pysocket.SOCK_STREAM
IPPROTO_TCP = 6
TCP_NODELAY = _pysocket.TCP_NODELAY
SO_KEEPALIVE = _pysocket.SO_KEEPALIVE
SO_LINGER = _pysocket.SO_LINGER
SO_ERROR = _pysocket.SO_ERROR
SO_TYPE = _pysocket.SO_TYPE
SO_REUSEADDR = _pysocket.SO_REUSEADDR
SO_ACCEPTCONN = _pysocket.SO_ACCEPTCONN
_LINGER = struct.Struct("ii")
#: Linux's default somaxconn: the largest backlog listen() takes
SOMAXCONN = 4096
#: seconds a waiter sleeps at most before running pending protocol work itself
_LAZY_SLICE = 0.001
#: longest sleep of a receiver pulling the interface (the stack's timers run between)
_PULL_SLICE = 0.05

_FRESH, _LISTENING, _CONNECTED = 0, 1, 2


class TCPSocket(Timeouts):
    """A TCP socket (``SOCK_STREAM``) of ``stack``; made by ``stack.socket(family, SOCK_STREAM)``."""

    type = SOCK_STREAM
    proto = IPPROTO_TCP

    # Slots, and no queue or condition variable until one is needed: a stack
    # holds thousands of mostly idle connections (the memory each costs is in
    # docs/tcp.md).
    __slots__ = ("stack", "id", "pcq", "family", "_any", "_laddr", "_lport", "_peer", "_timeout",
                 "_mode", "_closed", "_released", "_linger", "_nodelay", "_keepalive",
                 "_reuseaddr", "_pending_error", "conn", "listener", "_accept_q", "_children",
                 "_parent", "_lock", "_cv_obj", "_in_lock", "_out", "_waiting", "_events",
                 "_timer", "_timer_due", "_cont", "_route", "_hashed", "reader_wakeups",
                 "_tcb")

    def __init__(self, stack: "Stack", sock_id: int, pcq: PCQ, family: int = AF_INET) -> None:
        self.stack = stack
        self.id = sock_id
        self.pcq = pcq
        self.family = family
        self._any = "::" if family == AF_INET6 else "0.0.0.0"
        self._laddr = self._any
        self._lport = 0
        self._peer: Optional[Addr] = None
        self._timeout: Optional[float] = None
        self._mode = _FRESH
        self._closed = False        # closed by the application
        self._released = False      # id, PCQ and pcb given back to the stack
        self._linger: Optional[int] = None
        self._nodelay = False
        self._keepalive = False
        self._reuseaddr = 0
        self._pending_error = 0     # SO_ERROR of a non-blocking connect
        self.conn: Optional[TcpConnection] = None
        self.listener: Optional[Listener] = None
        #: a listener's completed connections (made by listen(); empty before)
        self._accept_q: Any = ()
        #: children of a listener by peer address, until accepted or gone
        self._children: dict[Addr, TCPSocket] = {}
        self._parent: Optional[TCPSocket] = None
        # _lock serialises the connection (application calls, protocol input,
        # timers); _in_lock is the PCQ's one consumer, as for UDP sockets.
        self._lock = threading.RLock()
        self._cv_obj: Optional[threading.Condition] = None
        self._in_lock = self._lock
        self._out: list[Any] = []
        #: threads blocked in a call of this socket
        self._waiting = 0
        self._events = 0
        self._timer: Continuation = Continuation(TCPSocket._on_timer, self, stack.tcp.timerq)
        self._timer_due: Optional[float] = None
        # set by the stack: the dispatch model's continuation for protocol input
        self._cont: Optional[Continuation] = None
        #: times a receiver sleeping as the interface's puller was woken
        self.reader_wakeups = 0
        #: (src, dst, pseudo-header sum, sport, dport) of the connection's segments
        self._route: Any = None
        #: the pcbtable key while the socket is in the table
        self._hashed: Any = None
        #: the pure ACK frame the demux fills in, once its immediate ACKs are on
        self._tcb: Optional[bytes] = None

    def __repr__(self) -> str:
        state = self.conn.state_name if self.conn is not None else (
            "LISTEN" if self._mode == _LISTENING else "CLOSED")
        return f"<TCPSocket {self.id} {self._laddr}:{self._lport} -> {self._peer} {state}>"

    @property
    def _cv(self) -> threading.Condition:
        """The condition waiters sleep on, made by the first one (lock held:
        every wait and notify happens under ``_lock``, so it is made once)."""
        cv = self._cv_obj
        if cv is None:
            cv = self._cv_obj = threading.Condition(self._lock)
        return cv

    def __enter__(self) -> "TCPSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses ----------------------------------------------------------------

    def _addr(self, address: Any) -> Addr:
        return _address6(address) if self.family == AF_INET6 else _address(address)

    def bind(self, address: Any) -> None:
        """Bind to ``(host, port)``; port 0 picks an ephemeral port."""
        self._check_open()
        host, port = self._addr(address)
        with self._lock:
            if self._lport:
                raise _oserror(errno.EINVAL)
            self.stack.tcp.bind(self, host, port)

    def getsockname(self) -> Addr:
        return (self._laddr, self._lport) if self.family == AF_INET else \
            (self._laddr, self._lport, 0, 0)  # type: ignore[return-value]

    def getpeername(self) -> Addr:
        if self._peer is None or self.conn is None:
            raise _oserror(errno.ENOTCONN)
        return self._peer if self.family == AF_INET else (*self._peer, 0, 0)  # type: ignore[return-value]

    # -- timeouts -----------------------------------------------------------------

    def _deadline(self) -> Optional[float]:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _wait(self, ready: Any, deadline: Optional[float], looked: bool = False) -> bool:
        """Wait (lock held) until ``ready()``; False at the deadline.  A receiver
        that may do the protocol work itself (``lrp``) does it while waiting.
        ``looked``: the caller just found ``ready()`` false."""
        stack = self.stack
        dispatch = stack.dispatch
        lazy = dispatch.lazy_receiver
        monotonic = time.monotonic
        pulling = False
        try:
            while looked or not ready():
                looked = False
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if lazy:
                    # Lazy receiver processing: run our own protocol input rather
                    # than sleep until a worker does.
                    cont = self._cont
                    if cont is not None and cont.pending and dispatch.receiver_run(self):
                        continue
                    fresh = False
                    if not pulling:
                        pulling = fresh = stack._pull_begin(
                            self, _LAZY_SLICE if remaining is None else min(remaining, _LAZY_SLICE))
                    if pulling:
                        # As a datagram socket's reader does: pull the interface
                        # in this thread (our own segments' input runs here, the
                        # socket's lock is re-entrant) and sleep on the
                        # interface's interrupt with the lock released.  Just
                        # made the puller, the first look at the ring is the
                        # sleep's own (after arming the bell, so no frame is
                        # missed): a request's reply is not there yet.
                        if not fresh and stack._receiver_pull(self):
                            continue
                        nap = (_PULL_SLICE if remaining is None or remaining > _PULL_SLICE
                               else remaining)
                        saved = self._lock._release_save()
                        try:
                            stack._receiver_sleep(self, nap)
                        finally:
                            self._lock._acquire_restore(saved)
                        continue
                    remaining = _LAZY_SLICE if remaining is None else min(remaining, _LAZY_SLICE)
                self._waiting += 1
                try:
                    self._cv.wait(remaining)
                finally:
                    self._waiting -= 1
            return True
        finally:
            if pulling:
                stack._pull_end()

    def _wake_receivers(self) -> bool:
        """Wake the threads blocked on this socket (the lazy receivers); True if any was."""
        with self._lock:
            if self._waiting:
                self._cv.notify_all()
                return True
        return False

    # -- options ------------------------------------------------------------------

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        """``TCP_NODELAY``, ``SO_KEEPALIVE``, ``SO_LINGER`` (struct ``ii``),
        ``SO_REUSEADDR``; others raise ``OSError(ENOPROTOOPT)``."""
        self._check_open()
        with self._lock:
            if level == IPPROTO_TCP and option == TCP_NODELAY:
                self._nodelay = bool(value)
                if self.conn is not None:
                    self.conn.nodelay = self._nodelay
                    self._after_call()
            elif level == SOL_SOCKET and option == SO_KEEPALIVE:
                self._keepalive = bool(value)
                if self.conn is not None:
                    self.conn.set_keepalive(self._keepalive)
                    self._after_call()
            elif level == SOL_SOCKET and option == SO_LINGER:
                onoff, seconds = _LINGER.unpack(bytes(value))
                self._linger = seconds if onoff else None
            elif level == SOL_SOCKET and option == SO_REUSEADDR:
                self._reuseaddr = int(bool(value))
            else:
                raise _oserror(errno.ENOPROTOOPT)

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> Any:
        """``SO_ERROR`` (cleared by reading), ``SO_TYPE``, ``SO_ACCEPTCONN``,
        ``TCP_NODELAY``, ``SO_KEEPALIVE``, ``SO_REUSEADDR``, ``SO_LINGER``."""
        with self._lock:
            if level == SOL_SOCKET and option == SO_ERROR:
                code = self._pending_error
                self._pending_error = 0
                if not code and self.conn is not None and self.conn.error is not None:
                    code = self.conn.error
                    self.conn.error = None
                return code
            if level == SOL_SOCKET and option == SO_TYPE:
                return SOCK_STREAM
            if level == SOL_SOCKET and option == SO_ACCEPTCONN:
                return int(self._mode == _LISTENING)
            if level == IPPROTO_TCP and option == TCP_NODELAY:
                return int(self._nodelay)
            if level == SOL_SOCKET and option == SO_KEEPALIVE:
                return int(self._keepalive)
            if level == SOL_SOCKET and option == SO_REUSEADDR:
                return self._reuseaddr
            if level == SOL_SOCKET and option == SO_LINGER:
                return _LINGER.pack(int(self._linger is not None), self._linger or 0)
        raise _oserror(errno.ENOPROTOOPT)

    # -- passive open ---------------------------------------------------------------

    def listen(self, backlog: int = 128) -> None:
        """Listen for connections; ``backlog`` completed connections wait for accept()."""
        self._check_open()
        backlog = max(0, min(int(backlog), SOMAXCONN))
        with self._lock:
            if self._mode == _CONNECTED:
                raise _oserror(errno.EINVAL)
            if self._mode == _LISTENING:
                self.listener.backlog = backlog  # type: ignore[union-attr]
                return
            if not self._lport:
                self.stack.tcp.bind(self, self._any, 0)
            self.listener = self.stack.tcp.listener(self, backlog)
            self._accept_q = deque()
            self._mode = _LISTENING

    def accept(self) -> tuple["TCPSocket", Addr]:
        """The next completed connection and its peer's address."""
        self._check_open()
        with self._lock:
            if self._mode != _LISTENING:
                raise _oserror(errno.EINVAL)
            if not self._wait(lambda: bool(self._accept_q) or self._closed, self._deadline()):
                if self._timeout == 0.0:
                    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
                raise TimeoutError("timed out")
            self._check_open()
            child = self._accept_q.popleft()
            self.listener.accepted(1)  # type: ignore[union-attr]
            self._children.pop(child._peer, None)  # type: ignore[arg-type]
            child._parent = None
        return child, child.getpeername()

    def _child_from_handshake(self, record: Any, seg: Optional[TcpSegment]) -> None:
        """A handshake the listener completed: a child socket with its connection,
        on the accept queue (lock held)."""
        child = self.stack.tcp.child(self, record)
        with child._lock:
            child.conn = TcpConnection.from_handshake(record, self.stack.tcp.config(self.family),
                                                      self.stack.clock, child._out.append,
                                                      child._on_event)
            # The listener's timestamp clock, so TSvals go on from the SYN-ACK's
            # (RFC 7323 5.3: the peer's PAWS check).
            child.conn._ts_offset = self.stack.tcp.ts_offset
            child.conn.nodelay = self._nodelay
            if self._keepalive:
                child.conn.set_keepalive(True)
            child._mode = _CONNECTED
            if seg is not None:
                # Data or FIN on the handshake's final ACK belongs to the new connection.
                child.conn.input(seg)
            child._after_call()
        self._children[child._peer] = child  # type: ignore[index]
        self._accept_q.append(child)
        self._events |= EV_READABLE

    # -- active open ------------------------------------------------------------------

    def connect(self, address: Any) -> None:
        """Connect to ``(host, port)``: blocking (up to the timeout), or, non-blocking,
        start the handshake and raise ``BlockingIOError(EINPROGRESS)``."""
        code = self._connect(address)
        if code:
            if code in (errno.EINPROGRESS, errno.EALREADY):
                raise BlockingIOError(code, "Operation now in progress")
            if code == errno.ETIMEDOUT:
                raise TimeoutError("timed out")
            raise ERROR_EXCEPTIONS.get(code, OSError)(code, errno.errorcode.get(code, "error"))

    def connect_ex(self, address: Any) -> int:
        """Like connect, returning the errno (0 on success) instead of raising
        for connection errors."""
        return self._connect(address)

    def _connect(self, address: Any) -> int:
        self._check_open()
        host, port = self._addr(address)
        with self._lock:
            if self._mode == _LISTENING:
                raise _oserror(errno.EINVAL)
            started = self.conn is None
            if started:
                self.stack.tcp.connect(self, host, port)
                conn = TcpConnection(self.stack.tcp.config(self.family), self.stack.clock,
                                     self._out.append, self._on_event,
                                     (self._laddr, self._lport), (host, port))
                conn.nodelay = self._nodelay
                if self._keepalive:
                    conn.set_keepalive(True)
                self.conn = conn
                self._mode = _CONNECTED
                conn.connect(self.stack.tcp.isn_for(self._laddr, self._lport, host, port))
                self._after_call()
            elif self.conn.state >= ESTABLISHED:
                return errno.EISCONN
            conn = self.conn
            if conn.state == SYN_SENT and self._timeout == 0.0:
                # The first call starts the handshake; later ones find it going.
                return errno.EINPROGRESS if started else errno.EALREADY
            deadline = self._deadline()
            if not self._wait(lambda: conn.state != SYN_SENT, deadline):
                # Python's socket leaves the attempt undefined after a timeout: abort it.
                conn.abort()
                self._after_call()
                return errno.ETIMEDOUT
            if conn.error is not None:
                code = conn.error
                conn.error = None
                return code
            if conn.state == CLOSED:
                return errno.ECONNREFUSED
        return 0

    # -- data -------------------------------------------------------------------------

    def _connected(self) -> TcpConnection:
        self._check_open()
        if self.conn is None:
            raise _oserror(errno.ENOTCONN)
        return self.conn

    def send(self, data: Any, flags: int = 0) -> int:
        """Queue bytes for sending; how many were taken (blocking until at least one)."""
        conn = self._connected()
        with self._lock:
            if conn.state == SYN_SENT:
                if self._timeout == 0.0:
                    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
                self._wait(lambda: conn.state != SYN_SENT, self._deadline())
            deadline = self._deadline()
            while True:
                try:
                    n = conn.send(data)
                finally:
                    self._after_call()
                if n or not len(memoryview(data)):
                    return n
                self._wait_writable(conn, deadline)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send every byte of ``data`` (blocking; the timeout applies to the whole call)."""
        view = memoryview(data).cast("B") if data.__class__ is not bytes else None
        conn = self._connected()
        timeout = self._timeout
        start = time.monotonic() if timeout is not None else 0.0
        with self._lock:
            if view is None:
                # The common case first: bytes, and room for them all.
                n = conn.send(data) if data else 0
                if data:
                    self._after_call()
                if n == len(data):
                    return
                view = memoryview(data)[n:]
            deadline = None if timeout is None else start + timeout
            while len(view):
                n = conn.send(view)
                if n:
                    self._after_call()
                    view = view[n:]
                    continue
                if self._out or self._events or self._tcb is not None or conn.config.core_ack:
                    self._after_call()
                # (else the send buffer was full and the call changed nothing:
                # nothing to send, re-arm or report)
                self._wait_writable(conn, deadline)

    def _wait_writable(self, conn: TcpConnection, deadline: Optional[float]) -> None:
        """Block (lock held) until ``conn`` takes more data, fails or closes:
        BlockingIOError at once when non-blocking, TimeoutError at ``deadline``."""
        if self._timeout == 0.0:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        if not self._wait(lambda: conn.writable or conn.error is not None
                          or conn.state == CLOSED, deadline):
            raise TimeoutError("timed out")

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes; ``b""`` once the peer closed and all was read."""
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        return self._recv(TcpConnection.recv, bufsize)  # type: ignore[no-any-return]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Read up to ``nbytes`` (default: the buffer's length) into ``buffer``; how many."""
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if not len(memoryview(buffer)):
            return 0
        return self._recv(lambda c, n: c.recv_into(buffer, n), nbytes)  # type: ignore[no-any-return]

    def _recv(self, take: Any, arg: Any) -> Any:
        """``take(conn, arg)`` once the connection has something to read."""
        conn = self._connected()
        # (_deadline inline: a receive is the hot path)
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self.stack.dispatch.lazy_receiver and (len(self.pcq) or self._tcb is not None):
                self._run_input_locked()    # (with nothing queued it has nothing to do)
            # Ready: data, an error, or the end of the stream (eof covers CLOSED);
            # conn.readable spelt out, as this is looked at several times a call.
            ready = lambda: (conn._rcvbuf or conn.error is not None or conn._fin_rcvd  # noqa: E731
                             or conn._rd_shut or conn.state == CLOSED or conn.state == TIME_WAIT)
            while True:
                # (data waiting, the common case, is seen without the call)
                empty = not (conn._rcvbuf or ready())
                if not empty:
                    try:
                        return take(conn, arg)
                    except BlockingIOError:
                        pass
                    finally:
                        # A read changes the timers only by sending (a window
                        # update): with nothing sent, no event and no demux ACKs
                        # to follow the window, there is nothing to do after it.
                        if self._out or self._events or self._tcb is not None:
                            self._after_call()
                # else the connection's recv would raise BlockingIOError and change
                # nothing: no call, and nothing to send or re-arm after it.
                if conn.state == SYN_SENT and self._timeout != 0.0:
                    self._wait(lambda: conn.state != SYN_SENT, deadline)
                    continue
                if self._timeout == 0.0:
                    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
                if not self._wait(ready, deadline, empty):
                    raise TimeoutError("timed out")

    def shutdown(self, how: int) -> None:
        """``SHUT_WR`` sends a FIN after the queued data (half-close); ``SHUT_RD``
        discards what arrives from now on; ``SHUT_RDWR`` both."""
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise ValueError("how must be SHUT_RD, SHUT_WR or SHUT_RDWR")
        conn = self._connected()
        with self._lock:
            if conn.state in (CLOSED, SYN_SENT):
                raise _oserror(errno.ENOTCONN)
            conn.shutdown(how)
            self._after_call()

    def close(self) -> None:
        """Close: a graceful FIN (the connection lingers in the stack until done),
        or with ``SO_LINGER`` on and 0 seconds an abort (RST)."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
            if self._mode == _LISTENING:
                # Connections nobody accepted are reset (as Linux does).
                while self._accept_q:
                    child = self._accept_q.popleft()
                    self.listener.accepted(1)  # type: ignore[union-attr]
                    child._linger = 0
                    child._parent = None
                    child.close()
                self._children.clear()
                self._timer.cancel()
            elif self.conn is not None:
                if self._linger == 0:
                    self.conn.abort()
                else:
                    self.conn.close()
                self._after_call()
            if self._waiting:
                self._cv.notify_all()
        self._maybe_release()
        self.stack._readiness_changed()

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        """There is no kernel descriptor: -1 (use ``stack.select`` for readiness)."""
        return -1

    # -- readiness (read without the lock: select holds its own) ------------------------

    def _readable(self) -> bool:
        if self._closed:
            return True
        if self._mode == _LISTENING:
            return bool(self._accept_q)
        conn = self.conn
        if conn is None:
            return False
        # conn.readable spelt out (eof covers CLOSED): a sleeping receiver looks each time
        return bool(conn._rcvbuf) or conn.error is not None or conn.eof

    def _writable(self) -> bool:
        conn = self.conn
        if conn is None or self._closed:
            return False
        return conn.writable or conn.error is not None or (
            conn.state == CLOSED and self._mode == _CONNECTED)

    # -- protocol input (run by the dispatch model) --------------------------------------

    def _protocol_input(self) -> None:
        """tcp_input for this socket: the segments on its PCQ, in order."""
        with self._lock:
            self._run_input_locked()

    def _run_input_locked(self) -> None:
        stack = self.stack
        pool = stack.pool
        pcq = self.pcq
        if self._released:
            return
        if not len(pcq) and self._tcb is None:
            # Nothing queued (a receiver looking before it waits): nothing to
            # run, and a continuation still pending finds nothing either.
            return
        cont = self._cont
        if cont is not None and cont.pending:
            # Work done here needs no worker run later.  (Read without the
            # queue's lock: one scheduled just after the look finds the
            # segments taken, or takes newer ones itself.)
            cont.cancel()
        rows_all = stack.demux.rows
        flat = stack.tcp.pool_flat
        size = pool.size
        ran = False
        read = delivered = 0
        conn = self.conn
        if self._tcb is not None and conn is not None:
            # Last.ACK.sent counts the demux's ACKs too (RFC 7323 4.3: TS.Recent).
            got = stack.demux.tcb_acked(self.id)
            if got is not None and 0 < ((got[0] - conn._last_ack_sent) & 0xFFFFFFFF) < 0x80000000:
                conn._last_ack_sent = got[0]
        while True:
            hs = pcq.get_many(256)
            if not len(hs):
                break
            ran = True
            try:
                r, d = self._segments_input(hs, rows_all, flat, size)
                read += r
                delivered += d
            finally:
                pool.free_many(hs)
            if not len(pcq):
                # (the look get_many would take, without making an empty array)
                break
        if delivered:
            # payload bytes read per byte delivered (stack.stats())
            counters = stack.tcp.counters
            count(counters, "tcp.payload_bytes_read", read)
            count(counters, "tcp.delivered_bytes", delivered)
        if ran:
            self._after_call()

    def _segments_input(self, hs: np.ndarray, rows_all: np.ndarray, flat: memoryview,
                        size: int) -> tuple[int, int]:
        """The segments of handles ``hs``, in order, to the connection or the
        listener; ``rows_all`` are the demux's rows by handle.  Returns the
        payload bytes read (a checksum verified apart from the copy counts as
        a read of its own) and the payload bytes handed over."""
        # The fields a segment needs are read in one compiled call
        # (tcp_fields): gathering whole rows of the parser's dtype costs
        # micro-seconds per batch, a column read per field a little less each.
        conn = self.conn
        listening = self._mode == _LISTENING
        n = len(hs)
        fields: Any = None
        if n == 1 and conn is not None and not listening:
            # One common segment (request/response traffic): straight in.
            fields = tcp_fields(rows_all, hs)
            f, tflags, seq, ack, win, off, plen, sport, dport, tsval, tsecr = fields[0]
            if not f & _UNCOMMON:
                if f & _DEFERRED:
                    return self._deferred_input(conn, int(hs[0]), fields[0], None, rows_all)
                base = int(hs[0]) * size + off
                if f & _TS:
                    conn.input_fields(sport, dport, seq, ack, tflags, win,
                                      flat[base:base + plen], tsval, tsecr)
                else:
                    conn.input_fields(sport, dport, seq, ack, tflags, win,
                                      flat[base:base + plen], None, None)
                # verified by the demux, then copied by the connection
                return 2 * plen, plen
        stack = self.stack
        if (n > 1 and conn is not None and not listening and conn.snd_max != conn.snd_una
                and conn.state in _FOLDING and not conn._in_recovery and not conn._dupacks
                and conn._t_persist is None):
            # ACK coalescing (fastproto._core.gro.fold_acks): a sender takes its
            # peer's ACKs a batch at a time, and runs once per run of them.
            # (Nothing in flight, as at a receiver: no ACK could fold.)
            got = fold_acks(rows_all, hs, conn.snd_una, conn.snd_max, conn.rcv_nxt,
                            conn._ts_ok, conn.ts_recent)
            if got is not None:
                hs, folded = got
                n = len(hs)
                conn.acks_folded(folded)
                stack.tcp.count("tcp.acks_coalesced", folded)
        handles = hs.tolist()
        chunks: Any = None
        heads: Any = None
        read = delivered = 0
        if n > 1 and conn is not None and conn.config.gro and conn._ooo is None:
            # Receive coalescing: the connection runs once per run of in-order
            # segments (fastproto._core.gro), not once per segment.  Not while
            # a gap is being repaired: then each segment is ACKed on its own
            # (RFC 5681 4.2), as the sender's loss recovery expects.  Straight
            # from the demux's rows by handle (a gather of whole rows would
            # cost more than the coalescing); the fields are then read for
            # the runs' first segments only.
            heads, chunks = coalesce(rows_all, hs, stack.pool.data, 65535, True)
            merged = n - len(heads)
            if merged:
                stack.tcp.count("tcp.gro_merged_segments", merged)
                fields = tcp_fields(rows_all, hs, heads)
            else:
                heads = chunks = None     # (pure ACKs, say: nothing to merge)
        if heads is None:
            if fields is None:
                # The fields every segment needs, read in one compiled call.
                fields = tcp_fields(rows_all, hs)
            heads = range(n)
        for j, k in enumerate(heads):
            h = handles[k]
            fk = fields[j]
            f, tflags, seq, ack, win, off, plen, sport, dport, tsval, tsecr = fk
            if f & _FRAGMENT:
                # TCP in IP fragments (rare: our peers send DF): whole once reassembled.
                stack.tcp.fragment(h, rows_all[h])
                continue
            chunk = chunks[j] if chunks is not None else None
            if f & _DEFERRED or (chunk is not None and chunk.deferred):
                r, d = self._deferred_input(conn, h, fk, chunk, rows_all)
                read += r
                delivered += d
                continue
            if plen:
                # verified by the demux, then copied by the connection
                got = len(chunk) if chunk is not None else plen
                read += 2 * got
                delivered += got
            if chunk is None and not f & _RARE_OPTIONS and conn is not None and not listening:
                # The common segment: its fields straight to the connection,
                # which makes a TcpSegment only for the full processing.  (A
                # pure ACK needs no view of its buffer.)
                base = h * size + off
                payload = flat[base:base + plen] if plen else b""
                if f & _TS:
                    conn.input_fields(sport, dport, seq, ack, tflags, win, payload, tsval, tsecr)
                else:
                    conn.input_fields(sport, dport, seq, ack, tflags, win, payload, None, None)
                continue
            self._deliver(conn, listening, h, fk, chunk, rows_all)
        return read, delivered

    def _deliver(self, conn: Optional[TcpConnection], listening: bool, h: int, fk: tuple,
                 chunk: Any, rows_all: np.ndarray) -> None:
        """One segment (``chunk`` None) or chunk of fields ``fk`` to the connection
        or the listener, through a TcpSegment (options beyond timestamps, a
        chunk, a listener)."""
        f, tflags, seq, ack, win, off, plen, sport, dport, tsval, tsecr = fk
        if chunk is None:
            base = h * self.stack.pool.size + off
            seg = TcpSegment(sport, dport, seq, ack, tflags, win,
                             self.stack.tcp.pool_flat[base:base + plen])
            if f & _TS:
                seg.ts_val = tsval
                seg.ts_ecr = tsecr
        else:
            # The first segment's TSval (RFC 7323 4.3), the last one's TSecr.
            seg = TcpSegment(sport, dport, seq, ack, chunk.flags, win, chunk)
            if f & _TS:
                seg.ts_val = tsval
                seg.ts_ecr = chunk.ts_ecr
        if f & _RARE_OPTIONS:
            _options_from_row(seg, f, rows_all[h])
        if listening:
            self._listen_input(seg, rows_all[h])
        elif conn is not None:
            conn.input(seg)
        else:
            self.stack.tcp.count("tcp.no_connection_drops")

    def _deferred_input(self, conn: Optional[TcpConnection], h: int, fk: tuple, chunk: Any,
                        rows_all: np.ndarray) -> tuple[int, int]:
        """A segment (``chunk`` None) or chunk whose checksum the demux left to
        the payload copy (docs/tcp.md, "Checksum on copy"): verified before the
        connection sees any of it, so a bad one changes no state.  In the
        expected case (in order, in the window, the connection receiving) the
        payload is copied onto the receive buffer while it is verified, and the
        connection takes those bytes as they are: one read.  Otherwise it is
        verified in a pass of its own and handed over as usual.  Returns the
        payload bytes read and handed over."""
        stack = self.stack
        f, tflags, seq, ack, win, off, plen, sport, dport, tsval, tsecr = fk
        data = stack.pool.data
        nseg = chunk.segments if chunk is not None else 1
        n = len(chunk) if chunk is not None else plen
        listening = self._mode == _LISTENING
        staged = False
        if (conn is not None and not listening and conn.state in RECEIVING and not conn._rd_shut
                and seq == conn.rcv_nxt and n <= conn.rcv_wnd):
            buf = conn._rcvbuf
            if buf is None:
                buf = conn._rcvbuf_make()
            if chunk is None:
                chunk = stage_segment(rows_all, h, data, buf)
                good = 0 if chunk is None else 1
            else:
                good = chunk.stage_into(buf)
            staged = good > 0
        elif chunk is None:
            good = 1 if tcp_checksum_ok(rows_all, h, data) else 0
        else:
            good = chunk.verify()
        if good < nseg:
            # The segment that failed is counted with the demux's checksum
            # failures; coalesced ones after it are given up (the peer sends
            # them again: they are not acknowledged) and counted apart.
            stack.demux.count_bad_checksum(1)
            if nseg - good > 1:
                stack.tcp.count("tcp.bad_checksum_tail_drops", nseg - good - 1)
            if not good:
                return 0, 0
        n = len(chunk) if chunk is not None else plen
        read = n + chunk.reread if staged else 2 * n
        if staged and not f & _RARE_OPTIONS:
            try:
                if f & _TS:
                    conn.input_fields(sport, dport, seq, ack,  # type: ignore[union-attr]
                                      chunk.flags, win, chunk, tsval, chunk.ts_ecr)
                else:
                    conn.input_fields(sport, dport, seq, ack,  # type: ignore[union-attr]
                                      chunk.flags, win, chunk, None, None)
            finally:
                # Bytes the connection did not take (a duplicate, a
                # reset, ...) come back off its receive buffer.
                chunk.unstage()
        elif staged:
            try:
                self._deliver(conn, listening, h, fk, chunk, rows_all)
            finally:
                chunk.unstage()
        else:
            self._deliver(conn, listening, h, fk, chunk, rows_all)
        return read, n

    def _segment_input(self, seg: TcpSegment, src: str, dst: str) -> None:
        """One segment that did not come off the PCQ (a reassembled datagram)."""
        with self._lock:
            if self._mode == _LISTENING:
                self._listen_input(seg, None, src, dst)
            elif self.conn is not None:
                self.conn.input(seg)
            self._after_call()

    def _listen_input(self, seg: TcpSegment, row: Any, src: Optional[str] = None,
                      dst: Optional[str] = None) -> None:
        if src is None:
            src, dst = self.stack.tcp.addresses(row, self.family)
        peer = (src, seg.sport)
        child = self._children.get(peer)
        if child is not None:
            # Queued behind the handshake's final ACK before the child's pcb existed.
            with child._lock:
                if child.conn is not None:
                    child.conn.input(seg)
                child._after_call()
            return
        opts = TcpOptions(seg.mss, seg.wscale, seg.sack_permitted,
                          (seg.ts_val, seg.ts_ecr) if seg.ts_val is not None else None)
        plen = len(seg.payload)
        record = self.listener.input(src, seg.sport, dst, seg.dport, seg.seq,  # type: ignore[union-attr]
                                     seg.ack, seg.flags, seg.window, opts, plen)
        if record is not None:
            extra = seg if (plen or seg.flags & FIN) else None
            self._child_from_handshake(record, extra)

    # -- after every call into the connection ---------------------------------------------

    def _on_event(self, conn: TcpConnection, mask: int) -> None:
        self._events |= mask

    def _after_call(self) -> None:
        """Send what the call produced, re-arm the timer, wake whoever waits (lock held)."""
        out = self._out
        if out:
            # The connection holds ``self._out.append``: empty the list in place.
            items = out[:]
            out.clear()
            self.stack.tcp.output(self, items)
        conn = self.conn
        if conn is not None:
            # (a connected socket: a listener has no connection)
            if self._tcb is not None or conn.config.core_ack:
                # (without either there is nothing to arm or disarm)
                self.stack.tcp.core_ack_after_call(self)
            due = conn.next_timeout()
            if due is not None:
                armed = self._timer_due
                if armed is None or armed > due or not self._timer.pending:
                    self._arm(due)
            # Lazy timers (as BSD's): a pending run that comes too early, or
            # finds nothing due, re-arms for what is due then or stops.  So
            # a deadline that moves later (the retransmission timer's, with
            # every ACK) costs nothing, and neither does a moment with no
            # timer (all data acknowledged): disarming and re-arming would
            # schedule, and wake the timer thread, every time.
        elif self._mode == _LISTENING:
            self._arm(self.listener.next_timeout())  # type: ignore[union-attr]
        if self._events:
            events, self._events = self._events, 0
            if self._waiting:
                self._cv.notify_all()
            if events & EV_STATE and conn is not None and conn.state == CLOSED:
                self.stack.tcp.unhash(self)
                if self._closed:
                    # Closed by the application before its connection ended (the
                    # peer's last ACK came in now): the timer gives it back,
                    # outside this lock, as close() would have.
                    self._timer.schedule(0.0)
            self.stack._readiness_changed()

    def _arm(self, due: Optional[float]) -> None:
        if due is None:
            if self._timer_due is not None:
                self._timer.cancel()
                self._timer_due = None
            return
        if self._timer_due is not None and self._timer_due <= due and self._timer.pending:
            return      # an earlier run re-arms it
        self._timer_due = due
        self._timer.schedule(max(0.0, due - self.stack.clock()))

    @staticmethod
    def _on_timer(self: "TCPSocket") -> None:
        with self._lock:
            self._timer_due = None
            if self._released:
                return
            now = self.stack.clock()
            if self._mode == _LISTENING:
                self.listener.on_timer(now)  # type: ignore[union-attr]
            elif self.conn is not None:
                self.conn.on_timer(now)
            self._after_call()
        self._maybe_release()

    def _maybe_release(self) -> None:
        """Give the id, PCQ and pcb back once the application closed the socket and
        its connection is over (TIME_WAIT done, or never opened)."""
        with self._lock:
            if self._released or not self._closed:
                return
            conn = self.conn
            if conn is not None and conn.state != CLOSED:
                return
            self._released = True
            self._timer.cancel()
        self.stack.tcp.release(self)

    def stats(self) -> dict[str, int]:
        """This socket's state as numbers: queued bytes, the connection's windows."""
        conn = self.conn
        if conn is None:
            return {"accept_queue": len(self._accept_q)}
        return {"state": conn.state, "snd_una": conn.snd_una, "snd_nxt": conn.snd_nxt,
                "rcv_nxt": conn.rcv_nxt, "snd_wnd": conn.snd_wnd, "rcv_wnd": conn.rcv_wnd,
                "time_wait": int(conn.state == TIME_WAIT)}


# Plain ints: IntFlag arithmetic costs a call per segment.
#: states whose ACKs may be coalesced: synchronized, our side still sending
_FOLDING = (ESTABLISHED, CLOSE_WAIT)
_RARE_OPTIONS = int(Flag.TCP_MSS | Flag.TCP_WSCALE | Flag.TCP_SACK_PERM | Flag.TCP_SACK)
_TS = int(Flag.TCP_TS)
_FRAGMENT = int(Flag.FRAGMENT)
#: a segment that needs more than its fields: fragments, options but timestamps
_UNCOMMON = _FRAGMENT | _RARE_OPTIONS
#: a data segment whose checksum the demux left to the payload copy
_DEFERRED = int(Flag.L4_CSUM_DEFERRED)


def _options_from_row(seg: TcpSegment, f: int, row: Any) -> None:
    """The options other than timestamps the core parsed (RFC 9293 3.1, RFC 7323,
    RFC 2018) onto ``seg``."""
    if f & Flag.TCP_MSS:
        seg.mss = int(row["tcp_mss"])
    if f & Flag.TCP_WSCALE:
        seg.wscale = int(row["tcp_wscale"])
    if f & Flag.TCP_SACK_PERM:
        seg.sack_permitted = True
    if f & Flag.TCP_SACK:
        n = int(row["tcp_sack_count"])
        seg.sack_blocks = tuple((int(a), int(b)) for a, b in row["tcp_sack"][:n].tolist())


__all__ = ["TCPSocket", "SOCK_STREAM", "IPPROTO_TCP", "TCP_NODELAY", "SO_LINGER", "SO_KEEPALIVE"]
