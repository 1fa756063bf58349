"""Node lists seen before: their inventory indices and JSON templates, cached.

kube-scheduler sends the same ``NodeNames`` over and over when it sends every
node (a small cluster, or ``percentageOfNodesToScore: 100``), and for each pod
the prioritize call carries exactly the names its filter call passed.  Turning
5,000 names into indices costs more than the kernel, and so does writing 5,000
names or scores back.  We key a small LRU on the raw bytes of the
``NodeNames`` array (found at the end of the body, where Go writes the last
field), confirm a hit against the parsed names (a list comparison), and keep
per entry:

- the int32 node indices, valid for ever because the inventory never
  renumbers a node;
- once the list is seen again (a repeat: every list in a small cluster, and
  kube-scheduler's rotating windows over a large one, which come back after
  n / gcd(n, window) pods, see DEFAULT_MAX_ENTRIES): a byte template of the
  names as JSON strings, so a filter result is a masked copy of it, and a
  fixed-width template of ``{"Host":…,"Score":NN}`` items, so a prioritize
  result is two digit columns written into a copy of it.

A filter's passing names are remembered as a list of their own (the key its
prioritize call will bring), and that call's hit is expected: it is no repeat,
so it builds no templates, and once that call has come the list is the first
evicted (most passing lists are used by one pod only).  Only lists of known
nodes are cached, and templates are built only for names of plain DNS
characters (no JSON escaping can be needed); anything else takes orjson.

Memory is bounded by the total number of names across entries, not only by
the number of entries: any caller can send a list of millions of (repeated)
known names, and 32 such lists held over 1 GB.  A list longer than the cap is
never cached, and older entries are evicted until the total fits.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from itertools import compress

import numpy as np
import orjson

from tfsched.scoring.inventory import Inventory

_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_MARKER = b'"NodeNames":['
_DIGITS = np.frombuffer(b" 0123456789", np.uint8)  # index s+1 for units; " " pads scores < 10


def names_json(names: list[str], mask: np.ndarray) -> bytes:
    """The JSON array of ``names`` where ``mask`` holds (orjson; no template)."""
    return orjson.dumps(names if mask.all() else list(compress(names, mask.tolist())))


def scores_json(names: list[str], scores: np.ndarray) -> bytes:
    """The HostPriorityList of the hosts scoring above 0 (orjson; no template):
    kube-scheduler adds an extender's score only for the hosts listed, so an absent
    host and a 0 rank alike, and a reply of a few nonzero hosts is much less to write
    and for kube-scheduler to decode than all of them."""
    return orjson.dumps([{"Host": n, "Score": s} for n, s in zip(names, scores.tolist(), strict=True) if s > 0])


@dataclass(slots=True)
class _Templates:
    name_bytes: np.ndarray  # uint8: '"n0","n1",...' (each item followed by a comma)
    item_lengths: np.ndarray  # bytes per item in name_bytes
    score_bytes: np.ndarray  # uint8: '{"Host":"n0","Score":NN},...'
    score_lengths: np.ndarray  # bytes per item in score_bytes
    score_offsets: np.ndarray  # position of the first N of each item


@dataclass(slots=True)
class NodeList:
    """A node list's indices, and once it has been seen again its byte templates."""

    names: list[str]
    indices: np.ndarray
    templates: _Templates | None = None
    seen_again: bool = False  # by another pod's call: templates decided
    hit_expected: bool = False  # the prioritize call of the pod whose filter gave this list is next
    # A filter's passing names, used by its own prioritize call only (so far): once that
    # call has come it is the first to go when room is needed (see NodeListCache.lookup).
    passing_once: bool = False

    def names_json(self, mask: np.ndarray) -> bytes:
        """The JSON array of the names where ``mask`` holds."""
        if self.templates is None:
            return names_json(self.names, mask)
        t = self.templates
        body = t.name_bytes.tobytes() if mask.all() else t.name_bytes[np.repeat(mask, t.item_lengths)].tobytes()
        return b"[" + body[:-1] + b"]" if body else b"[]"

    def scores_json(self, scores: np.ndarray) -> bytes:
        """:func:`scores_json` (integer scores 0–10 in name order), from the templates
        once there are some."""
        if self.templates is None:
            return scores_json(self.names, scores)
        keep = scores > 0
        t = self.templates
        out = t.score_bytes.copy()
        tens, units = np.divmod(scores.astype(np.int64), 10)
        out[t.score_offsets] = np.where(tens > 0, _DIGITS[tens + 1], _DIGITS[0])
        out[t.score_offsets + 1] = _DIGITS[units + 1]
        body = out.tobytes() if keep.all() else out[np.repeat(keep, t.score_lengths)].tobytes()
        return b"[" + body[:-1] + b"]" if body else b"[]"


