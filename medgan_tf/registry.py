"""Name registries: a decorator and a dict that fail loudly.

`MODELS` maps a variant name (`medgan`, `medgan_1g`, `pix2pix`, ...) to a `ModelRecipe`: the
generator depth and the loss terms with their weights. Adding a baseline is one registered recipe
in `medgan_tf/variants.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from medgan_tf.config import ExperimentConfig, LossConfig

T = TypeVar("T")


class Registry(Generic[T]):
    """name → object built by a registered factory. Duplicate or unknown names are errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[[], T]] = {}

    def register(self, name: str) -> Callable[[Callable[[], T]], Callable[[], T]]:
        def decorator(factory: Callable[[], T]) -> Callable[[], T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> T:
        _load_builtin_variants()
        if name not in self._factories:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._factories[name]()

    def names(self) -> list[str]:
        _load_builtin_variants()
        return sorted(self._factories)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()


@dataclass(frozen=True)
class ModelRecipe:
    """One registered model variant: CasNet depth + loss terms and weights (paper §3.2)."""

    name: str
    num_ublocks: int
    losses: LossConfig
    description: str = ""

    def apply(self, config: ExperimentConfig) -> ExperimentConfig:
        """`config` trained as this variant (generator depth and losses replaced)."""
        return dataclasses.replace(
            config,
            model=self.name,
            generator=dataclasses.replace(config.generator, num_ublocks=self.num_ublocks),
            losses=self.losses,
        )


MODELS: Registry[ModelRecipe] = Registry("model")


def _load_builtin_variants() -> None:
    # The recipes module registers itself on import; importing here keeps `registry` the one
    # place callers need, without a module-level import cycle.
    import medgan_tf.variants  # noqa: F401
