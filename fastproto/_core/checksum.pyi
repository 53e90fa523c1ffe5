"""Internet checksum (RFC 1071), checksum-while-copying, RFC 1624 update, pseudo-headers."""
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Union

import numpy.typing as npt
from typing_extensions import Buffer

#: any C-contiguous bytes-like object (NumPy's stubs declare the buffer
#: protocol only for Python >= 3.12, hence the array type beside Buffer)
BytesLike = Union[Buffer, npt.NDArray[Any]]

#: an address: an ipaddress object, text, or packed bytes (4 for IPv4, 16 for IPv6)
Address = Union[IPv4Address, IPv6Address, str, bytes, bytearray, memoryview]

def internet_checksum(data: BytesLike, initial: int = 0) -> int:
    """Complemented 16-bit one's-complement sum of data's big-endian words plus initial (0..2**32-1)."""

def partial_sum(data: BytesLike, initial: int = 0) -> int:
    """Uncomplemented sum of data's big-endian words plus initial, folded to 16 bits."""

def checksum_copy(dst: BytesLike, src: BytesLike, initial: int = 0) -> int:
    """Copy src into the start of writable dst and return internet_checksum(src, initial)."""

def checksum_update(checksum: int, old16: int, new16: int) -> int:
    """RFC 1624 eqn. 3: the checksum after a covered 16-bit word changes from old16 to new16."""

def pseudo_header_sum(src: Address, dst: Address, proto: int, length: int) -> int:
    """Partial sum (16 bits, uncomplemented) of the IPv4 or IPv6 pseudo-header."""

def _impls() -> tuple[str, ...]: ...
def _impl() -> str: ...
def _internet_checksum_impl(impl: str, data: BytesLike, initial: int = 0) -> int: ...
def _checksum_copy_impl(impl: str, dst: BytesLike, src: BytesLike, initial: int = 0) -> int: ...
