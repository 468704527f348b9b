"""Binding implementations to torch-free declarations by name: the one mechanism behind the engine's registries.

The engine declares what it offers (benchmarks in ``engine.evaluate.registry``, backbones in
``engine.models.registry``, loss heads and distance terms in ``engine.loss_registry``) as frozen records in
modules that import neither torch nor numpy, so that ``engine.config`` validates against them and the
application lists them without loading torch. The code that runs or builds each entry lives in the heavy
modules and is tied to its declaration with a decorator made from ``Bindings.register``:

- a name that is not declared cannot be registered, and one name cannot be registered twice;
- ``Bindings.complete`` (called where the heavy module has registered everything) refuses a declared name
  that nothing implements, so a gap fails when the module is imported, not when a run reaches it.

This module imports nothing from the engine: every registry module may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

Impl = TypeVar("Impl", bound=Callable)


class Bindings(Generic[Impl]):
    """Name -> implementation for the entries of one registry.

    ``noun``: what an entry is ("model", "benchmark"), for the messages. ``declared``: returns the declared
    names (called at each check, so it always sees the declarations as they are). ``declared_in`` and
    ``decorator``: where the declarations live and the decorator's name, so that an error says what to do.
    ``verb``: how an already-registered entry is described (``benchmark 'lfw' already runs bench_lfw``).
    """

    def __init__(self, noun: str, declared: Callable[[], Iterable[str]], declared_in: str, decorator: str,
                 verb: str = "is implemented by") -> None:
        self.noun = noun
        self.declared_in = declared_in
        self.decorator = decorator
        self._declared = declared
        self._verb = verb
        self._impls: dict[str, Impl] = {}

    def register(self, name: str) -> Callable[[Impl], Impl]:
        """A decorator that binds what it decorates to the declared entry ``name`` (KeyError otherwise)."""
        declared = tuple(self._declared())
        if name not in declared:
            raise KeyError(f"{self.noun} {name!r} is not declared in {self.declared_in}; declare it there "
                           f"before {self.decorator}({name!r}) (declared: {', '.join(declared)})")

        def bind(impl: Impl) -> Impl:
            if name in self._impls:
                raise KeyError(f"{self.noun} {name!r} already {self._verb} {self._impls[name].__qualname__}")
            self._impls[name] = impl
            return impl

        return bind

    def complete(self, declared: Iterable[str] | None = None) -> dict[str, Impl]:
        """name -> implementation for every declared name, in declaration order.

        KeyError for a declared name nothing implements, and for an implementation whose name is not among
        ``declared`` (possible only when a caller passes a narrower list than the registry's own)."""
        names = tuple(self._declared() if declared is None else declared)
        missing = [name for name in names if name not in self._impls]
        if missing:
            raise KeyError(f"declared in {self.declared_in} but never registered with {self.decorator}: "
                           f"{', '.join(missing)}")
        extra = sorted(set(self._impls) - set(names))
        if extra:
            raise KeyError(f"registered with {self.decorator} but not declared in {self.declared_in}: "
                           f"{', '.join(extra)}")
        return {name: self._impls[name] for name in names}
