"""Package exports resolved on first use (PEP 562), so that importing a package, or a light
module inside it such as its config, does not import torch and the other heavy libraries
its models need. ``from lgsid_pipeline.tokenizer import Tokenizer`` works as before."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``name`` from its submodule
    ``exports[name]`` the first time it is asked for."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        sys.modules[package].__dict__[name] = value  # later lookups skip __getattr__
        return value

    return __getattr__
