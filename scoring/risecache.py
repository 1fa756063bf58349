"""Per-node rises in expected fragmentation, kept while the node and the mix stay.

Scoring a pod in the fragmentation-aware mode evaluates every GPU of every
candidate against every request type of the mix, several times what the other
modes cost. Between two pods usually one node changed (the last bind), and pods
come in few request types (replicas of a workload), so each (request type, mix
version) keeps per node the rise and the tie-break key that goes with it
(a function of the node and the request alone) with the node's version
(``Inventory.node_version``) they were computed at; only nodes that changed
since are computed again. Bounded: the least recently used types go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np

MAX_KEYS = 64  # request types kept; ~24 bytes per node each
WIDTH = 2  # values per node: the rise, its tie-break key


class RiseCache:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._entries: OrderedDict[Hashable, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._entries.clear()

    def rises(
        self,
        key: Hashable,
        nodes: np.ndarray,
        node_version: np.ndarray,
        compute: Callable[[np.ndarray], np.ndarray],
    ) -> np.ndarray:
        """Per node of ``nodes`` a row (rise, tie-break key); (+inf, +inf) for -1, unknown.
        ``compute(subset)`` gives the rows of the nodes whose cached ones are missing or
        older than ``node_version``."""
        entry = self._entries.get(key)
        size = node_version.shape[0]
        if entry is None or entry[0].shape[0] < size:
            versions, values = np.full(size, -1, np.int64), np.full((size, WIDTH), np.inf)
            if entry is not None:
                versions[: entry[0].shape[0]], values[: entry[1].shape[0]] = entry
            entry = (versions, values)
            self._entries[key] = entry
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        versions, values = entry
        known = nodes >= 0
        idx = np.where(known, nodes, 0)
        stale = np.flatnonzero(known & (versions[idx] != node_version[idx]))
        if stale.size:
            subset = nodes[stale]
            values[subset] = compute(subset)
            versions[subset] = node_version[subset]
        self.misses += int(stale.size)
        self.hits += int(known.sum()) - int(stale.size)
        rows = values[idx]
        rows[~known] = np.inf
        return rows
