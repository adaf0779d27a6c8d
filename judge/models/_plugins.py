"""Names to targets, with outside plugins: what back ends and model names both register.

A target is an object, or a "package.module:attr" string imported only when the name is
first used, so registering never imports anything heavy. Outside packages add names by
declaring an entry point in the registry's group; they are read the first time the names
are asked for, and never replace a name registered in code.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class PluginRegistry(Generic[T]):
    """Registered names (`what` names them in errors) and an entry-point `group`."""

    def __init__(self, group: str, what: str) -> None:
        self.group = group
        self.what = what
        self.targets: dict[str, str | T] = {}
        self._plugins_loaded = False

    def register(self, name: str, target: str | T, *, replace: bool = False) -> None:
        if name in self.targets and not replace:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self.targets[name] = target

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name not in self.targets:
                self.register(ep.name, ep.value)

    def names(self) -> list[str]:
        """Every registered name, plugins included."""
        self._load_plugins()
        return sorted(self.targets)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self.targets

    def load(self, name: str) -> T:
        """The target of `name`, imported (and kept) if it was given as a string.

        Raises:
            KeyError: `name` is not registered.
            ImportError, AttributeError: its "module:attr" cannot be imported.
        """
        self._load_plugins()
        target = self.targets[name]
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            loaded: T = getattr(importlib.import_module(module_name), attr)
            self.targets[name] = loaded
            return loaded
        return target
