"""Network namespaces for tests that need Linux as the peer.

The pytest process never changes namespace: each scenario runs in a child
Python started under ``unshare -n``, so it sees a fresh network namespace
holding only ``lo`` and whatever the script creates.  The namespace goes
away with the child's last process; the child runs in its own process group,
which is killed on timeout or failure.

Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking space) and, for
IPv6, 2001:2::/48 (RFC 5180 benchmarking space) and link-local only, and
the namespace has no route anywhere else, so no traffic can leave it.

The child script starts with ``PRELUDE`` in scope:

- ``KERNEL_ADDR`` (198.18.0.1, Linux's side), ``STACK_ADDR`` (198.18.0.2,
  fastproto's side), ``PREFIX_LEN`` (24);
- ``sh(*argv)``: run a command, raise on failure;
- ``KERNEL_ADDR6`` (2001:2::1), ``STACK_ADDR6`` (2001:2::2), ``PREFIX_LEN6`` (64);
- ``kernel_side(ifname, addr=KERNEL_ADDR, ipv6=None)``: address the device and
  bring it up (IPv6 off on it so the kernel sends no MLD/NDP chatter, unless
  ``ipv6`` gives an address, e.g. ``KERNEL_ADDR6``: then it is added with
  ``nodad`` and DAD is off on the device, so nothing waits);
- ``report(obj)``: print ``obj`` as the one JSON line ``run_json`` returns;
- ``kernel_udp_socket(port)``: a Linux UDP socket bound on the kernel side,
  waiting ``TIMEOUT`` for a datagram;
- ``STACK_MAC``, ``TIMEOUT`` (3 s) and ``outcome(call)`` (what a socket call
  did: ``"ok:<len>"`` or the exception's name), for the scenarios.

Usage::

    result = run_json(f'''
    from fastproto.phy.tap import TapInterface
    with TapInterface("fp0") as tap:
        tap.up()
        kernel_side("fp0")
        ...
        report({{"rx": tap.stats()["rx_frames"]}})
    ''')
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from typing import Any

ALLOWED_NET = ipaddress.ip_network("198.18.0.0/15")
KERNEL_ADDR = "198.18.0.1"
STACK_ADDR = "198.18.0.2"
PREFIX_LEN = 24
ALLOWED_NET6 = ipaddress.ip_network("2001:2::/48")
KERNEL_ADDR6 = "2001:2::1"
STACK_ADDR6 = "2001:2::2"
PREFIX_LEN6 = 64

PRELUDE = textwrap.dedent(f"""
    import ipaddress as _ipaddress, json as _json, subprocess as _subprocess, sys as _sys
    KERNEL_ADDR = {KERNEL_ADDR!r}
    STACK_ADDR = {STACK_ADDR!r}
    PREFIX_LEN = {PREFIX_LEN}
    KERNEL_ADDR6 = {KERNEL_ADDR6!r}
    STACK_ADDR6 = {STACK_ADDR6!r}
    PREFIX_LEN6 = {PREFIX_LEN6}
    _ALLOWED = _ipaddress.ip_network({str(ALLOWED_NET)!r})
    _ALLOWED6 = _ipaddress.ip_network({str(ALLOWED_NET6)!r})

    def sh(*argv):
        return _subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def _ipv6_conf(ifname, name, value):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{{ifname}}/{{name}}", "w") as f:
                f.write(value)
        except OSError:
            pass

    def kernel_side(ifname, addr=KERNEL_ADDR, prefix_len=PREFIX_LEN, ipv6=None,
                    prefix_len6=PREFIX_LEN6):
        if _ipaddress.ip_address(addr) not in _ALLOWED:
            raise ValueError(f"{{addr}} is outside {{_ALLOWED}}")
        if ipv6 is not None and _ipaddress.ip_address(ipv6) not in _ALLOWED6:
            raise ValueError(f"{{ipv6}} is outside {{_ALLOWED6}}")
        if ipv6 is None:
            _ipv6_conf(ifname, "disable_ipv6", "1")
        else:
            # Down first: a link-local address made while the device was already
            # up would still be doing DAD; made at the next up, it skips it.
            sh("ip", "link", "set", ifname, "down")
            _ipv6_conf(ifname, "disable_ipv6", "0")
            _ipv6_conf(ifname, "accept_dad", "0")
            _ipv6_conf(ifname, "accept_ra", "0")
        sh("ip", "addr", "add", f"{{addr}}/{{prefix_len}}", "dev", ifname)
        sh("ip", "link", "set", ifname, "up")
        if ipv6 is not None:
            sh("ip", "-6", "addr", "add", f"{{ipv6}}/{{prefix_len6}}", "dev", ifname, "nodad")

    def report(obj):
        print("NETNS-REPORT " + _json.dumps(obj), flush=True)

    def kernel_udp_socket(port, addr=KERNEL_ADDR):
        '''A UDP socket of Linux's bound to ``port`` on the kernel side, waiting
        TIMEOUT for a datagram.'''
        import socket as _socket
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        s.bind((addr, port))
        s.settimeout(TIMEOUT)
        return s

    # The stack's MAC on the TAP, and how long a scenario waits for an answer (s).
    STACK_MAC = bytes.fromhex("020000000002")
    TIMEOUT = 3.0

    def outcome(call):
        '''What a socket call did: "ok:<len>", or the name of the exception it raised.'''
        try:
            got = call()
        except Exception as exc:
            return type(exc).__name__
        return "ok" if got is None else f"ok:{{len(got) if isinstance(got, bytes) else got}}"
""")

_REPORT = "NETNS-REPORT "
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def netns_available() -> bool:
    """True if this process may create network namespaces and TAP devices."""
    return shutil.which("unshare") is not None and os.path.exists("/dev/net/tun") and os.geteuid() == 0


def run_in_netns(script: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``PRELUDE + script`` with this Python in a fresh network namespace.

    Returns the CompletedProcess (text stdout/stderr).  On ``timeout``
    seconds the child's process group is killed and TimeoutError raised;
    with ``check`` a non-zero exit raises AssertionError carrying stderr.
    """
    source = PRELUDE + "\n" + textwrap.dedent(script)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [_REPO_ROOT, env.get("PYTHONPATH", "")] if p)
    proc = subprocess.Popen(["unshare", "-n", "--", sys.executable, "-c", source],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise TimeoutError(f"netns script ran over {timeout} s; stderr:\n{err}") from None
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    finally:
        # The script's own children (ip, a peer process) share its group.
        _kill_group(proc)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"netns script exited {proc.returncode}; stderr:\n{err}")
    return result


def run_json(script: str, timeout: float = 10.0) -> Any:
    """Run ``script`` as :func:`run_in_netns` does; the value it passed to ``report``."""
    result = run_in_netns(script, timeout=timeout)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith(_REPORT)]
    if len(lines) != 1:
        raise AssertionError(f"expected one report line, got {len(lines)}; stdout:\n{result.stdout}"
                             f"\nstderr:\n{result.stderr}")
    return json.loads(lines[0][len(_REPORT):])


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
