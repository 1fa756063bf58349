"""Would kube-scheduler's NodeAffinity filter admit a pod on a node?

kube-scheduler only asks the extender to bind a pod to a node its own filter
passed, but anyone who can reach the port can ask anything: bind refuses a
node the pod's selectors exclude, exactly as kube-scheduler would.  This
re-implements ``spec.nodeSelector`` plus the pod's required node
affinity with the semantics of k8s.io/component-helpers/scheduling/corev1/nodeaffinity:

* every ``nodeSelector`` pair must equal the node's label;
* ``nodeSelectorTerms`` are ORed, a term's ``matchExpressions`` and
  ``matchFields`` are ANDed; a term with neither matches nothing, so a
  required affinity whose terms are all empty (or absent, or ``[]``) admits
  no node;
* ``NotIn`` and ``DoesNotExist`` match a missing label; ``Gt``/``Lt`` compare
  the label and the single value as base-10 int64 and fail on a missing or
  non-integer label;
* ``matchFields`` supports only ``metadata.name`` with ``In``/``NotIn`` and one
  value, and (as upstream) is not checked when the node has no name.

The spec comes from arbitrary users, so any malformed part (wrong type,
unknown operator, invalid key, wrong number of values) refuses every node
with a reason naming that part, as API validation would have rejected the
pod.  Unlike upstream's lazy parser, a malformed term is not excused by
another term matching: such a pod cannot exist in a validated cluster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["node_refusal"]

MAX_ECHO = 64  # characters of user text quoted in a reason

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_GO_INT = re.compile(r"[+-]?[0-9]+")  # what strconv.ParseInt(s, 10, 64) accepts, range aside
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
_FIELD_OPERATORS = ("In", "NotIn")
_NODE_NAME_FIELD = "metadata.name"


class _Malformed(Exception):
    """A part of the pod spec kube-apiserver validation would have rejected."""


@dataclass(frozen=True, slots=True)
class _LabelRequirement:
    key: str
    operator: str
    values: tuple[str, ...]
    number: int = 0  # the parsed value of Gt / Lt


@dataclass(frozen=True, slots=True)
class _FieldRequirement:
    operator: str  # In / NotIn against metadata.name
    value: str


@dataclass(frozen=True, slots=True)
class _Term:
    expressions: tuple[_LabelRequirement, ...]
    fields: tuple[_FieldRequirement, ...]


def node_refusal(pod_spec: Mapping[str, Any], node_name: str, node_labels: Mapping[str, str]) -> str:
    """'' when the pod's spec.nodeSelector and its required node affinity admit the node.

    Else a one-line reason naming what excludes it; never raises, whatever the spec holds.
    """
    name = node_name if isinstance(node_name, str) else ""
    labels: Mapping[Any, Any] = node_labels if isinstance(node_labels, Mapping) else {}
    if not isinstance(pod_spec, Mapping):
        return f"the pod spec is malformed: not a mapping (got {_type(pod_spec)})"
    try:
        selector = _parse_node_selector(pod_spec.get("nodeSelector"))
    except _Malformed as exc:
        return f"the pod's nodeSelector is malformed: {exc}"
    try:
        terms = _parse_required_affinity(pod_spec.get("affinity"))
    except _Malformed as exc:
        return f"the pod's required node affinity is malformed: {exc}"

    for key, value in selector:
        if key not in labels or labels[key] != value:
            return f"node {_echo(name)} does not match the pod's nodeSelector ({_echo(key)}={_echo(value)})"
    if terms is None:
        return ""
    if not terms:
        return f"node {_echo(name)} does not match the pod's required node affinity (no non-empty nodeSelectorTerms)"
    if any(_term_matches(term, name, labels) for term in terms):
        return ""
    return f"node {_echo(name)} does not match the pod's required node affinity"


# -- parsing ------------------------------------------------------------------------------------------------------


def _parse_node_selector(raw: Any) -> list[tuple[str, str]]:
    """The (key, value) pairs of ``spec.nodeSelector``, sorted so the reported mismatch is deterministic."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise _Malformed(f"not a mapping (got {_type(raw)})")
    pairs: list[tuple[str, str]] = []
    for key, value in raw.items():
        if not isinstance(key, str):
            raise _Malformed(f"a key is not a string (got {_type(key)})")
        if not isinstance(value, str):
            raise _Malformed(f"the value of {_echo(key)} is not a string (got {_type(value)})")
        pairs.append((key, value))
    pairs.sort()
    return pairs


