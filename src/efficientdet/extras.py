"""The heavy runtimes live in extras, imported only where used: :func:`require` imports one or
says, in one line, which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """``import module``, or an ImportError naming its package and the extra that installs it
    (``pip install 'efficientdet[extra]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ImportError(f"{package} is not installed: pip install 'efficientdet[{extra}]'") from None
