"""Receive livelock: delivered rate against offered rate, per dispatch model.

After Mogul and Ramakrishnan, "Eliminating receive livelock in an
interrupt-driven kernel" (1997), and Druschel and Banga, "Lazy receiver
processing" (1996).  For each dispatch model and each offered rate, a
:class:`~fastproto.stack.Stack` runs on a
:class:`~fastproto.phy.generator.GeneratorDevice` offering minimum-size UDP
frames (60 bytes, 64 with the FCS) to one socket, whose datagrams an
application thread receives (optionally spending ``app_cost_us`` of CPU on
each).  A point records, over a measured window: the rate offered (as the
generator achieved it), the rate the application received, the drops by
place, each thread's CPU time, an estimate of the CPU spent on packets that
were dropped later, and context switches per delivered datagram.  Over the
whole run it checks that every frame offered is accounted for.

``fastproto livelock`` runs the sweep from the command line; docs/livelock.md
has the method, the estimate and the figures.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import resource
import sys
import threading
import time
from typing import Any, Callable, Iterable, Optional, Sequence, TextIO

from fastproto._core.generator import spin
from fastproto.dispatch import MODELS
from fastproto.phy.generator import DEFAULT_DST_IP, GeneratorDevice, udp_frame

#: offered rates of the default sweep, frames per second (well below to well above saturation)
DEFAULT_RATES = (10_000, 20_000, 50_000, 100_000, 200_000, 300_000, 500_000, 700_000,
                 1_000_000, 1_500_000, 2_000_000)
#: the models that drop early (at the rx ring or the socket's PCQ, before protocol work)
EARLY_DROP_MODELS = ("kcont", "lrp", "puller")
PORT = 9
PREFIX = 24

#: the CSV's columns, in order (see docs/livelock.md for each)
COLUMNS = (
    "model", "target_pps", "offered_pps", "delivered_pps", "delivered_frac", "duration_s",
    "app_cost_us", "app_nogil", "offered", "delivered",
    "drop_rx_ring", "drop_rx_no_buffer", "drop_netisr_queue", "drop_socket_pcq",
    "drop_socket_rcvbuf", "drop_other", "lag_frames",
    "cpu_puller", "cpu_netisr", "cpu_workers", "cpu_irq", "cpu_app", "cpu_generator",
    "wasted_cpu", "wasted_cpu_frac",
    "cs_per_pkt", "vcs_per_pkt", "ivcs_per_pkt", "interrupts_per_s", "puller_wakeups_per_s",
    "total_offered", "total_delivered", "total_dropped", "in_flight_end",
)

_DROP_PLACES = ("rx_ring", "rx_no_buffer", "netisr_queue", "socket_pcq", "socket_rcvbuf")
#: demux counters that are not rejections
_DEMUX_PASSED = {"delivered", "pcq_full", "other"}


def parse_rate(text: str) -> float:
    """``"20000"``, ``"20k"``, ``"1.5M"`` -> frames per second."""
    t = text.strip().lower()
    mult = 1.0
    if t.endswith("k"):
        mult, t = 1e3, t[:-1]
    elif t.endswith("m"):
        mult, t = 1e6, t[:-1]
    value = float(t) * mult
    if not value > 0 or math.isinf(value):
        raise ValueError(f"a rate is a positive number of frames per second, not {text!r}")
    return value


class _Application(threading.Thread):
    """The receiving application: ``recv`` in a loop, then ``cost_us`` of CPU
    per datagram, holding the GIL (work in Python) or not (``nogil``: work in
    a C extension)."""

    def __init__(self, sock: Any, cost_us: float, nogil: bool = False) -> None:
        super().__init__(name="livelock-app", daemon=True)
        self.sock = sock
        self.cost = cost_us * 1e-6
        self.nogil = nogil
        self.received = 0
        self.stopping = False

    def run(self) -> None:
        recv = self.sock.recv
        cost = self.cost
        clock = time.perf_counter
        nogil = self.nogil
        while not self.stopping:
            try:
                recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received += 1
            if cost:
                if nogil:
                    spin(cost)
                    continue
                end = clock() + cost
                while clock() < end:
                    pass


def _cpu(thread: Optional[threading.Thread]) -> float:
    """CPU seconds of a live thread so far (0.0 if it is gone)."""
    if thread is None or thread.ident is None:
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, ProcessLookupError):
        return 0.0


def _task_switches(tid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of kernel thread ``tid`` of this process."""
    vol = invol = 0
    try:
        with open(f"/proc/self/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    vol = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol = int(line.split()[1])
    except OSError:
        pass
    return vol, invol


class _Snapshot:
    """Every counter a point differences: stack, device, threads' CPU, switches."""

    def __init__(self, stack: Any, dev: GeneratorDevice, app: _Application) -> None:
        self.t = time.perf_counter()
        self.stats = stack.stats()
        self.dev = dev.stats()
        self.received = app.received
        threads = stack.threads()
        self.cpu_puller = sum(_cpu(t) for t in threads if t.name.endswith("-puller"))
        self.cpu_netisr = sum(_cpu(t) for t in threads if t.name.endswith("-netisr"))
        self.cpu_workers = sum(_cpu(t) for t in threads if "-kcont-" in t.name)
        self.cpu_irq = sum(_cpu(t) for t in dev.threads())
        self.cpu_app = _cpu(app)
        self.cpu_gen = self.dev.get("gen_cpu_ns", 0) * 1e-9
        ru = resource.getrusage(resource.RUSAGE_SELF)
        gvol, ginvol = _task_switches(dev.thread_id) if dev.thread_id else (0, 0)
        # The generator stands for the NIC: its sleeps are not the host's switches.
        self.vcs = ru.ru_nvcsw - gvol
        self.ivcs = ru.ru_nivcsw - ginvol

    def drops(self) -> dict[str, int]:
        s = self.stats
        out = {p: int(s.get(f"drop.{p}", 0)) for p in _DROP_PLACES}
        other = sum(v for k, v in s.items() if k.startswith("demux.")
                    and k[6:] not in _DEMUX_PASSED)
        other += int(s.get("udp.closed_drops", 0)) + int(self.dev.get("rx_oversize", 0))
        other += int(self.dev.get("rx_dropped_down", 0))
        out["other"] = other
        return out


def _wasted_cpu(model: str, d: dict[str, float]) -> float:
    """CPU seconds spent on packets dropped later, from per-thread CPU and drop counts.

    Each thread's cost per frame is its CPU time over the frames that
    entered it; a dropped frame is charged the per-frame cost of every
    thread it went through, the one that dropped it included.  Frames
    dropped at the rx ring cost nothing (the NIC dropped them)."""
    pulled = d["pulled"]
    c_pull = d["cpu_puller"] / pulled if pulled else 0.0
    netisr_in = pulled - d["drop_netisr_queue"]
    c_netisr = d["cpu_netisr"] / netisr_in if netisr_in > 0 else 0.0
    proto_in = d["demux_delivered"]
    c_worker = d["cpu_workers"] / proto_in if proto_in > 0 else 0.0
    before_pcq = c_pull + (c_netisr if model == "netisr" else 0.0)
    before_rcvbuf = before_pcq + (c_worker if model in ("kcont", "lrp") else 0.0)
    return (d["drop_rx_no_buffer"] * c_pull + d["drop_netisr_queue"] * c_pull
            + d["drop_socket_pcq"] * before_pcq + d["drop_socket_rcvbuf"] * before_rcvbuf)


def run_point(model: str, rate: float, duration: float = 1.0, warmup: float = 0.25,
              app_cost_us: float = 0.0, ring_size: int = 1024, settle: float = 2.0,
              sport_span: int = 1024, route_interrupt: bool = True, app_nogil: bool = False,
              **stack_kwargs: Any) -> dict[str, Any]:
    """One point of the sweep: ``model`` under ``rate`` frames per second.

    The generator runs ``warmup`` seconds (queues fill), then the window of
    ``duration`` seconds is measured; then the generator stops and the
    stack is given up to ``settle`` seconds to drain, after which the
    run's totals are taken.  ``route_interrupt=False``: the device refuses
    to route its interrupt to a receiver (under ``lrp`` the puller then
    pulls every batch).  ``app_nogil``: the application's work runs without
    the GIL (as in a C extension) instead of holding it.  ``stack_kwargs`` go to
    :class:`~fastproto.stack.Stack`.  Returns one row, keyed by
    :data:`COLUMNS`."""
    from fastproto.stack import Stack

    if model not in MODELS:
        raise ValueError(f"unknown dispatch model {model!r}; one of {', '.join(MODELS)}")
    if duration <= 0:
        raise ValueError(f"duration must be > 0 seconds, not {duration}")
    frame = udp_frame(PORT, dst_ip=DEFAULT_DST_IP)
    dev = GeneratorDevice(frame, rate, ring_size, name="gen0", sport_span=sport_span,
                          route_interrupt=route_interrupt)
    try:
        with Stack(dev, f"{DEFAULT_DST_IP}/{PREFIX}", dispatch=model, **stack_kwargs) as stack:
            sock = stack.socket()
            sock.bind(("", PORT))
            sock.settimeout(0.05)
            app = _Application(sock, app_cost_us, app_nogil)
            app.start()
            try:
                dev.start()
                time.sleep(warmup)
                a = _Snapshot(stack, dev, app)
                time.sleep(duration)
                b = _Snapshot(stack, dev, app)
                dev.stop()
                in_flight = _drain(stack, dev, sock, app, settle)
                end = _Snapshot(stack, dev, app)
            finally:
                app.stopping = True
                app.join()
    finally:
        dev.close()
    row = _row(model, rate, app_cost_us, a, b, end, in_flight)
    row["app_nogil"] = int(app_nogil)
    return row


def time_to_deliver(model: str, rate: float, count: int, timeout: float = 60.0,
                    app_cost_us: float = 0.0, ring_size: int = 1024, sport_span: int = 1024,
                    **stack_kwargs: Any) -> float:
    """Seconds from the generator's start, at ``rate`` frames per second, until
    the application has received ``count`` datagrams under ``model``
    (TimeoutError after ``timeout`` s).  Everything is torn down before it
    returns."""
    from fastproto.stack import Stack

    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    dev = GeneratorDevice(udp_frame(PORT, dst_ip=DEFAULT_DST_IP), rate, ring_size, name="gen0",
                          sport_span=sport_span)
    try:
        with Stack(dev, f"{DEFAULT_DST_IP}/{PREFIX}", dispatch=model, **stack_kwargs) as stack:
            sock = stack.socket()
            sock.bind(("", PORT))
            sock.settimeout(0.05)
            app = _Application(sock, app_cost_us)
            app.start()
            try:
                t0 = time.perf_counter()
                dev.start()
                deadline = t0 + timeout
                while app.received < count:
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"{model}: {app.received} of {count} datagrams "
                                           f"in {timeout} s")
                    time.sleep(0.001)
                elapsed = time.perf_counter() - t0
            finally:
                app.stopping = True
                dev.stop()
                app.join()
    finally:
        dev.close()
    return elapsed


