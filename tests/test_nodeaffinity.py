"""kube-scheduler NodeAffinity filter semantics of :func:`node_refusal`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.clustermodel.nodeaffinity import MAX_ECHO, node_refusal

NODE = "gpu-node-2"
LABELS = {
    "kubernetes.io/hostname": "gpu-node-2",
    "gpu": "a100",
    "gpu-count": "8",
    "empty": "",
    "text": "eight",
}


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    req: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        req["values"] = list(values)
    return req


def name_field(operator: str, *values: str) -> dict[str, Any]:
    return {"key": "metadata.name", "operator": operator, "values": list(values)}


def required(*terms: Any) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}
        }
    }


def one_expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return required({"matchExpressions": [expr(key, operator, *values)]})


def refusal(spec: Any, name: str = NODE, labels: dict[str, str] | None = None) -> str:
    return node_refusal(spec, name, LABELS if labels is None else labels)


AFFINITY_REFUSAL = f"node {NODE} does not match the pod's required node affinity"


# -- operators ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "operator", "values", "admitted"),
    [
        ("gpu", "In", ("a100",), True),
        ("gpu", "In", ("h100", "a100"), True),
        ("gpu", "In", ("h100",), False),
        ("absent", "In", ("a100",), False),
        ("empty", "In", ("",), True),
        ("gpu", "NotIn", ("a100",), False),
        ("gpu", "NotIn", ("h100", "l4"), True),
        ("absent", "NotIn", ("a100",), True),
        ("gpu", "Exists", (), True),
        ("empty", "Exists", (), True),
        ("absent", "Exists", (), False),
        ("gpu", "DoesNotExist", (), False),
        ("absent", "DoesNotExist", (), True),
        ("gpu-count", "Gt", ("4",), True),
        ("gpu-count", "Gt", ("8",), False),
        ("gpu-count", "Gt", ("10",), False),
        ("gpu-count", "Gt", ("007",), True),
        ("absent", "Gt", ("0",), False),
        ("text", "Gt", ("0",), False),
        ("empty", "Gt", ("0",), False),
        ("gpu-count", "Lt", ("10",), True),
        ("gpu-count", "Lt", ("8",), False),
        ("gpu-count", "Lt", ("4",), False),
        ("absent", "Lt", ("100",), False),
        ("text", "Lt", ("100",), False),
    ],
)
def test_operator(key: str, operator: str, values: tuple[str, ...], admitted: bool) -> None:
    reason = refusal(one_expr(key, operator, *values))
    assert reason == ("" if admitted else AFFINITY_REFUSAL)


@pytest.mark.parametrize(
    ("label", "admitted"),
    [
        ("9223372036854775807", True),  # int64 max
        ("9223372036854775808", False),  # overflows int64: ParseInt fails, no match
        (" 8", False),
        ("8 ", False),
        ("8_0", False),
        ("٨", False),  # Arabic-Indic eight: Python int() takes it, Go does not
        ("+8", True),
        ("1e3", False),
    ],
)
def test_gt_parses_label_like_go(label: str, admitted: bool) -> None:
    reason = refusal(one_expr("n", "Gt", "1"), labels={"n": label})
    assert (reason == "") is admitted


# -- terms ORed, requirements ANDed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("terms", "admitted"),
    [
        ([{"matchExpressions": [expr("gpu", "In", "h100")]}, {"matchExpressions": [expr("gpu", "In", "a100")]}], True),
        ([{"matchExpressions": [expr("gpu", "In", "a100")]}, {"matchExpressions": [expr("gpu", "In", "h100")]}], True),
        ([{"matchExpressions": [expr("gpu", "In", "h100")]}, {"matchExpressions": [expr("gpu", "In", "l4")]}], False),
        ([{"matchExpressions": [expr("gpu", "In", "h100")]}, {"matchFields": [name_field("In", NODE)]}], True),
    ],
)
def test_terms_are_ored(terms: list[Any], admitted: bool) -> None:
    assert (refusal(required(*terms)) == "") is admitted


@pytest.mark.parametrize(
    ("term", "admitted"),
    [
        ({"matchExpressions": [expr("gpu", "In", "a100"), expr("gpu-count", "Gt", "4")]}, True),
        ({"matchExpressions": [expr("gpu", "In", "a100"), expr("gpu-count", "Gt", "8")]}, False),
        ({"matchExpressions": [expr("gpu", "In", "h100"), expr("gpu-count", "Gt", "4")]}, False),
        ({"matchExpressions": [expr("gpu", "Exists")], "matchFields": [name_field("In", NODE)]}, True),
        ({"matchExpressions": [expr("gpu", "Exists")], "matchFields": [name_field("In", "other")]}, False),
        ({"matchExpressions": [expr("absent", "Exists")], "matchFields": [name_field("In", NODE)]}, False),
        ({"matchFields": [name_field("NotIn", "a"), name_field("NotIn", "b")]}, True),
        ({"matchFields": [name_field("NotIn", "a"), name_field("NotIn", NODE)]}, False),
    ],
)
def test_requirements_in_a_term_are_anded(term: dict[str, Any], admitted: bool) -> None:
    assert (refusal(required(term)) == "") is admitted


# -- matchFields --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "admitted"),
    [
        ("In", NODE, True),
        ("In", "gpu-node-0", False),
        ("NotIn", NODE, False),
        ("NotIn", "gpu-node-0", True),
    ],
)
def test_match_fields_on_node_name(operator: str, value: str, admitted: bool) -> None:
    reason = refusal(required({"matchFields": [name_field(operator, value)]}))
    assert reason == ("" if admitted else AFFINITY_REFUSAL)


def test_match_fields_ignored_for_a_nameless_node_like_upstream() -> None:
    assert refusal(required({"matchFields": [name_field("In", "gpu-node-0")]}), name="") == ""


def test_match_fields_do_not_look_at_labels() -> None:
    spec = required({"matchFields": [name_field("In", "gpu-node-0")]})
    assert refusal(spec, labels={"metadata.name": "gpu-node-0"}) == AFFINITY_REFUSAL


# -- nodeSelector -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "reason"),
    [
        (None, ""),
        ({}, ""),
        ({"kubernetes.io/hostname": NODE}, ""),
        ({"kubernetes.io/hostname": NODE, "gpu": "a100"}, ""),
        ({"empty": ""}, ""),
        (
            {"kubernetes.io/hostname": "gpu-node-0"},
            f"node {NODE} does not match the pod's nodeSelector (kubernetes.io/hostname=gpu-node-0)",
        ),
        ({"gpu": "a100", "zone": "z1"}, f"node {NODE} does not match the pod's nodeSelector (zone=z1)"),
        ({"absent": ""}, f"node {NODE} does not match the pod's nodeSelector (absent=)"),
    ],
)
def test_node_selector(selector: Any, reason: str) -> None:
    assert refusal({"nodeSelector": selector}) == reason


@pytest.mark.parametrize(
    ("selector", "affinity_term", "expected"),
    [
        ({"gpu": "a100"}, {"matchExpressions": [expr("gpu-count", "Gt", "4")]}, ""),
        ({"gpu": "a100"}, {"matchExpressions": [expr("gpu-count", "Gt", "8")]}, AFFINITY_REFUSAL),
        (
            {"gpu": "h100"},
            {"matchExpressions": [expr("gpu-count", "Gt", "4")]},
            f"node {NODE} does not match the pod's nodeSelector (gpu=h100)",
        ),
        (
            {"gpu": "h100"},
            {"matchExpressions": [expr("gpu-count", "Gt", "8")]},
            f"node {NODE} does not match the pod's nodeSelector (gpu=h100)",
        ),
    ],
)
def test_node_selector_and_affinity_must_both_hold(selector: Any, affinity_term: Any, expected: str) -> None:
    assert refusal({"nodeSelector": selector, **required(affinity_term)}) == expected


# -- absent and empty affinity ------------------------------------------------------------------------------------

EMPTY_TERMS = f"{AFFINITY_REFUSAL} (no non-empty nodeSelectorTerms)"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({}, ""),
        ({"affinity": None}, ""),
        ({"affinity": {}}, ""),
        ({"affinity": {"podAntiAffinity": {"x": 1}}}, ""),
        ({"affinity": {"nodeAffinity": None}}, ""),
        ({"affinity": {"nodeAffinity": {}}}, ""),
        ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": None}}}, ""),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 1, "preference": {"matchExpressions": [expr("gpu", "In", "h100")]}}
                        ]
                    }
                }
            },
            "",
        ),
        # Upstream: a required selector with no (non-empty) terms matches no node.
        ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}}, EMPTY_TERMS),
        (
            {
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": None}}
                }
            },
            EMPTY_TERMS,
        ),
        (required(), EMPTY_TERMS),
        (required({}), EMPTY_TERMS),
        (required(None), EMPTY_TERMS),
        (required({"matchExpressions": [], "matchFields": []}), EMPTY_TERMS),
        (required({"matchExpressions": None}, {}), EMPTY_TERMS),
        # An empty term matches nothing but does not stop another term from matching.
        (required({}, {"matchExpressions": [expr("gpu", "Exists")]}), ""),
        (required({}, {"matchExpressions": [expr("absent", "Exists")]}), AFFINITY_REFUSAL),
    ],
)
def test_absent_and_empty_affinity(spec: dict[str, Any], reason: str) -> None:
    assert refusal(spec) == reason


# -- malformed specs ----------------------------------------------------------------------------------------------

SEL = "the pod's nodeSelector is malformed: "
AFF = "the pod's required node affinity is malformed: "
T0 = "nodeSelectorTerms[0]"
E0 = f"{T0}.matchExpressions[0]"
F0 = f"{T0}.matchFields[0]"


def raw_expr(req: Any) -> dict[str, Any]:
    return required({"matchExpressions": [req]})


def raw_field(req: Any) -> dict[str, Any]:
    return required({"matchFields": [req]})


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (["not", "a", "spec"], "the pod spec is malformed: not a mapping (got list)"),
        (None, "the pod spec is malformed: not a mapping (got NoneType)"),
        ({"nodeSelector": ["gpu=a100"]}, SEL + "not a mapping (got list)"),
        ({"nodeSelector": "gpu=a100"}, SEL + "not a mapping (got str)"),
        ({"nodeSelector": {"gpu-count": 8}}, SEL + "the value of gpu-count is not a string (got int)"),
        ({"nodeSelector": {"gpu": None}}, SEL + "the value of gpu is not a string (got NoneType)"),
        ({"nodeSelector": {1: "a"}}, SEL + "a key is not a string (got int)"),
        ({"affinity": []}, AFF + "affinity is not a mapping (got list)"),
        ({"affinity": {"nodeAffinity": "x"}}, AFF + "nodeAffinity is not a mapping (got str)"),
        (
            {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}},
            AFF + "requiredDuringSchedulingIgnoredDuringExecution is not a mapping (got list)",
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": {}}}
                }
            },
            AFF + "nodeSelectorTerms is not a list (got dict)",
        ),
        (required("gpu"), AFF + f"{T0} is not a mapping (got str)"),
        (required({"matchExpressions": {"key": "gpu"}}), AFF + f"{T0}.matchExpressions is not a list (got dict)"),
        (required({"matchFields": "metadata.name"}), AFF + f"{T0}.matchFields is not a list (got str)"),
        (raw_expr("gpu"), AFF + f"{E0} is not a mapping (got str)"),
        (raw_expr({"key": 3, "operator": "Exists"}), AFF + f"{E0}.key is not a string (got int)"),
        (raw_expr({"operator": "Exists"}), AFF + f"{E0}.key '' is not a valid label key"),
        (raw_expr({"key": "gpu"}), AFF + f"{E0}.operator '' is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt"),
        (raw_expr({"key": "gpu", "operator": None}), AFF + f"{E0}.operator is not a string (got NoneType)"),
        (
            raw_expr(expr("gpu", "Equals", "a100")),
            AFF + f"{E0}.operator 'Equals' is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt",
        ),
        (
            raw_expr(expr("gpu", "in", "a100")),
            AFF + f"{E0}.operator 'in' is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt",
        ),
        (raw_expr({"key": "gpu", "operator": "In", "values": "a100"}), AFF + f"{E0}.values is not a list (got str)"),
        (raw_expr({"key": "gpu", "operator": "In", "values": [8]}), AFF + f"{E0}.values[0] is not a string (got int)"),
        (raw_expr(expr("gpu", "In")), AFF + f"{E0}.values must not be empty for In"),
        (raw_expr(expr("gpu", "NotIn")), AFF + f"{E0}.values must not be empty for NotIn"),
        (raw_expr(expr("gpu", "Exists", "a100")), AFF + f"{E0}.values must be empty for Exists"),
        (raw_expr(expr("gpu", "DoesNotExist", "a100")), AFF + f"{E0}.values must be empty for DoesNotExist"),
        (raw_expr(expr("gpu-count", "Gt")), AFF + f"{E0}.values must have exactly one element for Gt"),
        (raw_expr(expr("gpu-count", "Lt", "1", "2")), AFF + f"{E0}.values must have exactly one element for Lt"),
        (raw_expr(expr("gpu-count", "Gt", "four")), AFF + f"{E0}.values[0] 'four' is not an integer"),
        (
            raw_expr(expr("gpu-count", "Gt", "99999999999999999999")),
            AFF + f"{E0}.values[0] '99999999999999999999' is not an integer",
        ),
        (raw_expr(expr("gpu-count", "Gt", "-1")), AFF + f"{E0}.values[0] '-1' is not a valid label value"),
        (raw_expr(expr("gpu", "In", "a b")), AFF + f"{E0}.values[0] 'a b' is not a valid label value"),
        (raw_expr(expr("bad key", "Exists")), AFF + f"{E0}.key 'bad key' is not a valid label key"),
        (raw_expr(expr("Example.com/gpu", "Exists")), AFF + f"{E0}.key 'Example.com/gpu' is not a valid label key"),
        (raw_expr(expr("a/b/c", "Exists")), AFF + f"{E0}.key 'a/b/c' is not a valid label key"),
        (raw_expr(expr("/gpu", "Exists")), AFF + f"{E0}.key '/gpu' is not a valid label key"),
        (raw_expr(expr("x" * 70, "Exists")), AFF + f"{E0}.key '{'x' * 61}...' is not a valid label key"),
        (raw_field("metadata.name"), AFF + f"{F0} is not a mapping (got str)"),
        (raw_field(name_field("Exists")), AFF + f"{F0}.operator 'Exists' is not one of In, NotIn"),
        (raw_field(name_field("In")), AFF + f"{F0}.values must have exactly one element for In"),
        (raw_field(name_field("NotIn", "a", "b")), AFF + f"{F0}.values must have exactly one element for NotIn"),
        (
            raw_field({"key": "metadata.namespace", "operator": "In", "values": ["x"]}),
            AFF + f"{F0}.key 'metadata.namespace' is not supported (only metadata.name)",
        ),
        # Stricter than upstream's lazy parser: a malformed term is not excused by a matching one.
        (
            required({"matchExpressions": [expr("gpu", "Exists")]}, {"matchExpressions": [expr("gpu", "Bogus")]}),
            AFF + "nodeSelectorTerms[1].matchExpressions[0].operator 'Bogus' is not one of "
            "In, NotIn, Exists, DoesNotExist, Gt, Lt",
        ),
        # Malformed affinity is reported even when the nodeSelector already excludes the node.
        ({"nodeSelector": {"gpu": "h100"}, **raw_expr("x")}, AFF + f"{E0} is not a mapping (got str)"),
    ],
)
def test_malformed_spec_is_refused_with_reason(spec: Any, reason: str) -> None:
    assert refusal(spec) == reason


def test_valid_label_keys_are_accepted() -> None:
    for key in ("gpu", "kubernetes.io/hostname", "a.b-c_d", "x" * 63, f"{'p' * 253}/n", "A1", "1"):
        assert refusal(one_expr(key, "DoesNotExist"), labels={}) == "", key


def test_reasons_stay_one_short_line() -> None:
    hostile = "line1\nline2\x00" + "\u2028" * 200
    for spec in (
        {"nodeSelector": {hostile: hostile}},
        {"nodeSelector": {"gpu": 1}, "x": hostile},
        raw_expr(expr(hostile, "Exists")),
        raw_expr(expr("gpu", hostile)),
        raw_expr(expr("gpu", "In", hostile)),
    ):
        reason = node_refusal(spec, hostile, LABELS)
        assert reason
        assert reason.isprintable()
        assert len(reason) < 4 * MAX_ECHO + 120


# -- properties ---------------------------------------------------------------------------------------------------

JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
WORDS = st.sampled_from(["gpu", "a100", "8", "metadata.name", "In", "NotIn", "Exists", "Gt", "Lt", "", NODE, "-1"])
NEAR_VALID = st.recursive(
    st.none() | WORDS | st.integers(-3, 3),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["key", "operator", "values", "matchExpressions", "matchFields", "nodeSelectorTerms"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=15,
)
ANY_PART = JSON_LIKE | NEAR_VALID


def _spec_with_part(where: str, part: Any) -> Any:
    """A spec with ``part`` in one position of an otherwise valid required affinity."""
    req = {"key": "gpu", "operator": "In", "values": ["a100"]}
    term: dict[str, Any] = {"matchExpressions": [req]}
    required_: dict[str, Any] = {"nodeSelectorTerms": [term]}
    node_affinity: dict[str, Any] = {"requiredDuringSchedulingIgnoredDuringExecution": required_}
    affinity: dict[str, Any] = {"nodeAffinity": node_affinity}
    spec: dict[str, Any] = {"nodeSelector": {"gpu": "a100"}, "affinity": affinity}
    if where == "spec":
        return part
    if where == "nodeSelector":
        spec["nodeSelector"] = part
    elif where == "nodeSelectorValue":
        spec["nodeSelector"] = {"gpu": part}
    elif where == "affinity":
        spec["affinity"] = part
    elif where == "nodeAffinity":
        affinity["nodeAffinity"] = part
    elif where == "required":
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = part
    elif where == "terms":
        required_["nodeSelectorTerms"] = part
    elif where == "term":
        required_["nodeSelectorTerms"] = [part, term]
    elif where == "matchExpressions":
        term["matchExpressions"] = part
    elif where == "matchFields":
        term["matchFields"] = part
    elif where == "requirement":
        term["matchExpressions"] = [req, part]
    elif where in ("key", "operator", "values"):
        req[where] = part
    return spec


PLACES = st.sampled_from(
    [
        "spec",
        "nodeSelector",
        "nodeSelectorValue",
        "affinity",
        "nodeAffinity",
        "required",
        "terms",
        "term",
        "matchExpressions",
        "matchFields",
        "requirement",
        "key",
        "operator",
        "values",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    where=PLACES,
    part=ANY_PART,
    node_name=st.text(max_size=20),
    labels=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4),
)
def test_never_raises_on_arbitrary_parts(where: str, part: Any, node_name: str, labels: dict[str, str]) -> None:
    reason = node_refusal(_spec_with_part(where, part), node_name, labels)
    assert isinstance(reason, str)
    assert "\n" not in reason


VALID_REQUIREMENT = st.one_of(
    st.builds(
        expr, st.sampled_from(["gpu", "zone"]), st.sampled_from(["In", "NotIn"]), st.sampled_from(["a100", "z1"])
    ),
    st.builds(expr, st.sampled_from(["gpu", "zone"]), st.sampled_from(["Exists", "DoesNotExist"])),
    st.builds(expr, st.just("gpu-count"), st.sampled_from(["Gt", "Lt"]), st.sampled_from(["0", "8", "9"])),
)
VALID_TERM = st.fixed_dictionaries(
    {},
    optional={
        "matchExpressions": st.lists(VALID_REQUIREMENT, max_size=3),
        "matchFields": st.lists(
            st.builds(name_field, st.sampled_from(["In", "NotIn"]), st.sampled_from([NODE, "other"])), max_size=2
        ),
    },
)


@settings(max_examples=200, deadline=None)
@given(terms=st.lists(VALID_TERM, min_size=1, max_size=4))
def test_valid_terms_are_ored(terms: list[dict[str, Any]]) -> None:
    admitted_by_one = [refusal(required(term)) == "" for term in terms]
    assert (refusal(required(*terms)) == "") is any(admitted_by_one)
