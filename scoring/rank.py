"""Turning a per-node cost into kube-scheduler's 0–10 extender scores with one winner.

kube-scheduler adds the extender's score (× weight × 10) to its own plugins' and,
among equal totals, picks at random. For the fragmentation-aware mode both hurt:
a min–max stretch to 0–10 makes most nodes equal at the top, and a random pick
among them spreads pods over the cluster, where a consistent order packs them
(the openb replay's steps are in bench/RESULTS.md). So the cost is cut into steps of ``resolution``
(smaller differences are noise in an expected value), the cheapest step's nodes
are ordered by the ``prefer`` keys (then by position) and the first alone scores 10; the
others score by their step, 9 for the cheapest, down to 1; a node that cannot
take the pod (cost +inf) scores 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

MAX_SCORE = 10  # kube-scheduler's MaxExtenderPriority


def decisive_scores(
    cost: np.ndarray, prefer: Callable[[np.ndarray], Sequence[np.ndarray]], resolution: float
) -> np.ndarray:
    """int64 scores in the order of ``cost``; lower ``cost`` is better, and among
    costs within the cheapest step lower ``keys[0]``, then ``keys[1]``… is better,
    where ``keys = prefer(positions)`` for the positions in that step (computed
    for those alone: the others need no tie-break)."""
    out = np.zeros(cost.size, np.int64)
    fits = np.flatnonzero(np.isfinite(cost))
    if fits.size == 0:
        return out
    c = cost[fits]
    step = np.floor((c - c.min()) / resolution) if resolution > 0 else c - c.min()
    out[fits] = np.maximum(MAX_SCORE - 1 - step, 1).astype(np.int64)
    cheapest = fits[step == 0]
    keys = prefer(cheapest)
    winner = np.lexsort([cheapest, *reversed(keys)])[0]  # lexsort: last key first
    out[cheapest[winner]] = MAX_SCORE
    return out


def ratio_class(node_ratio: np.ndarray, pod_ratio: np.ndarray, base: float) -> np.ndarray:
    """How far a node's free CPU per free GPU is from what the pod asks per GPU, in
    whole powers of ``base``: 0 where the node has 1 to ``base`` times the pod's ratio,
    1 for the next power either way, and so on (lower is a better match)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cls = np.abs(np.floor(np.log(node_ratio / pod_ratio) / np.log(base)))
    return np.where(np.isfinite(cls), cls, np.inf)