def probe(model: str, rates: Sequence[float], duration: float = 0.3,
          **kwargs: Any) -> tuple[float, float]:
    """(peak delivered rate, offered rate at that peak) of ``model`` over
    ``rates``, a short point each: the model's saturation, quickly."""
    p = peaks(sweep([model], rates, duration=duration, warmup=0.1, **kwargs))[model]
    return p["peak_pps"], p["saturation_pps"]


def _in_flight(stack: Any, dev: GeneratorDevice, sock: Any) -> int:
    """Frames offered and not yet delivered nor dropped: on the ring, in pool
    buffers (the netisr queue, PCQs, a batch in hand), in the socket's queue."""
    held = stack.pool.count - stack.pool.available
    return int(dev.stats()["rx_ring_queued"]) + held + int(sock.stats()["rcv_queued"])


def _drain(stack: Any, dev: GeneratorDevice, sock: Any, app: _Application, settle: float) -> int:
    """Wait (up to ``settle`` s) until nothing is in flight and the application
    has stopped receiving; what is still in flight then."""
    end = time.monotonic() + settle
    last = -1
    while True:
        left = _in_flight(stack, dev, sock)
        got = app.received
        if left == 0 and got == last:
            return 0
        if time.monotonic() >= end:
            return left
        last = got
        time.sleep(0.02)


