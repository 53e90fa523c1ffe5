"""iputils ``ping`` and ``ping -6`` against the stack over a TAP device in a network namespace."""
import re

import pytest

from netns import STACK_ADDR, STACK_ADDR6, run_json


@pytest.mark.parametrize("family", ["-4", "-6"])
def test_iputils_ping_gets_every_reply(family):
    target = STACK_ADDR if family == "-4" else STACK_ADDR6
    out = run_json(f"""
from fastproto.phy.tap import TapInterface
from fastproto.stack import Stack

with TapInterface("fp0") as tap:
    tap.up()
    kernel_side("fp0", ipv6=KERNEL_ADDR6)
    with Stack(tap, f"{{STACK_ADDR}}/24", ipv6=f"{{STACK_ADDR6}}/{{PREFIX_LEN6}}",
               mac=bytes.fromhex("020000000002")) as stack:
        text = sh("ping", "{family}", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-s", "2000", {target!r})
        report({{"text": text, "stats": stack.stats()}})
""", timeout=20)
    assert re.search(r"3 packets transmitted, 3 received, 0% packet loss", out["text"]), out["text"]
    assert out["text"].count(f"2008 bytes from {target}") == 3
    echo = "icmp.echo_requests" if family == "-4" else "icmp6.in_echo"
    assert out["stats"][echo] == 3
