"""A small name -> factory registry shared by models, attacks and defenses.

Every pluggable component registers itself with a decorator, and callers go through
``create``/``names`` instead of branching on names, so adding an attack or a defense is one
new file.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import TacleanerError
from .params import build

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; ``kind`` names the component in error messages."""

    def __init__(self, kind: str, compose: Callable[[str, Callable[[str], Callable[..., T]]], Callable[..., T]] | None = None,
                 separator: str = "+") -> None:
        """``compose``, when given, makes the entry for a name of several registered names
        joined by ``separator`` (``tacleaner+par``) from their factories."""
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._compose, self._separator = compose, separator

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name`` (warns when a name is reused)."""

        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins")
            self._entries[name] = factory
            return factory

        return wrap

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries and self._compose is not None and self._separator in str(name):
            return self._compose(name, self._get_one)
        return self._get_one(name)

    def _get_one(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            joined = f" (or several joined by {self._separator!r})" if self._compose is not None else ""
            raise TacleanerError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}{joined}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the entry ``name``; keyword arguments that are ``None`` are dropped so that
        unset CLI options fall through to the factory's defaults. For dataclass entries every
        value is converted to its field's type (:func:`tacleaner.params.build`), and an
        unknown keyword or a value of the wrong type is an error naming the valid ones."""
        factory = self.get(name)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if dataclasses.is_dataclass(factory):
            return build(factory, kwargs, f"{self.kind} {name!r}")
        return factory(**kwargs)

    def __contains__(self, name: str) -> bool:
        if name in self._entries:
            return True
        try:
            self.get(name)
        except TacleanerError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
