"""Sockets of a :class:`fastproto.stack.Stack`, with the semantics of Python's ``socket``.

UDP (RFC 768) sockets exist for ``AF_INET`` and ``AF_INET6`` (RFC 8200 8.1:
the checksum is mandatory), raw sockets for ``AF_INET``.  Each has an id
from its stack, a receive PCQ attached to the stack's demux (the core puts
packet handles there), a pcbtable entry ``(17, laddr, lport, faddr, fport)``
once bound, and a bounded receive queue of datagrams filled by the socket's
protocol input (which the stack's dispatch model runs).

Errors are the ones Python's socket module raises on Linux: ``BlockingIOError``
when non-blocking and nothing is queued, ``TimeoutError`` after the timeout,
``OSError(EADDRINUSE)`` on a port in use, ``ConnectionRefusedError`` on a
connected socket once an ICMP port unreachable arrived (RFC 1122 4.1.3.3),
``OSError(EMSGSIZE)`` above 65507 bytes.
"""
from __future__ import annotations

import abc
import errno
import ipaddress
import os
import socket as _pysocket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from fastproto._core.pcq import PCQ

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from fastproto.sched.continuation import Continuation
    from fastproto.stack import Stack

AF_INET = _pysocket.AF_INET
AF_INET6 = _pysocket.AF_INET6
SOCK_DGRAM = _pysocket.SOCK_DGRAM
SOCK_RAW = _pysocket.SOCK_RAW
IPPROTO_UDP = 17
SOL_SOCKET = _pysocket.SOL_SOCKET
SO_RCVBUF = _pysocket.SO_RCVBUF
SO_BROADCAST = _pysocket.SO_BROADCAST
#: Linux's SO_BUSY_POLL (asm-generic/socket.h): microseconds to spin on the
#: device for frames before sleeping in a blocking receive
SO_BUSY_POLL = getattr(_pysocket, "SO_BUSY_POLL", 46)
SHUT_RD, SHUT_WR, SHUT_RDWR = _pysocket.SHUT_RD, _pysocket.SHUT_WR, _pysocket.SHUT_RDWR

#: the largest UDP payload over IPv4: 65535 - 20 (IP header) - 8 (UDP header)
UDP_MAX_PAYLOAD = 65507
#: receive buffer bytes by default (Linux's net.core.rmem_default)
DEFAULT_RCVBUF = 212992
#: the ephemeral port range (RFC 6335 6: 49152-65535)
EPHEMERAL_PORTS = (49152, 65535)

_ANY = "0.0.0.0"
#: seconds a receiver pulling the interface sleeps at most before looking again
_PULL_SLICE = 0.05
_ANY6 = "::"
Addr = tuple[str, int]
#: the largest UDP payload over IPv6: 65535 (Payload Length) - 8 (UDP header), RFC 8200 3
UDP6_MAX_PAYLOAD = 65527


def _oserror(code: int, cls: type[OSError] = OSError) -> OSError:
    return cls(code, os.strerror(code))


def ephemeral_port(taken: Callable[[int], bool], exhausted: int) -> int:
    """A port of :data:`EPHEMERAL_PORTS` for which ``taken(port)`` is false, the
    search starting at a random one (RFC 6056 3.3.1); ``OSError(exhausted)``
    when every one is taken."""
    lo, hi = EPHEMERAL_PORTS
    span = hi - lo + 1
    start = int.from_bytes(os.urandom(2), "big") % span
    for i in range(span):
        port = lo + (start + i) % span
        if not taken(port):
            return port
    raise _oserror(exhausted)


def _address(addr: Any) -> Addr:
    """An ``(host, port)`` pair checked the way ``socket`` checks AF_INET addresses."""
    if not isinstance(addr, tuple) or len(addr) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = addr
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    if host in ("", None):
        return _ANY, port
    if host == "<broadcast>":
        return "255.255.255.255", port
    try:
        return str(ipaddress.IPv4Address(host)), port
    except (ipaddress.AddressValueError, ValueError):
        raise _pysocket.gaierror(_pysocket.EAI_NONAME, "Name or service not known") from None


