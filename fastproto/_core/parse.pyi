"""Batch parsing of received Ethernet frames into a NumPy structured array."""
from enum import IntEnum, IntFlag
from typing import Iterable, Optional, Union

import numpy as np
import numpy.typing as npt

#: One 128-byte row per frame; see docs/parse.md for every field.
PARSED_DTYPE: np.dtype
#: parse_frame option bit (C level) for verify_l4
VERIFY_L4: int
#: IPv6 extension headers walked before IPV6_EXT_TOO_MANY
IPV6_MAX_EXT: int

class Status(IntEnum):
    """Why a frame was rejected (OK = 0 when it was not); a row's ``status``."""
    OK = 0
    ETH_TRUNCATED = 1
    VLAN_TRUNCATED = 2
    VLAN_TOO_MANY_TAGS = 3
    UNKNOWN_ETHERTYPE = 4
    ARP_TRUNCATED = 5
    ARP_BAD_FORMAT = 6
    ARP_BAD_OPCODE = 7
    IP_TRUNCATED = 8
    IP_BAD_VERSION = 9
    IP_BAD_IHL = 10
    IP_BAD_TOTAL_LENGTH = 11
    IP_BAD_CHECKSUM = 12
    IP_OPTION_BAD = 13
    FRAGMENT_BAD_LENGTH = 14
    IPV6_TRUNCATED = 15
    IPV6_EXT_TRUNCATED = 16
    IPV6_EXT_TOO_MANY = 17
    IPV6_HBH_NOT_FIRST = 18
    IPV6_OPTION_BAD = 19
    IPV6_OPTION_UNKNOWN = 20
    IPV6_ROUTING_UNSUPPORTED = 21
    ICMP_TRUNCATED = 22
    ICMPV6_TRUNCATED = 23
    UDP_TRUNCATED = 24
    UDP_BAD_LENGTH = 25
    UDP_ZERO_CHECKSUM = 26
    TCP_TRUNCATED = 27
    TCP_BAD_DATA_OFFSET = 28
    TCP_OPTION_BAD_LENGTH = 29
    L4_BAD_CHECKSUM = 30

class Flag(IntFlag):
    """Bits of a row's ``flags``."""
    VLAN = 1 << 0
    SVLAN = 1 << 1
    L2_MULTICAST = 1 << 2
    L2_BROADCAST = 1 << 3
    IP_OPTIONS = 1 << 4
    IP_DF = 1 << 5
    FRAGMENT = 1 << 6
    FRAG_FIRST = 1 << 7
    FRAG_LATER = 1 << 8
    FRAG_MORE = 1 << 9
    IPV6_HBH = 1 << 10
    IPV6_ROUTING = 1 << 11
    IPV6_FRAG_HDR = 1 << 12
    IPV6_DSTOPTS = 1 << 13
    IPV6_AH = 1 << 14
    L4 = 1 << 15
    L4_CSUM_OK = 1 << 16
    L4_CSUM_NONE = 1 << 17
    TCP_MSS = 1 << 18
    TCP_WSCALE = 1 << 19
    TCP_SACK_PERM = 1 << 20
    TCP_SACK = 1 << 21
    TCP_TS = 1 << 22
    TCP_OPT_IGNORED = 1 << 23
    ICMP_ECHO = 1 << 24
    NDP = 1 << 25
    L4_CSUM_DEFERRED = 1 << 26

def parse(
    frames: npt.NDArray[np.uint8],
    lengths: npt.ArrayLike,
    handles: Optional[npt.ArrayLike] = None,
    out: Optional[np.ndarray] = None,
    verify_l4: bool = False,
) -> np.ndarray:
    """Parse frame i = frames[handles[i], :lengths[i]] for each i, without the GIL.

    Returns n rows of PARSED_DTYPE (the first n rows of ``out`` when given).
    IndexError for a handle past the last row, ValueError for a length that
    is negative or longer than a row.
    """

def parse_frames(frames: Iterable[Union[bytes, bytearray, memoryview]],
                 verify_l4: bool = False) -> np.ndarray:
    """Parse each frame from a buffer of exactly its length; rows of PARSED_DTYPE."""

def status_counts(parsed: np.ndarray) -> dict[str, int]:
    """{status name: rows} for every Status, from rows or their ``status`` column."""

def _checksum(data: Union[bytes, bytearray, memoryview]) -> int: ...