def _row(model: str, rate: float, app_cost_us: float, a: _Snapshot, b: _Snapshot,
         end: _Snapshot, in_flight: int) -> dict[str, Any]:
    dt = b.t - a.t
    da, db = a.drops(), b.drops()
    drops = {k: db[k] - da[k] for k in db}
    offered = int(b.dev["offered"] - a.dev["offered"])
    delivered = b.received - a.received
    d: dict[str, float] = {
        "pulled": b.stats.get("ip.rx_frames", 0) - a.stats.get("ip.rx_frames", 0),
        "demux_delivered": b.stats.get("demux.delivered", 0) - a.stats.get("demux.delivered", 0),
        "cpu_puller": b.cpu_puller - a.cpu_puller,
        "cpu_netisr": b.cpu_netisr - a.cpu_netisr,
        "cpu_workers": b.cpu_workers - a.cpu_workers,
        "cpu_irq": b.cpu_irq - a.cpu_irq,
    }
    d.update({f"drop_{k}": v for k, v in drops.items()})
    wasted = _wasted_cpu(model, d)
    stack_cpu = d["cpu_puller"] + d["cpu_netisr"] + d["cpu_workers"] + d["cpu_irq"]
    vcs, ivcs = b.vcs - a.vcs, b.ivcs - a.ivcs
    per = 1.0 / delivered if delivered else float("nan")
    te = end.drops()
    total_dropped = sum(te.values())
    row: dict[str, Any] = {
        "model": model,
        "target_pps": rate,
        "offered_pps": offered / dt,
        "delivered_pps": delivered / dt,
        "delivered_frac": delivered / offered if offered else float("nan"),
        "duration_s": dt,
        "app_cost_us": app_cost_us,
        "app_nogil": 0,
        "offered": offered,
        "delivered": delivered,
        "lag_frames": int(b.dev["lag_frames"] - a.dev["lag_frames"]),
        "cpu_puller": d["cpu_puller"] / dt,
        "cpu_netisr": d["cpu_netisr"] / dt,
        "cpu_workers": d["cpu_workers"] / dt,
        "cpu_irq": d["cpu_irq"] / dt,
        "cpu_app": (b.cpu_app - a.cpu_app) / dt,
        "cpu_generator": (b.cpu_gen - a.cpu_gen) / dt,
        "wasted_cpu": wasted / dt,
        "wasted_cpu_frac": wasted / stack_cpu if stack_cpu > 0 else 0.0,
        "cs_per_pkt": (vcs + ivcs) * per,
        "vcs_per_pkt": vcs * per,
        "ivcs_per_pkt": ivcs * per,
        "interrupts_per_s": (b.dev["interrupts"] - a.dev["interrupts"]) / dt,
        "puller_wakeups_per_s": (b.stats.get("wakeup.puller", 0)
                                 - a.stats.get("wakeup.puller", 0)) / dt,
        "total_offered": int(end.dev["offered"]),
        "total_delivered": end.received,
        "total_dropped": total_dropped,
        "in_flight_end": in_flight,
    }
    for k in ("rx_ring", "rx_no_buffer", "netisr_queue", "socket_pcq", "socket_rcvbuf", "other"):
        row[f"drop_{k}"] = drops[k]
    return {c: row[c] for c in COLUMNS}


