"""Problems found while taking the cluster in, kept for the edges to report.

The cache handlers and the ledger run synchronously and must never raise or
block on the API server, so what they find wrong (a squatter's ``gpu-ids``, an
object that cannot be read, drift the auditor sees) is put here: counted for
the metrics at once, and queued for the events task to raise on the object.
Memory is bounded: the queue drops its oldest entries and the set of objects
already reported forgets the oldest keys.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_QUEUED = 1024
MAX_REMEMBERED = 100_000


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # the metric label, e.g. "gpu_ids_ignored"
    ref: dict[str, Any]  # what the event is about: apiVersion, kind, metadata (name, namespace, uid)
    reason: str  # the Event reason
    message: str


def object_ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Just enough of an object to address an Event to it (hostile shapes become strings)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}

    def text(value: Any) -> str:
        return value[:253] if isinstance(value, str) else ""

    return {
        "apiVersion": text(obj.get("apiVersion")) if isinstance(obj, Mapping) else "",
        "kind": text(obj.get("kind")) if isinstance(obj, Mapping) else "",
        "metadata": {k: text(meta.get(k)) for k in ("name", "namespace", "uid", "resourceVersion")},
    }


class ProblemLog:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.queue: deque[Problem] = deque(maxlen=MAX_QUEUED)
        self._reported: OrderedDict[tuple[str, str], str] = OrderedDict()

    def report(self, kind: str, obj: Mapping[str, Any], reason: str, message: str) -> bool:
        """Count and queue one problem, unless the same message about the same
        object (by uid, else name) was reported last.  Returns whether it was."""
        ref = object_ref(obj)
        key = _key(kind, ref)
        if self._reported.get(key) == message:
            return False
        self._reported[key] = message
        self._reported.move_to_end(key)
        if len(self._reported) > MAX_REMEMBERED:
            self._reported.popitem(last=False)
        self.counts[kind] += 1
        self.queue.append(Problem(kind, ref, reason, message))
        return True

    def resolved(self, kind: str, obj: Mapping[str, Any]) -> None:
        """The object is fine again (or gone): a later problem is news."""
        if self._reported:  # the common case on every watch event: nothing to forget
            self._reported.pop(_key(kind, object_ref(obj)), None)

    def take(self) -> list[Problem]:
        out = list(self.queue)
        self.queue.clear()
        return out


def _key(kind: str, ref: Mapping[str, Any]) -> tuple[str, str]:
    meta = ref["metadata"]
    return (kind, meta["uid"] or f"{meta['namespace']}/{meta['name']}")
