"""Counter dicts that threads add to without a lock."""
from typing import MutableMapping

def count(counters: MutableMapping[str, int], name: str, n: int = 1) -> None:
    """Add ``n`` to ``counters[name]`` (0 when missing); atomic with respect
    to other threads' calls on the same mapping (lock-free for a dict)."""