def _address6(addr: Any) -> Addr:
    """``(host, port)`` of an AF_INET6 address ``(host, port[, flowinfo[, scope_id]])``,
    checked the way ``socket`` checks them.  A ``%zone`` suffix and the scope id name
    the one interface there is, so they are accepted and not kept; flowinfo is not
    sent (as on Linux without IPV6_FLOWINFO_SEND)."""
    if not isinstance(addr, tuple) or not 2 <= len(addr) <= 4:
        raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
    host, port = addr[0], addr[1]
    flowinfo = addr[2] if len(addr) > 2 else 0
    scope_id = addr[3] if len(addr) > 3 else 0
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    if not isinstance(flowinfo, int) or not 0 <= flowinfo <= 0xFFFFF:
        raise OverflowError("flowinfo must be 0-1048575.")
    if not isinstance(scope_id, int) or not 0 <= scope_id <= 0xFFFFFFFF:
        raise OverflowError("scope_id must be 0-4294967295.")
    if host in ("", None):
        return _ANY6, port
    if not isinstance(host, str):
        raise TypeError("str, bytes or bytearray expected, not " + type(host).__name__)
    try:
        return str(ipaddress.IPv6Address(host.split("%", 1)[0])), port
    except (ipaddress.AddressValueError, ValueError):
        raise _pysocket.gaierror(_pysocket.EAI_NONAME, "Name or service not known") from None


class Timeouts:
    """The timeout calls every socket shares (``_timeout``: None blocks, 0 does not,
    > 0 blocks for at most that many seconds), and the check that it is open."""

    __slots__ = ()   # so that a subclass with slots has no __dict__
    _timeout: Optional[float]
    _closed: bool

    def _check_open(self) -> None:
        if self._closed:
            raise _oserror(errno.EBADF)

    def settimeout(self, value: Optional[float]) -> None:
        """None: blocking; 0: non-blocking; > 0: blocking for at most ``value`` seconds."""
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0


