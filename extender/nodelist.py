"""Node lists seen before: their inventory indices and JSON templates, cached.

kube-scheduler sends the same ``NodeNames`` over and over (every pod of a
burst sees the same feasible nodes).  Turning 5,000 names into indices costs
more than the kernel, and so does writing 5,000 names or scores back.  We key
a small LRU on the raw bytes of the ``NodeNames`` array (found at the end of
the body, where Go writes the last field), confirm a hit against the parsed
names (a list comparison), and keep per entry:

- the int32 node indices, valid for ever because the inventory never
  renumbers a node;
- a byte template of the names as JSON strings, so a filter result is a
  masked copy of it;
- a fixed-width template of ``{"Host":…,"Score":NN}`` items, so a prioritize
  result is two digit columns written into a copy of it.

Only lists whose names are all known nodes with plain DNS characters are
cached (no JSON escaping can be needed); anything else takes the plain path.

Memory is bounded by the total number of names across entries, not only by
the number of entries: any caller can send a list of millions of (repeated)
known names, and 32 such lists held over 1 GB.  A list longer than the cap is
never cached, and older entries are evicted until the total fits.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from tfsched.scoring.inventory import Inventory

_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_MARKER = b'"NodeNames":['
_DIGITS = np.frombuffer(b" 0123456789", np.uint8)  # index s+1 for units; " " pads scores < 10


@dataclass(slots=True)
class NodeList:
    names: list[str]
    indices: np.ndarray
    name_bytes: np.ndarray  # uint8: '"n0","n1",...' (each item followed by a comma)
    item_lengths: np.ndarray  # bytes per item in name_bytes
    score_bytes: np.ndarray  # uint8: '{"Host":"n0","Score":NN},...'
    score_offsets: np.ndarray  # position of the first N of each item

    def names_json(self, mask: np.ndarray) -> bytes:
        """The JSON array of the names where ``mask`` holds."""
        if mask.all():
            body = self.name_bytes.tobytes()
        else:
            body = self.name_bytes[np.repeat(mask, self.item_lengths)].tobytes()
        return b"[" + body[:-1] + b"]" if body else b"[]"

    def scores_json(self, scores: np.ndarray) -> bytes:
        """The HostPriorityList for integer scores 0–10 in name order."""
        out = self.score_bytes.copy()
        tens, units = np.divmod(scores.astype(np.int64), 10)
        out[self.score_offsets] = np.where(tens > 0, _DIGITS[tens + 1], _DIGITS[0])
        out[self.score_offsets + 1] = _DIGITS[units + 1]
        return b"[" + out.tobytes()[:-1] + b"]"


def _build(names: list[str], indices: np.ndarray) -> NodeList:
    items = [f'"{n}",'.encode() for n in names]
    lengths = np.fromiter((len(i) for i in items), np.int64, len(items))
    prefix = [f'{{"Host":"{n}","Score":'.encode() for n in names]
    score_items = [p + b"NN}," for p in prefix]
    score_lengths = np.fromiter((len(i) for i in score_items), np.int64, len(score_items))
    starts = np.concatenate([[0], np.cumsum(score_lengths)[:-1]]) if names else np.zeros(0, np.int64)
    offsets = starts + np.fromiter((len(p) for p in prefix), np.int64, len(prefix))
    return NodeList(
        names=names,
        indices=indices,
        name_bytes=np.frombuffer(b"".join(items), np.uint8),
        item_lengths=lengths,
        score_bytes=np.frombuffer(b"".join(score_items), np.uint8),
        score_offsets=offsets,
    )


# Names held across all entries.  The largest cluster we serve has 5,000 nodes,
# so this is room for 8 full lists (a few pod shapes interleaving, each with its
# filter and its prioritize list).  An entry costs about 300 bytes per name for
# 48-character names (the parsed strings, the key, the templates, the indices)
# and about 1.1 KB at the 253-character maximum of a node name: 12 MB typical,
# under 50 MB at worst.
DEFAULT_MAX_NAMES = 8 * 5_000


class NodeListCache:
    def __init__(self, inventory: Inventory, max_entries: int = 32, max_names: int = DEFAULT_MAX_NAMES) -> None:
        if max_entries < 1 or max_names < 0:
            raise ValueError("max_entries must be at least 1 and max_names not negative")
        self.inventory = inventory
        self.max_entries = max_entries
        self.max_names = max_names
        self._entries: OrderedDict[bytes, NodeList] = OrderedDict()
        self._names = 0  # sum of len(entry.names) over the entries
        self.hits = 0
        self.misses = 0

    @property
    def total_names(self) -> int:
        """Names held across all entries (at most ``max_names``)."""
        return self._names

    def lookup(self, body: bytes, names: list[str]) -> NodeList | None:
        """The cached entry for this request's node names, created on first sight;
        ``None`` when the list cannot be cached (see the module docstring)."""
        start = body.rfind(_MARKER)
        end = body.rfind(b"]")
        if start < 0 or end < start:
            return None
        key = body[start + len(_MARKER) : end]
        entry = self._entries.get(key)
        if entry is not None and entry.names == names:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry
        self.misses += 1
        # Checked before any per-name work: an oversized list costs one len().
        if len(names) > self.max_names:
            return None
        indices = self.inventory.node_indices(names)
        if (indices < 0).any() or not all(_DNS_NAME.match(n) for n in names):
            return None
        entry = _build(names, indices)
        self._put(key, entry)
        return entry

    def _put(self, key: bytes, entry: NodeList) -> None:
        """Insert as most recent, then evict the least recent until both caps hold."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._names -= len(old.names)
        self._entries[key] = entry
        self._names += len(entry.names)
        # Never evicts ``entry`` itself: it alone fits both caps.
        while len(self._entries) > self.max_entries or self._names > self.max_names:
            _, evicted = self._entries.popitem(last=False)
            self._names -= len(evicted.names)
