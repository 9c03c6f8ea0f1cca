"""Public exceptions of the node client (see :mod:`node_client._exceptions` for the tree).

Every Solidity custom error of the contracts is importable from here by its name::

    from node_client.errors import ConsentInvalidNonce
"""

from __future__ import annotations

from typing import Any

from node_client import _exceptions
from node_client._exceptions import *  # noqa: F403 - this module is the public face of _exceptions
from node_client._exceptions import revert_class

__all__ = list(_exceptions.__all__)


def __getattr__(name: str) -> Any:
    try:
        return revert_class(name)
    except KeyError:
        raise AttributeError(f"module 'node_client.errors' has no attribute {name!r}") from None