def _parse_required_affinity(affinity: Any) -> list[_Term] | None:
    """The non-empty required terms; None when the pod has no required node affinity at all."""
    if affinity is None:
        return None
    if not isinstance(affinity, Mapping):
        raise _Malformed(f"affinity is not a mapping (got {_type(affinity)})")
    node_affinity = affinity.get("nodeAffinity")
    if node_affinity is None:
        return None
    if not isinstance(node_affinity, Mapping):
        raise _Malformed(f"nodeAffinity is not a mapping (got {_type(node_affinity)})")
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return None
    if not isinstance(required, Mapping):
        raise _Malformed(f"requiredDuringSchedulingIgnoredDuringExecution is not a mapping (got {_type(required)})")
    raw_terms = required.get("nodeSelectorTerms")
    if raw_terms is None:
        return []  # a required selector without terms matches nothing (Go: nil slice)
    if not isinstance(raw_terms, list | tuple):
        raise _Malformed(f"nodeSelectorTerms is not a list (got {_type(raw_terms)})")
    terms: list[_Term] = []
    for i, raw_term in enumerate(raw_terms):
        term = _parse_term(raw_term, f"nodeSelectorTerms[{i}]")
        if term.expressions or term.fields:  # an empty term selects no node: drop it
            terms.append(term)
    return terms


def _parse_term(raw: Any, path: str) -> _Term:
    if raw is None:
        return _Term((), ())
    if not isinstance(raw, Mapping):
        raise _Malformed(f"{path} is not a mapping (got {_type(raw)})")
    expressions = tuple(
        _parse_label_requirement(item, f"{path}.matchExpressions[{i}]")
        for i, item in enumerate(_requirement_list(raw.get("matchExpressions"), f"{path}.matchExpressions"))
    )
    fields = tuple(
        _parse_field_requirement(item, f"{path}.matchFields[{i}]")
        for i, item in enumerate(_requirement_list(raw.get("matchFields"), f"{path}.matchFields"))
    )
    return _Term(expressions, fields)


def _requirement_list(raw: Any, path: str) -> list[Any] | tuple[Any, ...]:
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        raise _Malformed(f"{path} is not a list (got {_type(raw)})")
    return raw


def _requirement_parts(raw: Any, path: str) -> tuple[Any, str, tuple[str, ...]]:
    """(key, operator, values) of one NodeSelectorRequirement, types checked."""
    if not isinstance(raw, Mapping):
        raise _Malformed(f"{path} is not a mapping (got {_type(raw)})")
    key = raw.get("key", "")
    if not isinstance(key, str):
        raise _Malformed(f"{path}.key is not a string (got {_type(key)})")
    operator = raw.get("operator", "")
    if not isinstance(operator, str):
        raise _Malformed(f"{path}.operator is not a string (got {_type(operator)})")
    values = raw.get("values")
    if values is None:
        values = ()
    if not isinstance(values, list | tuple):
        raise _Malformed(f"{path}.values is not a list (got {_type(values)})")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise _Malformed(f"{path}.values[{i}] is not a string (got {_type(value)})")
    return key, operator, tuple(values)


