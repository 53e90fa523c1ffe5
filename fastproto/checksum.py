"""The Internet checksum (RFC 1071), its one-pass copy form, RFC 1624 updates
and pseudo-header sums; compiled, with AVX2/AVX-512 chosen at run time.
See ``docs/checksum.md``."""
from fastproto._core.checksum import (
    checksum_copy,
    checksum_update,
    internet_checksum,
    partial_sum,
    pseudo_header_sum,
)

__all__ = ["internet_checksum", "partial_sum", "checksum_copy", "checksum_update", "pseudo_header_sum"]