def _templates(names: list[str]) -> _Templates:
    items = [f'"{n}",'.encode() for n in names]
    lengths = np.fromiter((len(i) for i in items), np.int64, len(items))
    prefix = [f'{{"Host":"{n}","Score":'.encode() for n in names]
    score_items = [p + b"NN}," for p in prefix]
    score_lengths = np.fromiter((len(i) for i in score_items), np.int64, len(score_items))
    starts = np.concatenate([[0], np.cumsum(score_lengths)[:-1]]) if names else np.zeros(0, np.int64)
    offsets = starts + np.fromiter((len(p) for p in prefix), np.int64, len(prefix))
    return _Templates(
        name_bytes=np.frombuffer(b"".join(items), np.uint8),
        item_lengths=lengths,
        score_bytes=np.frombuffer(b"".join(score_items), np.uint8),
        score_lengths=score_lengths,
        score_offsets=offsets,
    )


def _seen_again(entry: NodeList) -> None:
    """A list used again by another pod: worth its templates, once, if its names need no escaping."""
    if not entry.seen_again:
        entry.seen_again = True
        if all(_DNS_NAME.match(n) for n in entry.names):
            entry.templates = _templates(entry.names)


# Names held across all entries.  The largest cluster we serve has 5,000 nodes,
# so this is room for 8 full lists (a few pod shapes interleaving, each with its
# filter and its prioritize list).  An entry costs about 300 bytes per name for
# 48-character names (the parsed strings, the key, the templates, the indices)
# and about 1.1 KB at the 253-character maximum of a node name: 12 MB typical,
# under 50 MB at worst.
DEFAULT_MAX_NAMES = 8 * 5_000
# Lists held at most.  kube-scheduler's window over a large cluster starts where the last one
# ended, so the windows come back after n / gcd(n, window) pods: 50 distinct windows at 1,000
# nodes (420 each: 21,000 names), at 3,000 (780 each: 39,000), 10 at 5,000.  Room for 50
# windows and their filters' passing lists lets them hit instead of being looked up name by
# name; at sizes where more windows cycle (1,001 nodes: 143) they do not, as before.
DEFAULT_MAX_ENTRIES = 128


class NodeListCache:
    def __init__(
        self, inventory: Inventory, max_entries: int = DEFAULT_MAX_ENTRIES, max_names: int = DEFAULT_MAX_NAMES
    ) -> None:
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
            self.hits += 1
            if entry.hit_expected:
                entry.hit_expected = False
                # A passing list's one expected use is over: first to be evicted, so the
                # lists that do come back (kube-scheduler's windows) keep their room.
                self._entries.move_to_end(key, last=not entry.passing_once)
            else:
                self._entries.move_to_end(key)
                _seen_again(entry)
            return entry
        self.misses += 1
        # Checked before any per-name work: an oversized list costs one len().
        if len(names) > self.max_names:
            return None
        indices = self.inventory.node_indices(names)
        if (indices < 0).any():
            return None
        entry = NodeList(names, indices)
        self._put(key, entry)
        return entry

    def survivors(self, entry: NodeList, mask: np.ndarray) -> bytes:
        """The JSON array of ``entry``'s names where ``mask`` holds (a filter's
        passing nodes), remembered as a list of its own: kube-scheduler sends
        exactly these names, in this order, to the prioritize call that follows,
        so that call hits instead of looking every name up again."""
        names_json = entry.names_json(mask)
        if mask.all():
            entry.hit_expected = True  # the same list, already cached
            return names_json
        if len(names_json) < 3:
            return names_json  # none passed
        key = names_json[1:-1]
        survivors = self._entries.get(key)
        if survivors is None:
            survivors = NodeList(list(compress(entry.names, mask.tolist())), entry.indices[mask], passing_once=True)
            self._put(key, survivors)
        elif not survivors.hit_expected:
            survivors.passing_once = False  # an earlier pod's filter passed the same nodes
            self._entries.move_to_end(key)
            _seen_again(survivors)
        survivors.hit_expected = True
        return names_json

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
