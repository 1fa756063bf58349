from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.extender.nodelist import NodeList, NodeListCache
from tfsched.scoring.inventory import Inventory

NAMES = [f"node-{i}.zone-a" for i in range(30)]


def cache() -> NodeListCache:
    inv = Inventory()
    for n in NAMES:
        inv.set_node_present(n, True)
    return NodeListCache(inv, max_entries=2)


def body(names) -> bytes:
    return orjson.dumps({"Pod": {"metadata": {"name": "p"}}, "Nodes": None, "NodeNames": names})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(NAMES), min_size=0, max_size=30), st.data())
def test_templates_equal_plain_json(names, data):
    c = cache()
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names))), bool)
    scores = np.array(data.draw(st.lists(st.integers(0, 10), min_size=len(names), max_size=len(names))), np.int64)
    first = c.lookup(body(names), names)
    assert first is not None and first.templates is None  # first sight: orjson
    again = c.lookup(body(names), names)
    assert again is first and (first.templates is not None)  # seen again: templates
    for entry in (NodeList(names, first.indices), again):
        assert orjson.loads(entry.names_json(mask)) == [n for n, m in zip(names, mask, strict=True) if m]
        # Hosts scoring 0 are left out: kube-scheduler counts an absent host as 0.
        assert orjson.loads(entry.scores_json(scores)) == [
            {"Host": n, "Score": int(s)} for n, s in zip(names, scores, strict=True) if s > 0
        ]
    np.testing.assert_array_equal(first.indices, c.inventory.node_indices(names))


def test_hits_are_verified_against_the_parsed_names():
    c = cache()
    names = NAMES[:5]
    first = c.lookup(body(names), names)
    assert c.lookup(body(names), list(names)) is first and c.hits == 1
    # Same raw bytes but different parsed names (cannot come from one body; guards the key choice)
    other = NAMES[5:10]
    assert c.lookup(body(names), other).names == other


def test_unknown_names_are_not_cached_and_odd_ones_get_no_templates():
    c = cache()
    assert c.lookup(body(["ghost"]), ["ghost"]) is None
    c.inventory.set_node_present('we"ird', True)
    odd = ['we"ird', NAMES[0]]
    entry = c.lookup(body(odd), odd)
    assert c.lookup(body(odd), odd) is entry and entry.templates is None
    assert orjson.loads(entry.names_json(np.array([True, True]))) == odd
    assert orjson.loads(entry.scores_json(np.array([3, 0]))) == [{"Host": 'we"ird', "Score": 3}]


def test_a_filters_survivors_are_the_prioritize_calls_hit():
    c = big_cache()
    names = NAMES[:10]
    entry = c.lookup(body(names), names)
    mask = np.array([i % 3 != 0 for i in range(10)])
    passed = [n for n, m in zip(names, mask, strict=True) if m]
    # What kube-scheduler sends to prioritize: the filter's NodeNames, in its order.
    assert orjson.loads(c.survivors(entry, mask)) == passed
    hits = c.hits
    follow = c.lookup(body(passed), passed)
    assert c.hits == hits + 1 and follow.names == passed
    np.testing.assert_array_equal(follow.indices, c.inventory.node_indices(passed))
    # All passing: the same list, nothing new; none passing: nothing to remember.
    held = len(c._entries)
    assert orjson.loads(c.survivors(entry, np.ones(10, bool))) == names
    assert c.survivors(entry, np.zeros(10, bool)) == b"[]" and len(c._entries) == held


def test_a_prioritize_calls_expected_hit_builds_no_templates_a_repeat_does():
    c = big_cache()
    names = NAMES[:10]
    # One pod: filter (all pass), then its prioritize on the same list.
    entry = c.lookup(body(names), names)
    c.survivors(entry, np.ones(10, bool))
    assert c.lookup(body(names), names) is entry and entry.templates is None
    # Another pod's filter brings the same list: a repeat.
    assert c.lookup(body(names), names) is entry and entry.templates is not None
    # A survivors list is a repeat when a later pod's filter passes the same nodes.
    mask = np.array([i % 2 == 0 for i in range(10)])
    passed = [n for n, m in zip(names, mask, strict=True) if m]
    c.survivors(entry, mask)
    first = c.lookup(body(passed), passed)
    assert first.templates is None
    c.survivors(entry, mask)
    assert first.templates is not None and c.lookup(body(passed), passed) is first
    assert orjson.loads(first.scores_json(np.array([0, 4, 10, 1, 2]))) == [
        {"Host": h, "Score": s} for h, s in zip(passed[1:], [4, 10, 1, 2], strict=True)
    ]


def test_lru_is_bounded():
    c = cache()
    for k in range(5):
        names = NAMES[k : k + 3]
        c.lookup(body(names), names)
    assert len(c._entries) == 2


