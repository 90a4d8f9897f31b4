"""Node stores: one interface (`interface.py`), one module per kind of store.

`build_nodes` (in `simulate.py`, which may wrap a node in fault injection)
makes each configured node; everything else holds `NodeStore`s and places
shards on them with `place`.
"""

from __future__ import annotations

from ..fileio import Buffer
from .interface import TEMP_SUFFIX, NodeStore, NodeUnavailable, Scratch
from .local import DirSync, LocalNode, start_sync, sync_dirs
from .placement import place

__all__ = ["Buffer", "DirSync", "LocalNode", "NodeStore", "NodeUnavailable", "Scratch",
           "TEMP_SUFFIX", "place", "start_sync", "sync_dirs"]