def sweep(models: Sequence[str] = MODELS, rates: Sequence[float] = DEFAULT_RATES,
          duration: float = 1.0, warmup: float = 0.25, app_cost_us: float = 0.0,
          ring_size: int = 1024, repeat: int = 1,
          progress: Optional[Callable[[int, int, dict[str, Any]], None]] = None,
          **stack_kwargs: Any) -> list[dict[str, Any]]:
    """:func:`run_point` for every model and rate (the rates in the order
    given), ``repeat`` times each; the row kept for a point is the one with
    the highest delivered rate (noise on a shared machine only lowers it).
    ``progress(done, total, row)`` is called after each point."""
    for m in models:
        if m not in MODELS:
            raise ValueError(f"unknown dispatch model {m!r}; one of {', '.join(MODELS)}")
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    rows = []
    total = len(models) * len(rates)
    for model in models:
        for rate in rates:
            best: Optional[dict[str, Any]] = None
            for _ in range(repeat):
                row = run_point(model, rate, duration, warmup, app_cost_us, ring_size,
                                **stack_kwargs)
                if best is None or row["delivered_pps"] > best["delivered_pps"]:
                    best = row
            assert best is not None
            rows.append(best)
            if progress is not None:
                progress(len(rows), total, best)
    return rows


def peaks(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per model: ``peak_pps`` (highest delivered rate), ``saturation_pps``
    (the offered rate at that peak: load beyond it is overload),
    ``last_pps`` (delivered at the highest offered rate) and ``last_frac``
    (that over the peak)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["model"], []).append(r)
    out = {}
    for model, rs in by.items():
        top = max(rs, key=lambda r: r["delivered_pps"])
        last = max(rs, key=lambda r: r["offered_pps"])
        out[model] = {"peak_pps": top["delivered_pps"], "saturation_pps": top["offered_pps"],
                      "last_pps": last["delivered_pps"],
                      "last_frac": last["delivered_pps"] / top["delivered_pps"]
                      if top["delivered_pps"] else float("nan")}
    return out