class DatagramSocket(Timeouts, abc.ABC):
    """What UDP and raw sockets share: addresses, options, the receive queue."""

    family = AF_INET
    type = SOCK_DGRAM
    proto = IPPROTO_UDP
    #: the largest payload ``send`` takes, in bytes
    max_payload = UDP_MAX_PAYLOAD
    #: the section of the stack's counters this socket counts in
    _section = "udp"
    #: the counters of datagrams and of payload bytes delivered
    _delivered_keys = ("udp.delivered", "udp.delivered_bytes")
    #: the family's unspecified address (the local wildcard)
    _any = _ANY

    def __init__(self, stack: "Stack", sock_id: int) -> None:
        self.stack = stack
        self.id = sock_id
        self._laddr = _ANY
        self._lport = 0
        self._peer: Optional[Addr] = None
        self._timeout: Optional[float] = None
        self._closed = False
        self._shut_rd = False
        self._shut_wr = False
        self.rcvbuf = DEFAULT_RCVBUF
        #: the last address given to sendto and what it parsed to
        self._last_dest: Optional[tuple[Any, Addr]] = None
        #: SO_BUSY_POLL in microseconds; None: the stack's ``busy_poll``
        self.busy_poll: Optional[int] = None
        #: SO_BROADCAST: may send to a broadcast address
        self.broadcast = False
        #: the protocol input's lock: one drain of the PCQ at a time (single consumer)
        self._in_lock = threading.Lock()
        #: guards the receive queue and the pending error; readers wait on it
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._rcvq: deque[tuple[bytes, Addr]] = deque()
        self._rcv_bytes = 0
        self._waiting = 0
        self._error = 0
        self._cont: Optional["Continuation"] = None
        #: datagrams queued, and dropped because the receive buffer was full
        self.rcv_datagrams = 0
        self.rcvbuf_drops = 0
        #: times a blocked reader was woken
        self.reader_wakeups = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._laddr}:{self._lport}"
        return f"<fastproto {type(self).__name__} id={self.id} {state}>"

    # -- context manager ---------------------------------------------------------

    def __enter__(self) -> "DatagramSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses ---------------------------------------------------------------

    def bind(self, address: Any) -> None:
        """Bind to ``(host, port)``; host ``""``/``"0.0.0.0"`` is any, port 0 an ephemeral one."""
        self._check_open()
        host, port = self._parse_address(address)
        if self._bound:
            raise _oserror(errno.EINVAL)
        self._stack_bind(host, port)

    def _autobind(self) -> None:
        if not self._bound:
            self._stack_bind(self._any, 0)

    def _parse_address(self, address: Any) -> Addr:
        """``(host, port)`` of an address given to bind, connect or sendto."""
        return _address(address)

    def connect(self, address: Any) -> None:
        """Set the peer: ``send`` goes there and only its datagrams are received."""
        self._check_open()
        host, port = self._parse_address(address)
        self._check_peer_port(port)
        self._autobind()
        self._stack_connect(host, port)

    def connect_ex(self, address: Any) -> int:
        """``connect`` returning the errno instead of raising (0 on success)."""
        try:
            self.connect(address)
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno
        return 0

    def getsockname(self) -> Addr:
        self._check_open()
        return self._laddr, self._lport

    def getpeername(self) -> Addr:
        self._check_open()
        if self._peer is None:
            raise _oserror(errno.ENOTCONN)
        return self._peer

    # -- options -----------------------------------------------------------------

    def setsockopt(self, level: int, option: int, value: int) -> None:
        """``SOL_SOCKET`` options ``SO_RCVBUF`` (bytes of queued payload),
        ``SO_BROADCAST`` and ``SO_BUSY_POLL`` (microseconds >= 0, else
        ``EINVAL``); others raise ``OSError(ENOPROTOOPT)``."""
        self._check_open()
        if level == SOL_SOCKET and option == SO_RCVBUF:
            self.rcvbuf = max(int(value), 1)
            return
        if level == SOL_SOCKET and option == SO_BUSY_POLL:
            usec = int(value)
            if usec < 0:
                raise _oserror(errno.EINVAL)
            self.busy_poll = usec
            return
        if level == SOL_SOCKET and option == SO_BROADCAST:
            self.broadcast = bool(value)
            return
        raise _oserror(errno.ENOPROTOOPT)

    def getsockopt(self, level: int, option: int) -> int:
        self._check_open()
        if level == SOL_SOCKET and option == SO_RCVBUF:
            return self.rcvbuf
        if level == SOL_SOCKET and option == SO_BROADCAST:
            return int(self.broadcast)
        if level == SOL_SOCKET and option == SO_BUSY_POLL:
            return self.stack.busy_poll if self.busy_poll is None else self.busy_poll
        raise _oserror(errno.ENOPROTOOPT)

    # -- sending -----------------------------------------------------------------

    def _take_error(self) -> None:
        """Raise (and clear) the error an ICMP message left (RFC 1122 4.1.3.3)."""
        if self._error:
            with self._cv:
                code, self._error = self._error, 0
            if code:
                raise _oserror(code, ConnectionRefusedError if code == errno.ECONNREFUSED
                               else OSError)

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        """Send one datagram to ``address``; the number of bytes sent."""
        self._check_open()
        if address is None:
            address = flags_or_address
        last = self._last_dest
        if last is not None and last[0] == address and type(address) is tuple:
            # A reply loop sends to the same peer again and again: parsing the
            # address is a pure function of it, so the last answer holds.
            host, port = last[1]
        else:
            host, port = self._parse_address(address)
            self._last_dest = (address, (host, port))
        return self._send(data, host, port)

    def send(self, data: Any, flags: int = 0) -> int:
        """Send one datagram to the connected peer."""
        if self._closed:
            raise _oserror(errno.EBADF)
        peer = self._peer
        if peer is None:
            raise _oserror(errno.EDESTADDRREQ)
        return self._send(data, peer[0], peer[1])

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.send(data, flags)

    def _send(self, data: Any, host: str, port: int) -> int:
        payload = bytes(data)
        if self._shut_wr:
            raise _oserror(errno.EPIPE, BrokenPipeError)
        if len(payload) > self.max_payload:
            raise _oserror(errno.EMSGSIZE)
        self._check_send_port(port)
        if self._error:
            self._take_error()
        if not self._lport:
            self._autobind()
        self._stack_output(host, port, payload)
        return len(payload)

    # -- receiving ---------------------------------------------------------------

    def _wake_receivers(self) -> bool:
        """Wake the threads blocked in recv (the lazy receivers); True if any was."""
        with self._lock:
            if self._waiting:
                self._cv.notify_all()
                return True
        return False

    def _deliver(self, items: list[tuple[bytes, Addr]]) -> None:
        """Queue received datagrams (the protocol input's last step), dropping
        and counting what does not fit the receive buffer."""
        stack = self.stack
        with self._lock:
            if self._closed or self._shut_rd:
                self.rcvbuf_drops += len(items)
                stack._count(f"{self._section}.rcvbuf_drops", len(items))
                return
            queued = nbytes = 0
            rcvq, rcvbuf = self._rcvq, self.rcvbuf
            for data, addr in items:
                # Like Linux: a datagram is taken while the buffer is below its
                # limit, so one datagram larger than the buffer still gets in.
                if self._rcv_bytes >= rcvbuf or \
                        (rcvq and self._rcv_bytes + len(data) > rcvbuf):
                    self.rcvbuf_drops += 1
                    stack._count(f"{self._section}.rcvbuf_drops")
                    continue
                rcvq.append((data, addr))
                self._rcv_bytes += len(data)
                nbytes += len(data)
                queued += 1
            self.rcv_datagrams += queued
            if queued and self._waiting:
                self._cv.notify_all()
        if queued:
            if stack._pulling_sock is self:
                stack._rx_interrupt()
            key, bytes_key = self._delivered_keys
            with stack._count_lock:
                c = stack._c
                c[key] = c.get(key, 0) + queued
                c[bytes_key] = c.get(bytes_key, 0) + nbytes
            if stack._selecting:
                stack._readiness_changed()

    def _set_error(self, code: int) -> None:
        with self._cv:
            self._error = code
            self._cv.notify_all()
        self.stack._readiness_changed()

    def _writable(self) -> bool:
        """Whether a send would not block (a datagram socket's never does, while open)."""
        return not self._closed and not self._shut_wr

    def _readable(self) -> bool:
        return bool(self._rcvq) or bool(self._error) or self._shut_rd or self._closed

    def _dequeue(self) -> tuple[bytes, Addr]:
        """The next datagram; blocks as the timeout says.

        Under the ``lrp`` model a reader about to block first becomes the
        thread pulling the stack's interface, if no other thread does (LRP:
        receive processing in the receiver's context): it takes batches off
        the rx ring itself, runs its own socket's protocol input, and sleeps
        only until the next arrival, which the interface signals to it instead
        of to the puller thread.  It hands pulling back when it returns.
        """
        self._check_open()
        deadline = None if not self._timeout else time.monotonic() + self._timeout
        stack = self.stack
        dispatch = stack.dispatch
        lazy = dispatch.lazy_receiver
        pulling = False
        try_pull = lazy
        cont = self._cont if lazy else None
        try:
            while True:
                # Lazy receiver processing: this thread does its socket's pending
                # work.  Pending but not run here: it is running in another
                # thread, which will deliver and notify.
                busy = cont is not None and cont.pending and not dispatch.receiver_run(self)
                with self._lock:
                    if self._error:
                        code, self._error = self._error, 0
                        raise _oserror(code, ConnectionRefusedError if code == errno.ECONNREFUSED
                                       else OSError)
                    if self._rcvq:
                        data, addr = self._rcvq.popleft()
                        self._rcv_bytes -= len(data)
                        return data, addr
                    if self._shut_rd:
                        return b"", self._peer or (_ANY, 0)
                    if self._closed:
                        raise _oserror(errno.EBADF)
                    if self._timeout == 0.0:
                        raise _oserror(errno.EAGAIN, BlockingIOError)
                    if cont is not None and not busy and cont.pending:
                        # Work was scheduled after receiver_run looked, and the
                        # puller's wake-up found no waiter yet: run it now.
                        continue
                    remaining = None
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise TimeoutError("timed out")
                    if not (pulling or try_pull):
                        # Another thread pulls (or the model has the puller
                        # do it): sleep until the socket has news.
                        self._wait(remaining)
                        try_pull = lazy
                        continue
                # lrp: pull the interface rather than sleep (outside the socket's
                # lock: the protocol input run here takes it to deliver).
                if not pulling:
                    pulling = stack._pull_begin(self)
                    if not pulling:
                        try_pull = False
                        continue
                nap = _PULL_SLICE if remaining is None else min(remaining, _PULL_SLICE)
                poll = stack.busy_poll if self.busy_poll is None else self.busy_poll
                while not stack._receiver_pull(self):
                    if poll and stack._busy_poll(poll * 1e-6):
                        continue
                    # The interface's interrupt now wakes this thread.  Bounded,
                    # so that the stack's timers (which the puller thread, kept
                    # out, would run) are run here in time.  Woken by a ring:
                    # pull at once; else (time is up, or the socket has news)
                    # look again from the top.
                    if not stack._receiver_sleep(self, nap):
                        break
        finally:
            if pulling:
                stack._pull_end()

    def _wait(self, timeout: Optional[float]) -> None:
        """Sleep on the socket's condition (held) for news, up to ``timeout`` s."""
        self._waiting += 1
        try:
            if self._cv.wait(timeout):
                self.reader_wakeups += 1
                self.stack._count("wakeup.reader")
        finally:
            self._waiting -= 1

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Addr]:
        """One datagram (truncated to ``bufsize`` bytes, the rest discarded) and its source."""
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        data, addr = self._dequeue()
        return data[:bufsize], addr

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        return self._dequeue()[0][:bufsize]

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Addr]:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom_into")
        if nbytes == 0:
            nbytes = len(view)
        elif nbytes > len(view):
            raise ValueError("nbytes is greater than the length of the buffer")
        data, addr = self._dequeue()
        n = min(nbytes, len(data))
        view[:n] = data[:n]
        return n, addr

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """One datagram copied into ``buffer``; the number of bytes written."""
        return self.recvfrom_into(buffer, nbytes, flags)[0]

    # -- ending ------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        """Stop receiving (SHUT_RD), sending (SHUT_WR) or both; ENOTCONN unless connected."""
        self._check_open()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise _oserror(errno.EINVAL)
        if self._peer is None:
            raise _oserror(errno.ENOTCONN)
        with self._cv:
            if how in (SHUT_RD, SHUT_RDWR):
                self._shut_rd = True
            if how in (SHUT_WR, SHUT_RDWR):
                self._shut_wr = True
            self._cv.notify_all()
        self.stack._readiness_changed()

    def close(self) -> None:
        """Release the port and the queued packets; idempotent."""
        if self._closed:
            return
        self._stack_close()
        with self._cv:
            self._closed = True
            self._rcvq.clear()
            self._rcv_bytes = 0
            self._cv.notify_all()
        self.stack._readiness_changed()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, int]:
        """This socket's counters."""
        with self._cv:
            return {"rcv_datagrams": self.rcv_datagrams, "rcvbuf_drops": self.rcvbuf_drops,
                    "rcv_queued": len(self._rcvq), "rcv_queued_bytes": self._rcv_bytes,
                    "reader_wakeups": self.reader_wakeups}

    # -- what each kind does in its stack ------------------------------------------

    @property
    def _bound(self) -> bool:
        return bool(self._lport)

    def _check_peer_port(self, port: int) -> None:
        if port == 0:
            raise _oserror(errno.ECONNREFUSED, ConnectionRefusedError)

    def _check_send_port(self, port: int) -> None:
        if port == 0:
            raise _oserror(errno.EINVAL)

    @abc.abstractmethod
    def _stack_bind(self, host: str, port: int) -> None:
        """Take the local address in the stack's tables."""

    @abc.abstractmethod
    def _stack_connect(self, host: str, port: int) -> None:
        """Fix the peer in the stack's tables."""

    @abc.abstractmethod
    def _stack_output(self, host: str, port: int, payload: bytes) -> None:
        """Send ``payload`` to ``(host, port)`` through the stack."""

    @abc.abstractmethod
    def _stack_close(self) -> None:
        """Leave the stack's tables and free what the stack holds for the socket."""