def _parse_label_requirement(raw: Any, path: str) -> _LabelRequirement:
    """As labels.NewRequirement: valid key, known operator, value count per operator, valid label values."""
    key, operator, values = _requirement_parts(raw, path)
    if not _is_label_key(key):
        raise _Malformed(f"{path}.key '{_echo(key)}' is not a valid label key")
    if operator not in _LABEL_OPERATORS:
        raise _Malformed(f"{path}.operator '{_echo(operator)}' is not one of {', '.join(_LABEL_OPERATORS)}")
    if operator in ("In", "NotIn") and not values:
        raise _Malformed(f"{path}.values must not be empty for {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise _Malformed(f"{path}.values must be empty for {operator}")
    number = 0
    if operator in ("Gt", "Lt"):
        if len(values) != 1:
            raise _Malformed(f"{path}.values must have exactly one element for {operator}")
        parsed = _go_int64(values[0])
        if parsed is None:
            raise _Malformed(f"{path}.values[0] '{_echo(values[0])}' is not an integer")
        number = parsed
    for i, value in enumerate(values):
        if not _is_label_value(value):
            raise _Malformed(f"{path}.values[{i}] '{_echo(value)}' is not a valid label value")
    return _LabelRequirement(key, operator, values, number)


def _parse_field_requirement(raw: Any, path: str) -> _FieldRequirement:
    """As API validation of node field selectors: metadata.name, In / NotIn, exactly one value."""
    key, operator, values = _requirement_parts(raw, path)
    if key != _NODE_NAME_FIELD:
        raise _Malformed(f"{path}.key '{_echo(key)}' is not supported (only {_NODE_NAME_FIELD})")
    if operator not in _FIELD_OPERATORS:
        raise _Malformed(f"{path}.operator '{_echo(operator)}' is not one of {', '.join(_FIELD_OPERATORS)}")
    if len(values) != 1:
        raise _Malformed(f"{path}.values must have exactly one element for {operator}")
    return _FieldRequirement(operator, values[0])


# -- matching -----------------------------------------------------------------------------------------------------


def _term_matches(term: _Term, node_name: str, labels: Mapping[Any, Any]) -> bool:
    if not all(_label_matches(req, labels) for req in term.expressions):
        return False
    if not node_name:  # upstream only checks matchFields when the node's field set is non-empty
        return True
    return all((node_name == req.value) == (req.operator == "In") for req in term.fields)


def _label_matches(req: _LabelRequirement, labels: Mapping[Any, Any]) -> bool:
    present = req.key in labels
    value = labels.get(req.key)
    if req.operator == "In":
        return present and value in req.values
    if req.operator == "NotIn":
        return not present or value not in req.values
    if req.operator == "Exists":
        return present
    if req.operator == "DoesNotExist":
        return not present
    number = _go_int64(value) if present else None
    if number is None:
        return False
    return number > req.number if req.operator == "Gt" else number < req.number


# -- helpers ------------------------------------------------------------------------------------------------------


def _go_int64(text: Any) -> int | None:
    """strconv.ParseInt(text, 10, 64), None where Go returns an error (no spaces, underscores or non-ASCII digits)."""
    if not isinstance(text, str) or len(text) > 24 or not _GO_INT.fullmatch(text):
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _is_label_value(text: str) -> bool:
    return text == "" or (len(text) <= 63 and _LABEL_NAME.fullmatch(text) is not None)


def _is_label_key(text: str) -> bool:
    """Qualified name: optional DNS-1123 subdomain prefix and '/', then a name of at most 63 characters."""
    prefix, slash, name = text.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def _echo(text: Any) -> str:
    """User text fit for a one-line reason: escaped, at most MAX_ECHO characters."""
    if not isinstance(text, str):
        return f"<{_type(text)}>"
    escaped = text[:MAX_ECHO].encode("unicode_escape").decode("ascii")
    if len(escaped) > MAX_ECHO or len(text) > MAX_ECHO:
        return escaped[: MAX_ECHO - 3] + "..."
    return escaped


def _type(value: Any) -> str:
    return type(value).__name__
