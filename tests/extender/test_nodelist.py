from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.extender.nodelist import NodeListCache
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
    entry = c.lookup(body(names), names)
    assert entry is not None
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names))), bool)
    scores = np.array(data.draw(st.lists(st.integers(0, 10), min_size=len(names), max_size=len(names))), np.int64)
    assert orjson.loads(entry.names_json(mask)) == [n for n, m in zip(names, mask, strict=True) if m]
    assert orjson.loads(entry.scores_json(scores)) == [
        {"Host": n, "Score": int(s)} for n, s in zip(names, scores, strict=True)
    ]
    np.testing.assert_array_equal(entry.indices, c.inventory.node_indices(names))


def test_hits_are_verified_against_the_parsed_names():
    c = cache()
    names = NAMES[:5]
    first = c.lookup(body(names), names)
    assert c.lookup(body(names), list(names)) is first and c.hits == 1
    # Same raw bytes but different parsed names (cannot come from one body; guards the key choice)
    other = NAMES[5:10]
    assert c.lookup(body(names), other).names == other


def test_unknown_or_odd_names_are_not_cached():
    c = cache()
    assert c.lookup(body(["ghost"]), ["ghost"]) is None
    c.inventory.set_node_present('we"ird', True)
    assert c.lookup(body(['we"ird']), ['we"ird']) is None


def test_lru_is_bounded():
    c = cache()
    for k in range(5):
        names = NAMES[k : k + 3]
        c.lookup(body(names), names)
    assert len(c._entries) == 2