class UDPSocket(DatagramSocket):
    """A UDP socket of ``stack``; make it with ``stack.socket(AF_INET, SOCK_DGRAM)``."""

    def __init__(self, stack: "Stack", sock_id: int, pcq: PCQ) -> None:
        super().__init__(stack, sock_id)
        #: the receive PCQ the demux puts this socket's packet handles on
        self.pcq = pcq
        #: (destination, port, next-hop MAC, header template) of the last datagram sent
        self._tx_flow: Optional[tuple[bytes, int, bytes, bytes]] = None

    def _stack_bind(self, host: str, port: int) -> None:
        self.stack._udp_bind(self, host, port)

    def _stack_connect(self, host: str, port: int) -> None:
        self.stack._udp_connect(self, host, port)

    def _stack_output(self, host: str, port: int, payload: bytes) -> None:
        self.stack._udp_output(self, host, port, payload)

    def _stack_close(self) -> None:
        self.stack._udp_close(self)

    def stats(self) -> dict[str, int]:
        out = super().stats()
        out["pcq_rejected"] = self.pcq.rejected
        return out


class RawSocket(DatagramSocket):
    """A raw IPv4 socket of protocol ``proto`` (``stack.socket(AF_INET, SOCK_RAW, proto)``).

    It receives a copy of every IPv4 datagram of its protocol addressed to the
    stack (rip_input), whole (reassembled) and header included, as Linux
    delivers them; ``bind`` and ``connect`` restrict the local and the remote
    address.  ``send``/``sendto`` take the payload: the stack adds the IPv4
    header (no IP_HDRINCL) and fragments above the MTU.  Ports are always 0.
    """

    type = SOCK_RAW
    max_payload = 65535 - 20
    _section = "raw"
    _delivered_keys = ("raw.delivered", "raw.delivered_bytes")

    def __init__(self, stack: "Stack", sock_id: int, proto: int) -> None:
        super().__init__(stack, sock_id)
        self.proto = proto
        self._is_bound = False

    @property
    def _bound(self) -> bool:
        return self._is_bound

    def _check_peer_port(self, port: int) -> None:
        pass

    def _check_send_port(self, port: int) -> None:
        pass

    def _stack_bind(self, host: str, port: int) -> None:
        self.stack._raw_bind(self, host)
        self._is_bound = True

    def _stack_connect(self, host: str, port: int) -> None:
        self.stack._raw_connect(self, host)

    def _stack_output(self, host: str, port: int, payload: bytes) -> None:
        self.stack._raw_output(self, host, payload)

    def _stack_close(self) -> None:
        self.stack._raw_close(self)


