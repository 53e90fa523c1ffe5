"""A traffic generator as an interface: frames offered at a set rate, a NIC's rx ring.

``GeneratorDevice`` is the receive side of a NIC facing a sender that never
backs off.  A thread of the compiled core (``fastproto._core.generator``),
which never holds the GIL, offers copies of one frame at ``rate_pps`` into
the device's bounded rx ring; a frame arriving at a full ring is dropped
there and counted (``rx_ring_full``), the hardware FIFO's drop, which costs
the host nothing.  ``receive_into`` copies a batch off the ring into the
stack's buffer pool (the NIC's DMA), ``wait`` sleeps for the "interrupt",
which the generator raises at most once per sleep (``interrupts``).
Frames the stack transmits are counted and discarded.  See
``docs/livelock.md``.
"""
from __future__ import annotations

import threading
from types import TracebackType
from typing import Callable, Optional, Union

import numpy as np
import numpy.typing as npt

from fastproto import BufferPool, Serializer
from fastproto._core.frames import FrameBatch
from fastproto._core.generator import MIN_FRAME, Generator
from fastproto.phy.device import DEFAULT_MTU, MIN_MTU, Device, Frames, max_frame_len
from fastproto.wire import ETH_P_IP, ethernet, ipv4, mac_bytes, udp

Frame = Union[bytes, bytearray, memoryview]

#: the default addresses of :func:`udp_frame` (RFC 2544's benchmarking range)
DEFAULT_SRC_IP = "198.18.0.1"
DEFAULT_DST_IP = "198.18.0.2"
DEFAULT_SRC_MAC = "02:00:00:00:00:01"
DEFAULT_DST_MAC = "02:00:00:00:00:02"


def udp_frame(dport: int, dst_ip: str = DEFAULT_DST_IP, dst_mac: Union[str, bytes] = DEFAULT_DST_MAC,
              src_ip: str = DEFAULT_SRC_IP, src_mac: Union[str, bytes] = DEFAULT_SRC_MAC,
              sport: int = 1024, payload: bytes = bytes(18)) -> bytes:
    """An Ethernet frame carrying one IPv4/UDP datagram, checksums filled.

    With the default 18-byte payload it is the minimum frame: 14 + 20 + 8 +
    18 = 60 bytes (64 on the wire with the FCS, IEEE 802.3)."""
    segment = udp(src_ip, dst_ip, sport, dport, payload)
    return ethernet(dst_mac, src_mac, ETH_P_IP, ipv4(src_ip, dst_ip, 17, segment))


