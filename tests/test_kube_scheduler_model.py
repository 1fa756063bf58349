"""bench/kube_scheduler_model.py: kube-scheduler's count of feasible nodes to find and its
rotating search, as pkg/scheduler/schedule_one.go has them."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest

from tfsched.devcluster.binaries import REPO

sys.path.insert(0, str(REPO / "bench"))
from kube_scheduler_model import NodeSearch, nodes_to_find, percentage_arg, percentage_used


@pytest.mark.parametrize(
    ("nodes", "percentage", "found"),
    [
        (50, None, 50),  # under 100 nodes every node is searched
        (99, 10, 99),
        (1000, None, 420),  # 50 - 1000/125 = 42 %
        (1213, None, 497),  # the openb trace: 41 %
        (5000, None, 500),  # 10 %
        (20000, None, 1000),  # the adaptive floor, 5 %
        (1000, 10, 100),
        (500, 10, 100),  # never fewer than 100
        (1000, 100, 1000),
        (1000, 0, 420),  # 0 is "not set"
    ],
)
def test_nodes_to_find(nodes: int, percentage: int | None, found: int) -> None:
    assert nodes_to_find(nodes, percentage) == found


def test_the_percentage_used() -> None:
    assert percentage_used(1000, None) == 42 and percentage_used(20000, None) == 5 and percentage_used(1, 30) == 30


def test_each_search_starts_where_the_last_one_stopped() -> None:
    search = NodeSearch(10, 3)
    feasible = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], bool)
    assert search.take(feasible).tolist() == [0, 2, 3] and search.start == 4 and search.looked_at == 4
    assert search.take(feasible).tolist() == [5, 6, 7] and search.start == 8
    assert search.take(feasible).tolist() == [9, 0, 2] and search.start == 3  # round the end
    few = np.zeros(10, bool)
    few[[1, 6]] = True
    assert search.take(few).tolist() == [6, 1] and search.start == 3  # all looked at: a full turn
    assert search.looked_at == 10


def test_a_search_for_every_node_finds_them_in_order() -> None:
    search = NodeSearch(5, 5)
    assert search.take(np.array([0, 1, 1, 0, 1], bool)).tolist() == [1, 2, 4] and search.start == 0
    assert search.looked_at == 5


def test_the_percentage_option() -> None:
    assert percentage_arg("adaptive") is None and percentage_arg("1") == 1 and percentage_arg("100") == 100
    for bad in ("0", "101", "42.5", "", "²", "-5"):
        with pytest.raises(argparse.ArgumentTypeError, match="1-100 or adaptive"):
            percentage_arg(bad)