def read_csv(inp: TextIO) -> list[dict[str, Any]]:
    """Rows written by :func:`write_csv`, numbers as numbers."""
    out = []
    for r in csv.DictReader(inp):
        row: dict[str, Any] = {}
        for k, v in r.items():
            try:
                row[k] = float(v) if any(c in v for c in ".en") else int(v)
            except ValueError:
                row[k] = v
        out.append(row)
    return out


def write_csv(rows: Sequence[dict[str, Any]], out: TextIO) -> None:
    """The rows as CSV with a header of :data:`COLUMNS`."""
    w = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def plot(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> bool:
    """Delivered against offered rate per model (and the CPU share spent on
    packets dropped later) as a PNG at ``path``; False if matplotlib is
    missing (``pip install 'fastproto[plot]'``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    models = list(dict.fromkeys(r["model"] for r in rows))
    top = 0.0
    for model in models:
        rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["offered_pps"])
        x = [r["offered_pps"] / 1e3 for r in rs]
        ax.plot(x, [r["delivered_pps"] / 1e3 for r in rs], marker="o", label=model)
        ax2.plot(x, [100 * r["wasted_cpu_frac"] for r in rs], marker="o", label=model)
        top = max(top, max(x, default=0.0))
    low = min(r["offered_pps"] for r in rows) / 1e3
    # y = x drawn through many points: on a log x axis two would make a curve.
    ideal = [low * (top / low) ** (i / 50) for i in range(51)] if top > low > 0 else []
    ax.plot(ideal, ideal, color="grey", lw=0.8, ls=":", label="delivered = offered")
    ax.set_xscale("log")
    ax.set_xlabel("offered rate (k frames/s, 60-byte UDP)")
    ax.set_ylabel("delivered to the application (k datagrams/s)")
    ax.set_ylim(bottom=0, top=max(r["delivered_pps"] for r in rows) / 1e3 * 1.15)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    ax2.set_xscale("log")
    ax2.set_xlabel("offered rate (k frames/s)")
    ax2.set_ylabel("stack CPU spent on packets dropped later (%)")
    ax2.set_ylim(bottom=0)
    ax2.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the main columns (k/s rates, drops as shares of offered)."""
    head = ("model", "offered k/s", "delivered k/s", "rx_ring", "netisr_q", "pcq", "rcvbuf",
            "wasted CPU", "cs/pkt")
    lines = [head]
    for r in rows:
        off = r["offered"] or 1
        lines.append((
            r["model"], f"{r['offered_pps'] / 1e3:,.1f}", f"{r['delivered_pps'] / 1e3:,.1f}",
            f"{100 * r['drop_rx_ring'] / off:.0f}%", f"{100 * r['drop_netisr_queue'] / off:.0f}%",
            f"{100 * r['drop_socket_pcq'] / off:.0f}%", f"{100 * r['drop_socket_rcvbuf'] / off:.0f}%",
            f"{100 * r['wasted_cpu_frac']:.0f}%", f"{r['cs_per_pkt']:.3f}",
        ))
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    out = []
    for i, l in enumerate(lines):
        out.append("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(l, widths))))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


class _Progress:
    """A plain-text progress bar on a stream (one line per point when not a terminal)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int, row: dict[str, Any]) -> None:
        fill = self.width * done // total
        bar = "#" * fill + "." * (self.width - fill)
        text = (f"[{bar}] {done}/{total} {row['model']:<6} offered {row['offered_pps'] / 1e3:8,.1f} k/s"
                f"  delivered {row['delivered_pps'] / 1e3:8,.1f} k/s  ({time.monotonic() - self.t0:.0f} s)")
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done == total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``fastproto livelock`` options."""
    p.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL",
                   help=f"dispatch models (default: all: {' '.join(MODELS)})")
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in DEFAULT_RATES),
                   help="offered rates, frames/s, comma-separated; 10k and 1.5M accepted")
    p.add_argument("--duration", type=float, default=1.0, help="seconds measured per point")
    p.add_argument("--warmup", type=float, default=0.25, help="seconds before measuring")
    p.add_argument("--app-cost", type=float, default=0.0, metavar="US",
                   help="microseconds of application CPU per datagram received")
    p.add_argument("--app-nogil", action="store_true",
                   help="the application's work runs without the GIL (as in a C extension)")
    p.add_argument("--ring-size", type=int, default=1024, help="rx ring slots")
    p.add_argument("--repeat", type=int, default=1, help="runs per point; the best is kept")
    p.add_argument("--no-route", dest="route", action="store_false",
                   help="the device refuses to route its interrupt to a receiver (lrp: the puller pulls)")
    p.add_argument("--csv", default=None, help="write the rows to this CSV file")
    p.add_argument("--png", default=None, help="plot to this PNG (needs matplotlib)")


