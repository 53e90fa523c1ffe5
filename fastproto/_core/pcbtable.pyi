"""Hashed pcbtable: (proto, laddr, lport, faddr, fport) -> socket id."""
from ipaddress import IPv4Address, IPv6Address
from typing import Optional, Union

import numpy as np
import numpy.typing as npt

#: an address: packed bytes (4 or 16), text, an ipaddress object or an int (IPv4)
Address = Union[bytes, bytearray, memoryview, str, int, IPv4Address, IPv6Address]
#: an entry key as items() reports it; a wildcard faddr is None
Key = tuple[int, Union[IPv4Address, IPv6Address], int, Optional[Union[IPv4Address, IPv6Address]], int]

class PCBTable:
    """Socket table with per-bucket reader/writer locks and a keyed SipHash-1-3."""

    def __init__(self, nbuckets: int = 65536, key: Optional[bytes] = None) -> None: ...
    @property
    def nbuckets(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: tuple[int, Address, int, Optional[Address], int]) -> bool: ...
    def insert(self, proto: int, laddr: Address, lport: int, faddr: Optional[Address],
               fport: int, value: int) -> None:
        """Add an entry; OSError(EADDRINUSE) if the exact key is present, ValueError if invalid."""
    def remove(self, proto: int, laddr: Address, lport: int, faddr: Optional[Address],
               fport: int) -> int:
        """Remove the exact entry and return its value; KeyError if absent."""
    def lookup(self, proto: int, laddr: Address, lport: int, faddr: Optional[Address],
               fport: int) -> Optional[int]:
        """Most specific match: connected, listener on laddr, listener on any; else None."""
    def get_exact(self, proto: int, laddr: Address, lport: int, faddr: Optional[Address],
                  fport: int) -> Optional[int]:
        """The entry with exactly this key, without wildcard fallback; else None."""
    def items(self) -> list[tuple[Key, int]]: ...
    def lookup_batch(
        self,
        proto: npt.NDArray[np.uint8],
        laddr: npt.NDArray[np.uint8],
        lport: npt.NDArray[np.uint16],
        faddr: npt.NDArray[np.uint8],
        fport: npt.NDArray[np.uint16],
        out: Optional[npt.NDArray[np.uint64]] = None,
        found: Optional[npt.NDArray[Union[np.bool_, np.uint8]]] = None,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[Union[np.bool_, np.uint8]]]:
        """(values, found) for n received packets; values are 0 where found is False."""
    def _lookup_hold(self, proto: int, laddr: Address, lport: int, faddr: Optional[Address],
                     fport: int) -> Optional[int]: ...
    def _hash(self, proto: int, laddr: Address, lport: int, faddr: Optional[Address],
              fport: int) -> int: ...

def _siphash(key: bytes, data: bytes, c: int = 2, d: int = 4) -> int: ...
