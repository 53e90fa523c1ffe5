"""iputils ``ping`` against the stack over a TAP device in a network namespace."""
import re

from netns import STACK_ADDR, run_json


def test_iputils_ping_gets_every_reply():
    out = run_json("""
from fastproto.phy.tap import TapInterface
from fastproto.stack import Stack

with TapInterface("fp0") as tap:
    tap.up()
    kernel_side("fp0")
    with Stack(tap, f"{STACK_ADDR}/24", mac=bytes.fromhex("020000000002")) as stack:
        text = sh("ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-s", "2000", STACK_ADDR)
        report({"text": text, "stats": stack.stats()})
""", timeout=20)
    assert re.search(r"3 packets transmitted, 3 received, 0% packet loss", out["text"]), out["text"]
    assert out["text"].count(f"2008 bytes from {STACK_ADDR}") == 3
    assert out["stats"]["icmp.echo_requests"] == 3
