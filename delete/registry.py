"""One registry behaviour for everything the library looks up by name.

Methods, model builders, datasets and tasks each keep a :class:`Registry`: entries are added
under a name, looked up by name, and listed sorted. The rules are the same for all four:

* a name is taken once: registering *another* object under a taken name is refused with a
  one-line :class:`~delete.errors.DuplicateRegistrationError` naming the name and the entry
  that holds it (a silent overwrite would make the entry depend on import order);
* registering the *same* object (``==``) under its own name again changes nothing and is
  accepted, so re-running a registration (a fixture, an import re-executed) is harmless;
* an unknown name raises the registry's own error class with one line listing the known names.

Example:
    >>> shapes = Registry("shape", KeyError)
    >>> shapes.add("square", 4)
    4
    >>> shapes.add("square", 4)  # the same entry again: nothing changes
    4
    >>> shapes.add("square", 5)
    Traceback (most recent call last):
    ...
    delete.errors.DuplicateRegistrationError: shape 'square' is already registered as 4
    >>> shapes.get("circle")
    Traceback (most recent call last):
    ...
    KeyError: "unknown shape 'circle'; known: square"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from delete.errors import DuplicateRegistrationError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, each name taken once.

    Args:
        kind: What an entry is, for messages (``"unlearning method"``, ``"task"``).
        unknown_error: Exception class :meth:`get` raises for an unknown name (called with the
            one-line message).
        also_known: Further accepted forms appended to the "known:" list of that message
            (e.g. ``"torchvision:<name>"`` for architectures that are resolved, not registered).
    """

    def __init__(
        self,
        kind: str,
        unknown_error: Callable[[str], Exception],
        *,
        also_known: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self._unknown_error = unknown_error
        self._also_known = tuple(also_known)
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` and return it.

        Raises:
            DuplicateRegistrationError: ``name`` already holds a different entry.
        """
        if name in self._entries:
            existing = self._entries[name]
            if existing == entry:
                return entry
            raise DuplicateRegistrationError(
                f"{self.kind} {name!r} is already registered as {_describe(existing)}"
            )
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`.

        Example:
            >>> greetings = Registry("greeting", KeyError)
            >>> @greetings.register("hello")
            ... def hello() -> str:
            ...     return "hi"
            >>> greetings.get("hello")()
            'hi'
        """

        def decorator(entry: T) -> T:
            return self.add(name, entry)

        return decorator

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (tests that register a throw-away entry).

        Raises:
            The registry's unknown-name error when ``name`` is not registered.
        """
        entry = self.get(name)
        del self._entries[name]
        return entry

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            The registry's unknown-name error, with the known names, in one line.
        """
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join([*self.names(), *self._also_known])
            raise self._unknown_error(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs, sorted by name."""
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _describe(entry: object) -> str:
    """A short name for an entry in a one-line message: its qualified name when it has one."""
    module = getattr(entry, "__module__", None)
    qualname = getattr(entry, "__qualname__", None)
    if isinstance(qualname, str) and isinstance(module, str):
        return f"{module}.{qualname}"
    name = getattr(entry, "name", None)
    if isinstance(name, str):  # a TaskSpec's repr spans every callable it holds
        return f"{type(entry).__name__}({name!r})"
    return " ".join(repr(entry).split())[:120]