class UDP6Socket(UDPSocket):
    """A UDP socket over IPv6 (``stack.socket(AF_INET6, SOCK_DGRAM)``).

    Addresses are ``(host, port, flowinfo, scope_id)`` as Python's socket gives
    them for AF_INET6 (flowinfo 0; scope_id the interface index for link-local
    addresses, else 0); 2-tuples are accepted as input.  The checksum is always
    sent and always required (RFC 8200 8.1); datagrams above the MTU go out as
    IPv6 fragments (RFC 8200 4.5).  No IPv4-mapped addresses (no dual stack).
    """

    family = AF_INET6
    max_payload = UDP6_MAX_PAYLOAD
    _any = _ANY6

    def __init__(self, stack: "Stack", sock_id: int, pcq: PCQ) -> None:
        super().__init__(stack, sock_id, pcq)
        self._laddr = _ANY6

    def _parse_address(self, address: Any) -> Addr:
        return _address6(address)

    def getsockname(self) -> tuple[str, int, int, int]:  # type: ignore[override]
        self._check_open()
        return self.stack._sockaddr6(self._laddr, self._lport)

    def getpeername(self) -> tuple[str, int, int, int]:  # type: ignore[override]
        self._check_open()
        if self._peer is None:
            raise _oserror(errno.ENOTCONN)
        return self.stack._sockaddr6(*self._peer)

    def _stack_output(self, host: str, port: int, payload: bytes) -> None:
        self.stack._udp6_output(self, host, port, payload)



Socket = Union[UDPSocket, UDP6Socket, RawSocket]
