"""A package that can be called: `edge.export(...)` beside `python -m edge.export`.

In:  a package's module name and a loader of its function. Out: the package's module object, now callable.
The function is loaded on the first call, so importing the package stays as light as its __init__.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def make_callable(package: str, load: Callable[[], Callable[..., Any]]) -> None:
    """sys.modules[package] -> the same module, whose call runs `load()(*args, **kwargs)`."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return load()(*args, **kwargs)

    CallablePackage.__call__.__doc__ = f"{package}.api: see its docstring."
    sys.modules[package].__class__ = CallablePackage
