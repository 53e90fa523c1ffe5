"""Serializer: the per-interface lock for its receive path and driver entry points."""
from types import TracebackType
from typing import Any, Callable, Literal, Optional, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

class Serializer:
    """Serializer(name=""): a non-recursive lock, usable with ``with``."""

    @property
    def name(self) -> str: ...
    @property
    def locked(self) -> bool:
        """True if any thread holds it (a snapshot)."""
    @property
    def contended(self) -> int:
        """How many enters so far found it held and had to wait."""
    def __init__(self, name: str = "") -> None: ...
    def enter(self) -> None:
        """Enter, waiting without the GIL; RuntimeError if already held by this thread."""
    def try_enter(self) -> bool:
        """Enter if free; False if held elsewhere; RuntimeError if held by this thread."""
    def exit(self) -> None:
        """Leave; RuntimeError if this thread does not hold it."""
    def held(self) -> bool:
        """True if the calling thread holds it."""
    def assert_held(self) -> None:
        """AssertionError naming the serializer unless the calling thread holds it."""
    def __enter__(self) -> "Serializer": ...
    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Literal[False]: ...

def serialized(method: _F) -> _F:
    """Decorator for an entry point: run the method inside ``self.serializer``."""

def requires_serializer(method: _F) -> _F:
    """Decorator: AssertionError unless the caller holds ``self.serializer``."""
