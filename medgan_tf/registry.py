"""A name registry: a decorator and a dict that fail loudly.

The registry is generic and imports nothing of the project: modules that define things to
register (the model recipes in `medgan_tf.presets`, the metrics in `medgan_tf.metrics`) create a
`Registry` and add to it, so the registry never imports its registrants.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """name → object, in registration order. A duplicate or unknown name is an error that lists
    the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: `@REGISTRY.register("name")` above a function or class."""

        def decorator(item: T) -> T:
            return self.add(name, item)

        return decorator

    def remove(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._items.pop(name)

    @contextmanager
    def temporarily(self, name: str, item: T) -> Iterator[T]:
        """Register `item` for the duration of a `with` block (plug-ins in tests and notebooks)."""
        self.add(name, item)
        try:
            yield item
        finally:
            self._items.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
