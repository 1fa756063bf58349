"""What the benchmarks model of kube-scheduler's node search: how many feasible nodes it
looks for (``numFeasibleNodesToFind``) and the rotating window it finds them in
(``findNodesThatPassFilters``: it starts where the previous pod's search stopped and
stops at the count). Those nodes, and only those, go to the extender's filter and to
scoring, so the count bounds both every call's size and the placement's choice.

pkg/scheduler/schedule_one.go, kube-scheduler v1.36.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

MIN_FEASIBLE_NODES_TO_FIND = 100  # below this many nodes, every node is searched
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
BASE_PERCENTAGE_OF_NODES_TO_SCORE = 50  # the adaptive figure: 50 - nodes/125 percent


def percentage_used(n_nodes: int, percentage: int | None) -> int:
    """The percentage kube-scheduler applies: the one set, else the adaptive one (at least 5)."""
    if percentage is not None and percentage > 0:
        return min(percentage, 100)
    return max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND, BASE_PERCENTAGE_OF_NODES_TO_SCORE - n_nodes // 125)


def nodes_to_find(n_nodes: int, percentage: int | None = None) -> int:
    """How many feasible nodes kube-scheduler looks for before it stops searching."""
    if n_nodes < MIN_FEASIBLE_NODES_TO_FIND or percentage_used(n_nodes, percentage) >= 100:
        return n_nodes
    return max(MIN_FEASIBLE_NODES_TO_FIND, n_nodes * percentage_used(n_nodes, percentage) // 100)


def percentage_arg(value: str) -> int | None:
    """A ``--percentage-of-nodes-to-score`` value: 1-100, or ``adaptive`` (None: kube-scheduler's default)."""
    if value == "adaptive":
        return None
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 100):
        raise argparse.ArgumentTypeError(f"1-100 or adaptive, not {value!r}")
    return int(value)


@dataclass(slots=True)
class NodeSearch:
    """The rotating search over ``n_nodes`` nodes in a fixed order, one pod at a time."""

    n_nodes: int
    to_find: int
    start: int = 0  # where the next pod's search begins (nextStartNodeIndex)
    looked_at: int = 0  # nodes the last search looked at (processedNodes)

    def take(self, feasible: np.ndarray) -> np.ndarray:
        """Indices of the nodes found for one pod, in search order; ``feasible`` is a bool per node.
        The next search starts after the last node this one looked at."""
        if self.to_find >= self.n_nodes:
            self.looked_at = self.n_nodes  # every node searched; the start moves a full turn
            return np.flatnonzero(feasible)
        order = (self.start + np.arange(self.n_nodes)) % self.n_nodes
        hits = np.flatnonzero(feasible[order])
        if hits.size > self.to_find:
            hits = hits[: self.to_find]
            looked_at = int(hits[-1]) + 1
        else:
            looked_at = self.n_nodes
        self.start = (self.start + looked_at) % self.n_nodes
        self.looked_at = looked_at
        return order[hits]