def main(args: argparse.Namespace) -> int:
    """Run the sweep the options say; print the table; write the CSV and PNG."""
    models = [m for arg in args.models for m in arg.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    try:
        rates = [parse_rate(r) for r in args.rates.split(",") if r.strip()]
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not rates or args.duration <= 0 or args.repeat < 1:
        print("need at least one rate, a duration > 0 and --repeat >= 1", file=sys.stderr)
        return 2
    rows = sweep(models, rates, args.duration, args.warmup, args.app_cost, args.ring_size,
                 args.repeat, progress=_Progress(sys.stderr), route_interrupt=args.route,
                 app_nogil=args.app_nogil)
    print(format_table(rows))
    for model, p in peaks(rows).items():
        print(f"{model}: peak {p['peak_pps'] / 1e3:,.1f} k/s at {p['saturation_pps'] / 1e3:,.1f} k/s "
              f"offered; at the highest load {p['last_pps'] / 1e3:,.1f} k/s ({100 * p['last_frac']:.0f}% "
              "of peak)")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            write_csv(rows, f)
    if args.png:
        work = " (without the GIL)" if args.app_nogil and args.app_cost else ""
        title = (f"receive livelock, {os.cpu_count()} CPUs, application {args.app_cost:g} us "
                 f"per datagram{work}")
        if not plot(rows, args.png, title):
            print("matplotlib is not installed: no PNG (pip install 'fastproto[plot]')",
                  file=sys.stderr)
    return 0