def big_cache(max_entries: int = 32, **kwargs) -> NodeListCache:
    inv = Inventory()
    for n in NAMES:
        inv.set_node_present(n, True)
    return NodeListCache(inv, max_entries=max_entries, **kwargs)


def test_default_cap_refuses_a_list_longer_than_any_cluster():
    # The security review's case: a huge list of repeated known names.  The old cache kept
    # 32 of them; with the defaults, 12 × the largest cluster (5,000 nodes) is never cached.
    c = big_cache()
    small = NAMES[:3]
    c.lookup(body(small), small)
    huge = NAMES * 2_000
    assert c.lookup(body(huge), huge) is None
    assert c.lookup(body(huge), huge) is None  # nor on a second sight
    assert [e.names for e in c._entries.values()] == [small]  # and nothing else was lost
    assert c.total_names == 3 and 8 * 5_000 <= c.max_names < len(huge)


def test_list_of_exactly_the_cap_is_cached():
    c = big_cache(max_names=30)
    assert c.lookup(body(NAMES), NAMES) is not None and c.total_names == 30
    assert big_cache(max_names=29).lookup(body(NAMES), NAMES) is None


def test_total_names_across_entries_is_capped_lru_first():
    c = big_cache(max_names=10)
    lists = [NAMES[k * 4 : k * 4 + 4] for k in range(3)]  # 3 × 4 names = 12 > 10
    c.lookup(body(lists[0]), lists[0])
    c.lookup(body(lists[1]), lists[1])
    c.lookup(body(lists[0]), lists[0])  # a hit: lists[0] is now the most recent
    c.lookup(body(lists[2]), lists[2])
    assert [e.names for e in c._entries.values()] == [lists[0], lists[2]]
    assert c.total_names == 8


def test_a_long_list_evicts_as_many_entries_as_it_needs():
    c = big_cache(max_names=12)
    for k in range(4):
        names = NAMES[k * 3 : k * 3 + 3]
        c.lookup(body(names), names)
    assert len(c._entries) == 4 and c.total_names == 12
    long = NAMES[:10]
    assert c.lookup(body(long), long) is not None
    assert [e.names for e in c._entries.values()] == [long] and c.total_names == 10


def test_rejected_lists_count_as_misses_and_cost_nothing():
    c = big_cache(max_names=5)
    assert c.lookup(body(NAMES[:6]), NAMES[:6]) is None
    assert c.misses == 1 and c.total_names == 0 and not c._entries


def test_replacing_an_entry_under_the_same_key_keeps_the_count():
    c = big_cache(max_names=10)
    names = NAMES[:5]
    c.lookup(body(names), names)
    other = NAMES[5:9]
    c.lookup(body(names), other)  # same raw key, other parsed names (see the verification test)
    assert len(c._entries) == 1 and c.total_names == 4


def test_bad_caps_are_refused():
    for kwargs in ({"max_entries": 0}, {"max_names": -1}):
        with pytest.raises(ValueError):
            big_cache(**kwargs)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 29), st.integers(0, 12)), max_size=40),
    st.integers(1, 4),
    st.integers(0, 20),
)
def test_caps_always_hold(lookups, max_entries, max_names):
    c = big_cache(max_entries, max_names=max_names)
    for start, length in lookups:
        names = NAMES[start : start + length]
        entry = c.lookup(body(names), names)
        assert (entry is None) == (len(names) > max_names)
        assert len(c._entries) <= max_entries
        assert c.total_names == sum(len(e.names) for e in c._entries.values()) <= max_names


def test_kube_schedulers_rotating_windows_come_back_as_hits():
    """1,000 nodes: kube-scheduler sends 420 at a time, each window starting where the last
    ended, so 50 distinct windows cycle.  Each filter passes all but one node (a new passing
    list every pod, used once by its prioritize call).  After the first cycle every filter
    list is a hit: spent passing lists go first, the windows keep their room."""
    inv = Inventory()
    ring = [f"ip-10-0-{i // 250}-{i % 250}.ec2.internal" for i in range(1000)]
    for n in ring:
        inv.set_node_present(n, True)
    c = NodeListCache(inv)
    width, start = 420, 0
    filter_hits = []
    for pod in range(200):
        window = [ring[(start + i) % len(ring)] for i in range(width)]
        start = (start + width) % len(ring)
        hits = c.hits
        entry = c.lookup(body(window), window)
        assert entry is not None and entry.indices.tolist() == [inv.node_index[n] for n in window]
        filter_hits.append(c.hits > hits)
        mask = np.ones(width, bool)
        mask[pod % width] = False
        passed = orjson.loads(c.survivors(entry, mask))
        hits = c.hits
        assert c.lookup(body(passed), passed).names == passed
        assert c.hits == hits + 1  # the prioritize call always hits
        assert c.total_names <= c.max_names and len(c._entries) <= c.max_entries
    assert not any(filter_hits[:50]) and all(filter_hits[50:])