class GeneratorDevice(Device):
    """GeneratorDevice(frame, rate_pps, ring_size=1024, *, name="gen0", mtu=1500,
    mac=None, burst=None, sport_span=1, limit=0, start=False)

    An interface whose rx ring (``ring_size`` frames) a core thread fills
    with copies of ``frame`` at ``rate_pps`` frames per second, from
    :meth:`start` until :meth:`stop` (or ``limit`` frames offered).
    ``mac`` defaults to the frame's destination address (so the stack on
    it takes the frames as its own).  ``burst``, ``sport_span``: see
    :class:`fastproto._core.generator.Generator` (a source port cycled over
    ``sport_span`` values spreads the flow as many senders would).

    ``stats()``: the RingDevice counters (``rx_frames``, ``rx_bytes``,
    ``rx_ring_full``, ``rx_dropped_down``, ``rx_no_buffer``,
    ``rx_oversize``, ``rx_ring_queued``, ``tx_frames``, ``tx_bytes``,
    ``tx_dropped_down``, ``tx_oversize``) and the generator's: ``offered``
    (every frame put on the wire), ``interrupts``, ``lag_frames`` (due but
    not offered: the thread fell behind by more than a burst),
    ``gen_wakes``, ``gen_cpu_ns`` (the generator thread's CPU time),
    ``elapsed_ns`` (first to latest offer).

    ``rx_notify(fn)`` routes the interrupt to ``fn`` (a receiver pulling
    the ring itself, the ``lrp`` model): the generator thread never takes
    the GIL, so it signals an eventfd, and a listener thread of the device
    (``<name>-irq``, started at the first routing, ended by :meth:`close`)
    calls ``fn`` without any lock held.  ``route_interrupt=False`` makes
    ``rx_notify`` refuse (return False), as a device that cannot route its
    interrupt: the puller then pulls for every model.
    """

    def __init__(self, frame: Frame, rate_pps: float, ring_size: int = 1024, *, name: str = "gen0",
                 mtu: int = DEFAULT_MTU, mac: Optional[Union[str, bytes]] = None,
                 burst: Optional[int] = None, sport_span: int = 1, limit: int = 0,
                 start: bool = False, route_interrupt: bool = True) -> None:
        if mtu < MIN_MTU:
            raise ValueError(f"mtu {mtu} is below the IPv4 minimum of {MIN_MTU}")
        frame = bytes(frame)
        if len(frame) > max_frame_len(mtu):
            raise ValueError(f"a {len(frame)}-byte frame does not fit an MTU of {mtu}")
        if len(frame) < MIN_FRAME:
            raise ValueError(f"an Ethernet frame is at least {MIN_FRAME} bytes (without FCS), "
                             f"not {len(frame)}")
        self._gen = Generator(frame, float(rate_pps), ring_size, burst, sport_span, limit)
        self.name = name
        self.mtu = mtu
        self.mac = mac_bytes(mac) if mac is not None else frame[:6]
        self.serializer = Serializer(name)
        self.ring_size = ring_size
        self._up = True
        self._tx = {"tx_frames": 0, "tx_bytes": 0, "tx_dropped_down": 0, "tx_oversize": 0}
        self._scratch: Optional[BufferPool] = None
        self.route_interrupt = route_interrupt
        self._notify_fn: Optional[Callable[[], None]] = None
        self._listener: Optional[threading.Thread] = None
        self._listener_stop = False
        if start:
            self.start()

    def __repr__(self) -> str:
        state = "up" if self._up else "down"
        return (f"<GeneratorDevice {self.name} {state} {self._gen.rate:,.0f} pps "
                f"ring {self.ring_size}>")

    # -- the generator -----------------------------------------------------------

    def start(self) -> None:
        """Start offering frames (RuntimeError if already offering)."""
        self._gen.start()

    def stop(self) -> None:
        """Stop offering and join the generator thread; queued frames stay queued."""
        self._gen.stop()

    @property
    def running(self) -> bool:
        """True while the generator thread offers frames."""
        return bool(self._gen.running)

    @property
    def rate(self) -> float:
        """Frames per second asked for."""
        return float(self._gen.rate)

    def set_rate(self, rate_pps: float, burst: Optional[int] = None) -> None:
        """Offer ``rate_pps`` frames per second from now on."""
        self._gen.set_rate(float(rate_pps), burst)

    def offered_rate(self) -> float:
        """Frames per second actually offered so far (0.0 before the first offer)."""
        s = self._gen.stats()
        return s["offered"] * 1e9 / s["elapsed_ns"] if s["elapsed_ns"] else 0.0

    @property
    def thread_id(self) -> int:
        """The generator thread's kernel thread id (0 before the first start)."""
        return int(self._gen.thread_id)

    @property
    def frame(self) -> bytes:
        """The template frame."""
        return bytes(self._gen.frame)

    # -- Device --------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._up

    def up(self) -> None:
        with self.serializer:
            self._up = True
            self._gen.set_up(True)

    def down(self) -> None:
        """Take the interface down: the ring is flushed and frames arriving
        are dropped (``rx_dropped_down``) until :meth:`up`."""
        with self.serializer:
            self._up = False
            self._gen.set_up(False)
            self._gen.flush()
        self._gen.wakeup()

    def transmit(self, frames: Frames) -> int:
        """Count and discard ``frames`` (the generator's side listens to nothing)."""
        with self.serializer:
            c = self._tx
            if not self._up:
                c["tx_dropped_down"] += len(frames)
                return 0
            limit = self.max_frame_len
            if type(frames) is FrameBatch and frames.max_len <= limit:
                frames.seal()
                c["tx_frames"] += len(frames)
                c["tx_bytes"] += frames.nbytes
                return len(frames)
            sent = 0
            for f in frames:
                if len(f) > limit:
                    c["tx_oversize"] += 1
                    continue
                sent += 1
                c["tx_bytes"] += len(f)
            c["tx_frames"] += sent
            return sent

    def receive_into(self, pool: BufferPool, handles_out: npt.NDArray[np.uint64],
                     lengths_out: npt.NDArray[np.uint32]) -> int:
        with self.serializer:
            if not self._up:
                return 0
            return int(self._gen.rx_batch(pool, handles_out, lengths_out))

    def receive(self, max_frames: int) -> list[bytes]:
        if max_frames <= 0:
            return []
        with self.serializer:
            if not self._up:
                return []
            if self._scratch is None:
                self._scratch = BufferPool(256, max(64, (len(self._gen.frame) + 63) // 64 * 64))
            pool = self._scratch
            handles = np.zeros(min(max_frames, pool.count), dtype=np.uint64)
            lengths = np.zeros(len(handles), dtype=np.uint32)
            out: list[bytes] = []
            while len(out) < max_frames:
                want = min(len(handles), max_frames - len(out))
                n = int(self._gen.rx_batch(pool, handles[:want], lengths[:want]))
                if n == 0:
                    break
                out.extend(bytes(pool.data[h, :ln]) for h, ln in zip(handles[:n].tolist(),
                                                                      lengths[:n].tolist()))
                pool.free_many(handles[:n])
            return out

    def wait(self, timeout: Optional[float] = None) -> bool:
        if not self._up:
            return False
        return bool(self._gen.wait(timeout))

    def wakeup(self) -> None:
        self._gen.wakeup()

    def rx_ready(self) -> bool:
        return bool(self._gen.queued())

    def rx_notify(self, fn: Optional[Callable[[], None]]) -> bool:
        if fn is None:
            self._notify_fn = None
            if not self._gen.closed:
                self._gen.set_routed(False)
            return True
        if not self.route_interrupt or self._gen.closed:
            return False
        self._notify_fn = fn
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name=f"{self.name}-irq",
                                              daemon=True)
            self._listener.start()
        self._gen.set_routed(True)
        return True

    def _listen(self) -> None:
        """The listener thread: the routed interrupt's handler (it calls the hook)."""
        gen = self._gen
        while not self._listener_stop:
            if gen.notify_wait(0.1):
                fn = self._notify_fn
                if fn is not None:
                    fn()

    def stats(self) -> dict[str, int]:
        out = dict(self._gen.stats())
        with self.serializer:
            out.update(self._tx)
        return out

    # -- life cycle ------------------------------------------------------------------

    def threads(self) -> list[threading.Thread]:
        """The device's Python threads still alive (the interrupt listener)."""
        t = self._listener
        return [t] if t is not None and t.is_alive() else []

    def close(self) -> None:
        """Stop the generator and listener threads and free the ring.  Idempotent."""
        self._gen.wakeup()
        if self._listener is not None:
            self._listener_stop = True
            if not self._gen.closed:
                self._gen.notify_kick()
            self._listener.join()
        with self.serializer:
            self._gen.close()

    @property
    def closed(self) -> bool:
        return bool(self._gen.closed)

    def __enter__(self) -> "GeneratorDevice":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()
