"""The shipped manifests: CRDs, scheduler configurations, kind files and examples.

These run without a cluster.  They check what a real kube-apiserver and
kube-scheduler would reject (non-structural CRD schemas, unknown fields in the
strictly decoded scheduler configuration), that the kind cluster mounts the
scheduler configuration the devcluster runs with, that every name matches
``clustermodel.annotations``, and that the examples validate against the CRDs
and parse into the Python models.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import ValidationError

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel import crds
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig
from tfsched.clustermodel.quantity import parse_quantity
from tfsched.clustermodel.workload import ResourcesMode

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = crds.crd_dir()
SCHEDULER_CONFIG = ROOT / "config" / "scheduler-config.yaml"
KIND_DIR = ROOT / "deploy" / "kind"
EXAMPLES = ROOT / "examples"

GPU_CRD = CRD_DIR / "gpus.tensor-fusion.ai.yaml"
WORKLOAD_CRD = CRD_DIR / "tensorfusionworkloads.tensor-fusion.ai.yaml"
PROFILE_CRD = CRD_DIR / "workloadprofiles.tensor-fusion.ai.yaml"

LEGACY_PERCENTILES = (
    "targettflopspercentile",
    "lowerboundtflopspercentile",
    "upperboundtflopspercentile",
    "targetvrampercentile",
    "lowerboundvrampercentile",
    "upperboundvrampercentile",
)


def load_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def load_one(path: Path) -> dict[str, Any]:
    docs = load_all(path)
    assert len(docs) == 1, f"{path}: expected one YAML document, found {len(docs)}"
    return docs[0]


def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def all_manifest_files() -> list[Path]:
    found = [*ROOT.glob("deploy/**/*.yaml"), *ROOT.glob("config/*.yaml"), *ROOT.glob("examples/*.yaml")]
    # The chart's templates are Go templates, checked rendered (tests/deploy/test_chart.py).
    files = sorted(p for p in found if "templates" not in p.relative_to(ROOT).parts)
    assert files, "no manifests found"
    return files


# --------------------------------------------------------------------------- #
# Structural schema rules (apiextensions-apiserver's, the parts we rely on)
# --------------------------------------------------------------------------- #

_INT_OR_STRING_ANYOF = [{"type": "integer"}, {"type": "string"}]
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
# Keys the apiserver forbids anywhere in a structural schema, or that we do not use.
_FORBIDDEN = {"$ref", "definitions", "dependencies", "patternProperties", "id", "$schema"}
# Keys that must not appear inside anyOf/allOf/oneOf/not branches.
_FORBIDDEN_IN_JUNCTOR = {"type", "additionalProperties", "default", "nullable", "description", "title"}


def structural_errors(schema: Any, path: str = "", *, root: bool = True) -> list[str]:
    """Violations of the structural-schema rules; empty when the schema is fine.

    Every node needs a ``type`` unless it is int-or-string or preserves
    unknown fields; objects must say what they hold; arrays need ``items``;
    junctors may only validate values, not declare types (int-or-string's
    canonical ``anyOf`` excepted); patterns must compile.
    """
    errors: list[str] = []
    here = path or "<root>"
    if not isinstance(schema, dict):
        return [f"{here}: schema is not a mapping"]
    for key in _FORBIDDEN & schema.keys():
        errors.append(f"{here}: forbidden keyword {key!r}")
    int_or_string = schema.get("x-kubernetes-int-or-string") is True
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    typ = schema.get("type")
    if typ is None and not (int_or_string or preserve):
        errors.append(f"{here}: no type (and neither int-or-string nor preserve-unknown-fields)")
    if typ is not None and typ not in _TYPES:
        errors.append(f"{here}: unknown type {typ!r}")
    if int_or_string:
        if typ is not None:
            errors.append(f"{here}: int-or-string must not set type")
        if "anyOf" in schema and schema["anyOf"] != _INT_OR_STRING_ANYOF:
            errors.append(f"{here}: int-or-string anyOf must be [integer, string]")
    elif "anyOf" in schema or "oneOf" in schema or "allOf" in schema:
        for junctor in ("anyOf", "oneOf", "allOf"):
            for i, branch in enumerate(schema.get(junctor, [])):
                bad = _FORBIDDEN_IN_JUNCTOR & set(branch)
                if bad:
                    errors.append(f"{here}.{junctor}[{i}]: {sorted(bad)} not allowed in a junctor")
    if schema.get("nullable") is True:
        errors.append(f"{here}: nullable is not used by tfsched's CRDs")
    if schema.get("uniqueItems") is True:
        errors.append(f"{here}: uniqueItems is forbidden")
    if schema.get("additionalProperties") is False:
        errors.append(f"{here}: additionalProperties: false is forbidden")
    if "properties" in schema and isinstance(schema.get("additionalProperties"), dict):
        errors.append(f"{here}: properties and additionalProperties are mutually exclusive")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except re.error as exc:
            errors.append(f"{here}: pattern does not compile: {exc}")
    if "enum" in schema and typ in {"string", "integer", "number", "boolean"}:
        py = {"string": str, "integer": int, "number": (int, float), "boolean": bool}[typ]
        for value in schema["enum"]:
            if not isinstance(value, py) or (typ != "boolean" and isinstance(value, bool)):
                errors.append(f"{here}: enum value {value!r} is not a {typ}")
    if typ == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        # Only the root's metadata may be a bare object: the apiserver owns it.
        if props is None and not isinstance(extra, dict) and not preserve and path != ".metadata":
            errors.append(f"{here}: object declares no properties (its content would be pruned)")
        for name, sub in (props or {}).items():
            errors += structural_errors(sub, f"{path}.{name}", root=False)
        if isinstance(extra, dict):
            errors += structural_errors(extra, f"{path}[*]", root=False)
        for name in schema.get("required", []):
            if name not in (props or {}):
                errors.append(f"{here}: required field {name!r} is not declared")
    elif typ == "array":
        if "items" not in schema:
            errors.append(f"{here}: array without items")
        else:
            errors += structural_errors(schema["items"], f"{path}[]", root=False)
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            required = set(schema.get("items", {}).get("required", []))
            if not keys or not set(keys) <= required:
                errors.append(f"{here}: list-type map needs required list-map-keys")
    elif "properties" in schema or "items" in schema:
        errors.append(f"{here}: properties/items on a non-object, non-array node")
    if root:
        if typ != "object":
            errors.append("<root>: the root must be an object")
        for name in ("apiVersion", "kind", "metadata"):
            if name not in schema.get("properties", {}):
                errors.append(f"<root>: {name} not declared")
    return errors


def schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    """The schema node a simple JSONPath such as ``.status.nodeSelector.kubernetes\\.io/hostname``
    names, or None when the schema does not declare it."""
    # A filter (``conditions[?(@.type=="X")]``) selects list items: their schema.
    json_path = re.sub(r"\[\?\(@\.[^)]*\)\]", ".[]", json_path)
    parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", json_path.lstrip("."))]
    if parts[0] == "metadata":
        # ObjectMeta belongs to the apiserver; the CRD schema only says "object".
        known = {"name", "namespace", "labels", "annotations", "creationTimestamp", "generation", "uid"}
        return {"type": "object"} if len(parts) == 1 or parts[1] in known else None
    node: dict[str, Any] | None = schema
    for part in parts:
        if node is None:
            return None
        if part == "[]":
            node = node.get("items")
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


# --------------------------------------------------------------------------- #
# A small validator for the schema subset our CRDs use (what the apiserver
# would do on create: type checks, enum, bounds, patterns and pruning).
# --------------------------------------------------------------------------- #


def validation_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    here = path or "<root>"
    if path == ".metadata":
        return []  # ObjectMeta is validated by the apiserver itself, not by the CRD schema
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return [f"{here}: {value!r} is neither an integer nor a string"]
        if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
            return [f"{here}: {value!r} does not match {schema['pattern']}"]
        return []
    typ = schema.get("type")
    if typ is None:  # preserve-unknown-fields without a type: anything goes
        return []
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        # JSON has one number type; the apiserver takes 80.0 as an integer.
        "integer": lambda v: (
            not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
        ),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if not checks[typ](value):
        return [f"{here}: {value!r} is not a {typ}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{here}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{here}: {value!r} < minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{here}: {value!r} > maximum {schema['maximum']}")
    if typ == "string" and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{here}: {value!r} does not match {schema['pattern']}")
    if typ == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{here}: missing required {name!r}")
        for name, sub in value.items():
            if name in props:
                errors += validation_errors(sub, props[name], f"{path}.{name}")
            elif isinstance(extra, dict):
                errors += validation_errors(sub, extra, f"{path}.{name}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{here}: unknown field {name!r} would be pruned")
    if typ == "array":
        for i, item in enumerate(value):
            errors += validation_errors(item, schema["items"], f"{path}[{i}]")
    return errors


# --------------------------------------------------------------------------- #
# Parsing
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("path", all_manifest_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"


def test_kind_patches_parse() -> None:
    cluster = load_one(KIND_DIR / "kind-cluster.yaml")
    for node in cluster["nodes"]:
        for patch in node.get("kubeadmConfigPatches", []):
            assert isinstance(yaml.safe_load(patch), dict)


# --------------------------------------------------------------------------- #
# CRDs
# --------------------------------------------------------------------------- #

CRD_NAMES = [
    (GPU_CRD, ann.GPU_PLURAL, ann.GPU_KIND, "Cluster"),
    (WORKLOAD_CRD, ann.WORKLOAD_PLURAL, ann.WORKLOAD_KIND, "Namespaced"),
    (PROFILE_CRD, ann.WORKLOAD_PROFILE_PLURAL, ann.WORKLOAD_PROFILE_KIND, "Namespaced"),
]


@pytest.mark.parametrize(("path", "plural", "kind", "scope"), CRD_NAMES, ids=lambda v: str(v))
def test_crd_names_match_annotations_module(path: Path, plural: str, kind: str, scope: str) -> None:
    crd = load_one(path)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    spec = crd["spec"]
    assert spec["group"] == ann.API_GROUP
    assert crd["metadata"]["name"] == f"{plural}.{ann.API_GROUP}"
    assert spec["names"]["plural"] == plural
    assert spec["names"]["kind"] == kind
    assert spec["names"]["listKind"] == kind + "List"
    assert spec["scope"] == scope
    (version,) = spec["versions"]
    assert version["name"] == ann.API_VERSION
    assert version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}, "status subresource only (no scale)"


@pytest.mark.parametrize("path", [GPU_CRD, WORKLOAD_CRD, PROFILE_CRD], ids=lambda p: p.name)
def test_crd_schema_is_structural(path: Path) -> None:
    assert structural_errors(crd_schema(load_one(path))) == []


def test_structural_check_catches_bad_schemas() -> None:
    schema = copy.deepcopy(crd_schema(load_one(WORKLOAD_CRD)))
    spec = schema["properties"]["spec"]["properties"]
    del spec["replicas"]["type"]
    spec["poolName"]["anyOf"] = [{"type": "string"}, {"type": "integer"}]
    spec["autoScalingConfig"]["properties"]["cronScalingRules"].pop("items")
    spec["resources"]["properties"]["requests"].pop("properties")
    errors = structural_errors(schema)
    assert any(".spec.replicas: no type" in e for e in errors)
    assert any(".spec.poolName.anyOf" in e for e in errors)
    assert any("cronScalingRules: array without items" in e for e in errors)
    assert any("requests: object declares no properties" in e for e in errors)


@pytest.mark.parametrize("path", [GPU_CRD, WORKLOAD_CRD, PROFILE_CRD], ids=lambda p: p.name)
def test_quantities_are_int_or_string_with_a_quantity_pattern(path: Path) -> None:
    found = 0

    def walk(node: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, sub in node.get("properties", {}).items():
            yield f"{where}.{name}", sub
            yield from walk(sub, f"{where}.{name}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{where}[]")

    for where, node in walk(crd_schema(load_one(path)), ""):
        if where.rsplit(".", 1)[-1] not in {"tflops", "vram"}:
            continue
        found += 1
        assert node.get("x-kubernetes-int-or-string") is True, where
        assert node.get("anyOf") == _INT_OR_STRING_ANYOF, where
        pattern = re.compile(node["pattern"])
        for good in ("20", "500m", "10Gi", "1.5", "1e3", "0", ".5"):
            assert pattern.search(good), (where, good)
        for bad in ("-1", "10 Gi", "ten", "", "1.2.3", "10GB"):
            assert not pattern.search(bad), (where, bad)
        for text in ("20", "500m", "10Gi", "1.5", "1e3"):
            parse_quantity(text)  # what the pattern admits, tfsched can read
    assert found >= 4, f"{path}: expected tflops/vram quantities in the schema"


def test_workload_printer_columns_for_kubectl_get_tfw() -> None:
    crd = load_one(WORKLOAD_CRD)
    assert "tfw" in crd["spec"]["names"]["shortNames"]
    (version,) = crd["spec"]["versions"]
    columns = {c["jsonPath"]: c for c in version["additionalPrinterColumns"]}
    wanted = [
        ".status.mode",
        f'.status.conditions[?(@.type=="{ann.CONDITION_RECOMMENDATION_PROVIDED}")].status',
        f'.status.conditions[?(@.type=="{ann.CONDITION_METRICS_AVAILABLE}")].status',
        ".status.recommendation.requests.tflops",
        ".status.recommendation.requests.vram",
        ".status.appliedRecommendedReplicas",
        ".spec.replicas",
        ".status.activeCronScalingRule.name",
        ".metadata.creationTimestamp",
    ]
    for path in wanted:
        assert path in columns, f"kubectl get tfw lacks a column for {path}"
        assert columns[path].get("priority", 0) == 0, f"{path} must show without -o wide"
    assert columns[".metadata.creationTimestamp"]["type"] == "date"
    # A column nobody writes is noise: tfsched never sets status.phase.
    assert ".status.phase" not in columns
    schema = crd_schema(crd)
    mode = schema_at(schema, ".status.mode")
    assert mode is not None and set(mode["enum"]) == set(get_args(ResourcesMode))
    for column in version["additionalPrinterColumns"]:
        assert column["type"] in {"string", "integer", "number", "boolean", "date"}
        assert schema_at(schema, column["jsonPath"]) is not None, f"{column['jsonPath']} not in the schema"


def test_gpu_printer_columns() -> None:
    crd = load_one(GPU_CRD)
    (version,) = crd["spec"]["versions"]
    paths = [c["jsonPath"] for c in version["additionalPrinterColumns"]]
    for wanted in (
        ".status.gpuModel",
        ".status.nodeSelector.kubernetes\\.io/hostname",
        ".status.capacity.tflops",
        ".status.available.tflops",
        ".status.capacity.vram",
        ".status.available.vram",
        ".status.phase",
        ".metadata.creationTimestamp",
    ):
        assert wanted in paths
    schema = crd_schema(crd)
    for path in paths:
        assert schema_at(schema, path) is not None, path


def test_schema_at_rejects_undeclared_paths() -> None:
    schema = crd_schema(load_one(WORKLOAD_CRD))
    assert schema_at(schema, ".status.recommendation.requests.tflops") is not None
    assert schema_at(schema, ".status.recommendations.requests.tflops") is None
    assert schema_at(schema, ".spec.replica") is None


def test_workload_profile_spec_equals_workload_spec() -> None:
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "description"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    workload = crd_schema(load_one(WORKLOAD_CRD))["properties"]["spec"]
    profile = crd_schema(load_one(PROFILE_CRD))["properties"]["spec"]
    assert strip(workload) == strip(profile)


def test_workload_schema_has_the_fields_tfsched_writes() -> None:
    schema = crd_schema(load_one(WORKLOAD_CRD))
    for path in (
        ".spec.replicas",
        ".spec.poolName",
        ".spec.qos",
        ".spec.gpuModel",
        ".spec.gpuCount",
        ".spec.isLocalGPU",
        ".spec.resources.limits.vram",
        ".spec.autoScalingConfig.autoSetResources.targetResource",
        ".spec.autoScalingConfig.autoSetResources.confidenceInterval",
        ".spec.autoScalingConfig.autoSetResources.requestMarginFraction",
        ".spec.autoScalingConfig.autoSetReplicas.targetTFlopsOfLimits",
        ".spec.autoScalingConfig.autoSetReplicas.scaleDownCoolDownTime",
        ".spec.autoScalingConfig.autoSetReplicas.maxReplicas",
        ".status.phase",
        ".status.workerCount",
        ".status.readyWorkers",
        ".status.podTemplateHash",
        ".status.recommendation.limits.tflops",
        ".status.appliedRecommendedReplicas",
        ".status.activeCronScalingRule.desiredResources.requests.vram",
        ".status.histogramCheckpoint",
    ):
        assert schema_at(schema, path) is not None, path
    conditions = schema_at(schema, ".status.conditions")
    assert conditions is not None and conditions["type"] == "array"
    assert set(conditions["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    checkpoint = schema_at(schema, ".status.histogramCheckpoint")
    assert checkpoint is not None and checkpoint["x-kubernetes-preserve-unknown-fields"] is True
    target = schema_at(schema, ".spec.autoScalingConfig.autoSetResources.targetResource")
    assert target is not None and target["enum"] == ["", "all", "tflops", "vram"]
    assert schema_at(schema, ".spec.gpuCount") == {
        "description": schema_at(schema, ".spec.gpuCount")["description"],  # type: ignore[index]
        "type": "integer",
        "minimum": 1,
        "maximum": 128,
    }


@pytest.mark.parametrize("path", [WORKLOAD_CRD, PROFILE_CRD], ids=lambda p: p.name)
def test_legacy_lowercase_percentiles_are_declared(path: Path) -> None:
    """The apiserver prunes undeclared fields, so upstream's old lower-case spellings must be declared."""
    auto = schema_at(crd_schema(load_one(path)), ".spec.autoScalingConfig.autoSetResources")
    assert auto is not None
    for name in LEGACY_PERCENTILES:
        assert name in auto["properties"], name
    manifest = {
        "apiVersion": ann.GROUP_VERSION,
        "kind": load_one(path)["spec"]["names"]["kind"],
        "metadata": {"name": "legacy"},
        "spec": {"autoScalingConfig": {"autoSetResources": {name: "0.8" for name in LEGACY_PERCENTILES}}},
    }
    assert validation_errors(manifest, crd_schema(load_one(path))) == []
    manifest["spec"]["autoScalingConfig"]["autoSetResources"]["targetTflopsPercentile"] = 1.5
    assert validation_errors(manifest, crd_schema(load_one(path))) != []


def test_validator_rejects_bad_objects() -> None:
    schema = crd_schema(load_one(WORKLOAD_CRD))
    bad = {
        "apiVersion": ann.GROUP_VERSION,
        "kind": ann.WORKLOAD_KIND,
        "metadata": {"name": "bad"},
        "spec": {
            "replicas": "3",
            "qos": "urgent",
            "gpuCount": 0,
            "resources": {"requests": {"tflops": "-1", "vram": 1.5}},
            "autoScalingConfig": {"autoSetResources": {"targetResource": "gpu", "confidenceInterval": "1 day"}},
            "typo": 1,
        },
    }
    errors = validation_errors(bad, schema)
    for fragment in (
        ".spec.replicas",
        ".spec.qos",
        ".spec.gpuCount",
        ".requests.tflops",
        ".requests.vram",
        ".targetResource",
        ".confidenceInterval",
        "'typo'",
    ):
        assert any(fragment in e for e in errors), (fragment, errors)


# --------------------------------------------------------------------------- #
# Scheduler configuration
# --------------------------------------------------------------------------- #

# Fields of kubescheduler.config.k8s.io/v1 (k8s.io/kube-scheduler/config/v1/types.go,
# plus the inlined TypeMeta and component-base DebuggingConfiguration).  The file is
# decoded strictly, so anything else makes kube-scheduler exit.
_KSC_FIELDS = {
    "apiVersion",
    "kind",
    "parallelism",
    "leaderElection",
    "clientConnection",
    "enableProfiling",
    "enableContentionProfiling",
    "percentageOfNodesToScore",
    "podInitialBackoffSeconds",
    "podMaxBackoffSeconds",
    "profiles",
    "extenders",
    "delayCacheUntilActive",
}
_CLIENT_CONNECTION_FIELDS = {"kubeconfig", "acceptContentTypes", "contentType", "qps", "burst"}
_LEADER_ELECTION_FIELDS = {
    "leaderElect",
    "leaseDuration",
    "renewDeadline",
    "retryPeriod",
    "resourceLock",
    "resourceName",
    "resourceNamespace",
}
_PROFILE_FIELDS = {"schedulerName", "percentageOfNodesToScore", "plugins", "pluginConfig"}
_EXTENDER_FIELDS = {
    "urlPrefix",
    "filterVerb",
    "preemptVerb",
    "prioritizeVerb",
    "weight",
    "bindVerb",
    "enableHTTPS",
    "tlsConfig",
    "httpTimeout",
    "nodeCacheCapable",
    "managedResources",
    "ignorable",
}
_MANAGED_RESOURCE_FIELDS = {"name", "ignoredByScheduler"}
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


_TLS_FIELDS = {"insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData"}


def scheduler_config_errors(cfg: dict[str, Any], *, in_cluster: bool = False) -> list[str]:
    """What kube-scheduler's strict decoder and validation would reject (the parts we use).
    ``in_cluster``: it runs in a pod, where no kubeconfig means the pod's ServiceAccount."""
    errors: list[str] = []

    def unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
        errors.extend(f"{where}: unknown field {key!r}" for key in set(obj) - allowed)

    if cfg.get("apiVersion") != "kubescheduler.config.k8s.io/v1":
        errors.append("apiVersion must be kubescheduler.config.k8s.io/v1")
    if cfg.get("kind") != "KubeSchedulerConfiguration":
        errors.append("kind must be KubeSchedulerConfiguration")
    unknown(cfg, _KSC_FIELDS, "<root>")
    unknown(cfg.get("clientConnection", {}), _CLIENT_CONNECTION_FIELDS, "clientConnection")
    unknown(cfg.get("leaderElection", {}), _LEADER_ELECTION_FIELDS, "leaderElection")
    if not in_cluster and not cfg.get("clientConnection", {}).get("kubeconfig"):
        errors.append("clientConnection.kubeconfig must be set (--kubeconfig is ignored with --config)")
    for i, profile in enumerate(cfg.get("profiles", [])):
        unknown(profile, _PROFILE_FIELDS, f"profiles[{i}]")
    binders = 0
    for i, ext in enumerate(cfg.get("extenders", [])):
        where = f"extenders[{i}]"
        unknown(ext, _EXTENDER_FIELDS, where)
        if not str(ext.get("urlPrefix", "")).startswith(("http://", "https://")):
            errors.append(f"{where}: urlPrefix must be an http(s) URL")
        if ext.get("prioritizeVerb") and not (isinstance(ext.get("weight"), int) and ext["weight"] > 0):
            errors.append(f"{where}: weight must be a positive integer when prioritizing")
        if "httpTimeout" in ext and not _DURATION.match(str(ext["httpTimeout"])):
            errors.append(f"{where}: httpTimeout is not a duration")
        binders += bool(ext.get("bindVerb"))
        unknown(ext.get("tlsConfig", {}), _TLS_FIELDS, f"{where}.tlsConfig")
        if ext.get("tlsConfig") and not ext.get("enableHTTPS"):
            errors.append(f"{where}: tlsConfig without enableHTTPS")
        for j, res in enumerate(ext.get("managedResources", [])):
            unknown(res, _MANAGED_RESOURCE_FIELDS, f"{where}.managedResources[{j}]")
        for key in ("enableHTTPS", "nodeCacheCapable", "ignorable"):
            if key in ext and not isinstance(ext[key], bool):
                errors.append(f"{where}: {key} must be a boolean")
    if binders > 1:
        errors.append("at most one extender may bind")
    return errors


def test_scheduler_config_is_valid() -> None:
    cfg = load_one(SCHEDULER_CONFIG)
    assert scheduler_config_errors(cfg) == []
    # The cluster's own kube-scheduler leads on kube-system/kube-scheduler; tfsched follows it.
    assert cfg["leaderElection"]["leaderElect"] is True and "resourceName" not in cfg["leaderElection"]
    assert [p["schedulerName"] for p in cfg["profiles"]] == ["default-scheduler"]
    (ext,) = cfg["extenders"]
    assert ext["urlPrefix"].startswith("http://127.0.0.1:")
    assert (ext["filterVerb"], ext["prioritizeVerb"], ext["bindVerb"]) == ("filter", "prioritize", "bind")
    assert "preemptVerb" not in ext
    assert ext["weight"] == 5
    assert ext["enableHTTPS"] is False
    assert ext["httpTimeout"] == "5s"
    assert ext["nodeCacheCapable"] is True
    assert ext["ignorable"] is False


def test_managed_resource_is_the_annotations_constant() -> None:
    (ext,) = load_one(SCHEDULER_CONFIG)["extenders"]
    assert ext["managedResources"] == [{"name": ann.MANAGED_RESOURCE, "ignoredByScheduler": True}]


def test_scheduler_config_check_catches_mistakes() -> None:
    cfg = load_one(SCHEDULER_CONFIG)
    cfg["extenders"][0]["urlprefix"] = cfg["extenders"][0].pop("urlPrefix")
    cfg["extenders"][0]["weight"] = 0
    cfg["extenders"].append(dict(cfg["extenders"][0]))
    cfg["clientConnection"] = {"kubeConfig": "/x"}
    errors = scheduler_config_errors(cfg)
    assert any("unknown field 'urlprefix'" in e for e in errors)
    assert any("weight must be a positive" in e for e in errors)
    assert any("at most one extender may bind" in e for e in errors)
    assert any("unknown field 'kubeConfig'" in e for e in errors)
    assert any("clientConnection.kubeconfig must be set" in e for e in errors)


# --------------------------------------------------------------------------- #
# kind
# --------------------------------------------------------------------------- #


def _kind_patches() -> list[dict[str, Any]]:
    cluster = load_one(KIND_DIR / "kind-cluster.yaml")
    (control_plane,) = [n for n in cluster["nodes"] if n["role"] == "control-plane"]
    return [yaml.safe_load(p) for p in control_plane["kubeadmConfigPatches"]]


def test_kind_cluster_mounts_the_scheduler_config() -> None:
    cluster = load_one(KIND_DIR / "kind-cluster.yaml")
    assert cluster["kind"] == "Cluster"
    assert cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (control_plane,) = [n for n in cluster["nodes"] if n["role"] == "control-plane"]
    (mount,) = [m for m in control_plane["extraMounts"] if m["containerPath"] == "/etc/kubernetes/tfsched"]
    host = ROOT / mount["hostPath"]  # relative: kind resolves it against the repo root it runs from
    assert (host / "scheduler-config.yaml").resolve() == SCHEDULER_CONFIG.resolve()


def test_kind_kubeadm_patches_point_kube_scheduler_at_the_config() -> None:
    patches = {p["apiVersion"]: p for p in _kind_patches()}
    assert set(patches) == {"kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"}
    wanted = "/etc/kubernetes/tfsched/scheduler-config.yaml"
    for version, patch in patches.items():
        assert patch["kind"] == "ClusterConfiguration"
        scheduler = patch["scheduler"]
        args = scheduler["extraArgs"]
        if version.endswith("v1beta3"):
            assert args == {"config": wanted}
        else:  # v1beta4: a list of name/value pairs
            assert args == [{"name": "config", "value": wanted}]
        (volume,) = scheduler["extraVolumes"]
        assert wanted.startswith(volume["mountPath"].rstrip("/") + "/")
        assert volume["hostPath"] == "/etc/kubernetes/tfsched"
        assert volume.get("readOnly") is True


# --------------------------------------------------------------------------- #
# Examples
# --------------------------------------------------------------------------- #


def _known_annotations() -> set[str]:
    return {
        value
        for name, value in vars(ann).items()
        if name.isupper() and isinstance(value, str) and value.startswith(ann.PREFIX) and value != ann.PREFIX
    }


def _pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get("kind") == "Pod":
        return [doc]
    spec = doc.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    return [template] if template else []


def _example_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(EXAMPLES.glob("*.yaml")) for d in load_all(p)]


def test_example_annotations_are_known_names() -> None:
    known = _known_annotations()
    seen: set[str] = set()
    for path, doc in _example_docs():
        for template in _pod_templates(doc):
            annotations = template.get("metadata", {}).get("annotations", {})
            for key, value in annotations.items():
                assert isinstance(value, str), f"{path}: annotation {key} must be a string"
                if key.startswith(ann.PREFIX):
                    assert key in known, f"{path}: {key} is not a constant in clustermodel/annotations.py"
                    seen.add(key)
    assert {ann.WORKLOAD, ann.TFLOPS_REQUEST, ann.VRAM_LIMIT, ann.GPU_COUNT, ann.AUTO_RESOURCES} <= seen


def test_known_annotations_helper_can_fail() -> None:
    known = _known_annotations()
    assert ann.TFLOPS_REQUEST in known
    assert ann.PREFIX + "tflops-requests" not in known


def test_example_gpu_pods_request_the_managed_resource() -> None:
    pods = 0
    for path, doc in _example_docs():
        for template in _pod_templates(doc):
            annotations = template["metadata"].get("annotations", {})
            if not any(key.startswith(ann.PREFIX) for key in annotations):
                continue
            pods += 1
            for container in template["spec"]["containers"]:
                limits = container.get("resources", {}).get("limits", {})
                assert ann.MANAGED_RESOURCE in limits, f"{path}: {container['name']} never reaches the extender"
                prefixed = {k for k in limits if k.startswith(ann.PREFIX)}
                assert prefixed == {ann.MANAGED_RESOURCE}
            for key in (ann.TFLOPS_REQUEST, ann.TFLOPS_LIMIT, ann.VRAM_REQUEST, ann.VRAM_LIMIT):
                if key in annotations:
                    parse_quantity(annotations[key])
    assert pods >= 2


def test_demo_workload_matches_its_deployment() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_all(EXAMPLES / "demo-workload.yaml")}
    workload = docs[(ann.WORKLOAD_KIND, "demo-inference")]
    deployment = docs[("Deployment", "demo-inference")]
    training = docs[("Deployment", "demo-training")]
    assert workload["apiVersion"] == ann.GROUP_VERSION
    assert workload["metadata"]["namespace"] == deployment["metadata"]["namespace"] == "default"
    assert workload["spec"]["replicas"] == deployment["spec"]["replicas"] == 3
    pod_ann = deployment["spec"]["template"]["metadata"]["annotations"]
    assert pod_ann[ann.WORKLOAD] == "demo-inference"
    assert pod_ann[ann.AUTO_RESOURCES] == "true"
    assert pod_ann[ann.AUTO_SCALE_TARGET_RESOURCE] == "all"
    res = workload["spec"]["resources"]
    assert parse_quantity(pod_ann[ann.TFLOPS_REQUEST]) == parse_quantity(res["requests"]["tflops"]) == 20
    assert parse_quantity(pod_ann[ann.TFLOPS_LIMIT]) == parse_quantity(res["limits"]["tflops"]) == 40
    assert parse_quantity(pod_ann[ann.VRAM_REQUEST]) == parse_quantity(res["requests"]["vram"]) == 10 * 2**30
    assert parse_quantity(pod_ann[ann.VRAM_LIMIT]) == parse_quantity(res["limits"]["vram"]) == 20 * 2**30
    auto = workload["spec"]["autoScalingConfig"]["autoSetResources"]
    assert auto == {"enable": True, "targetResource": "all", "confidenceInterval": "1m"}
    assert training["spec"]["template"]["metadata"]["annotations"][ann.GPU_COUNT] == "2"
    for dep in (deployment, training):
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.k8s.io/pause:3.10"


def _crd_for_kind() -> dict[str, dict[str, Any]]:
    return {load_one(p)["spec"]["names"]["kind"]: crd_schema(load_one(p)) for p in crd_paths_or_dir()}


def crd_paths_or_dir() -> list[Path]:
    return sorted(CRD_DIR.glob("*.yaml"))


def test_example_custom_resources_validate_against_the_crds() -> None:
    schemas = _crd_for_kind()
    checked = 0
    for path, doc in _example_docs():
        if doc.get("apiVersion") != ann.GROUP_VERSION:
            continue
        assert doc["kind"] in schemas, f"{path}: no CRD for {doc['kind']}"
        assert validation_errors(doc, schemas[doc["kind"]]) == [], path
        checked += 1
    assert checked >= 2


def test_cluster_spec_example() -> None:
    spec = load_one(EXAMPLES / "cluster.yaml")
    (group,) = spec["nodes"]
    assert group["namePrefix"] == "gpu-node"
    assert group["count"] == 4
    gpus = group["gpus"]
    assert (gpus["count"], gpus["model"], gpus["vendor"], gpus["pool"]) == (4, "A100", "NVIDIA", "default")
    assert parse_quantity(gpus["tflops"]) == 312
    assert parse_quantity(gpus["vram"]) == 80 * 2**30
    assert parse_quantity(group["cpu"]) == 64
    assert parse_quantity(group["memory"]) == 512 * 2**30
    assert group["pods"] == 110


# --------------------------------------------------------------------------- #
# Python models and crd_paths()
# --------------------------------------------------------------------------- #


def test_crd_paths_lists_the_shipped_crds() -> None:
    paths = [Path(p) for p in crds.crd_paths()]
    assert sorted(p.resolve() for p in paths) == sorted(p.resolve() for p in crd_paths_or_dir())
    assert {p.name for p in paths} == {GPU_CRD.name, WORKLOAD_CRD.name, PROFILE_CRD.name}
    for path in paths:
        assert load_one(path)["kind"] == "CustomResourceDefinition"


def test_crd_paths_honours_the_override_and_reports_missing_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(crds.CRD_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=crds.CRD_DIR_ENV):
        crds.crd_paths()
    for name in crds.CRD_FILES:
        (tmp_path / name).write_text("kind: CustomResourceDefinition\n")
    assert crds.crd_paths() == [tmp_path / name for name in crds.CRD_FILES]


def _gpu_object(**status_overrides: Any) -> dict[str, Any]:
    """A GPU as the apiserver returns it (the shape docs/kind.md creates)."""
    status = {
        "uuid": "GPU-gpu-node-0-0",
        "gpuModel": "A100",
        "vendor": "NVIDIA",
        "index": 0,
        "phase": "Running",
        "nodeSelector": {ann.HOSTNAME_LABEL: "gpu-node-0"},
        "capacity": {"tflops": "312", "vram": "80Gi"},
        "available": {"tflops": "291500m", "vram": 64424509440},
        "runningApps": [{"name": "demo-inference", "namespace": "default", "count": 2}],
        "message": "",
        **status_overrides,
    }
    return {
        "apiVersion": ann.GROUP_VERSION,
        "kind": ann.GPU_KIND,
        "metadata": {
            "name": "gpu-node-0-gpu-0",
            "labels": {ann.GPU_POOL: "default", ann.HOSTNAME_LABEL: "gpu-node-0"},
            "creationTimestamp": "2025-10-09T09:16:46Z",
            "resourceVersion": "42",
            "uid": "5f0c",
        },
        "spec": {},
        "status": status,
    }


def test_gpu_model_reads_status_labels_and_quantities() -> None:
    obj = _gpu_object()
    assert validation_errors(obj, crd_schema(load_one(GPU_CRD))) == []
    gpu = crds.GPU.from_object(obj)
    assert gpu.name == "gpu-node-0-gpu-0"
    assert gpu.node == "gpu-node-0"
    assert gpu.pool == "default"
    assert (gpu.model, gpu.vendor, gpu.index, gpu.phase) == ("A100", "NVIDIA", 0, "Running")
    assert gpu.capacity.tflops == 312.0
    assert gpu.capacity.vram == 80 * 2**30
    assert gpu.available.tflops == 291.5
    assert gpu.available.vram == 60 * 2**30
    assert gpu.status.running_apps[0].count == 2
    assert gpu.usable


def test_gpu_model_node_fallback_and_unusable_states() -> None:
    no_selector = _gpu_object(nodeSelector={})
    assert crds.GPU.from_object(no_selector).node == "gpu-node-0"  # from the hostname label
    no_selector["metadata"]["labels"] = {}
    bare = crds.GPU.from_object(no_selector)
    assert (bare.node, bare.pool, bare.usable) == ("", "", False)
    assert not crds.GPU.from_object(_gpu_object(phase="Pending")).usable
    with pytest.raises(ValidationError, match="capacity"):
        crds.GPU.from_object(_gpu_object(capacity={"tflops": "lots", "vram": "80Gi"}))
    with pytest.raises(ValidationError, match="phase"):
        crds.GPU.from_object(_gpu_object(phase="Broken"))


def _example(path: Path, kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in load_all(path) if d.get("kind") == kind and d["metadata"]["name"] == name]
    return doc


def test_workload_model_parses_the_demo_workload() -> None:
    workload = crds.TensorFusionWorkload.from_object(
        _example(EXAMPLES / "demo-workload.yaml", ann.WORKLOAD_KIND, "demo-inference")
    )
    assert (workload.name, workload.namespace) == ("demo-inference", "default")
    spec = workload.spec
    assert (spec.replicas, spec.pool_name, spec.qos, spec.gpu_count) == (3, "default", "medium", 1)
    assert spec.resources.requests.tflops == 20 and spec.resources.limits.tflops == 40
    assert spec.resources.requests.vram == 10 * 2**30 and spec.resources.limits.vram == 20 * 2**30
    auto = spec.auto_scaling_config.auto_set_resources
    assert auto.enable and auto.target_resource == "all" and auto.applies
    assert workload.status.recommendation is None and workload.status.conditions == []


def test_profile_model_parses_the_autoscaling_example() -> None:
    doc = _example(EXAMPLES / "autoscaling.yaml", ann.WORKLOAD_PROFILE_KIND, "autoscaling-example")
    profile = crds.WorkloadProfile.from_object(doc)
    config = profile.spec.auto_scaling_config
    auto = config.auto_set_resources
    assert (auto.target_tflops_percentile, auto.lower_bound_tflops_percentile) == (0.9, 0.5)
    assert (auto.upper_bound_vram_percentile, auto.request_margin_fraction) == (0.95, 0.15)
    assert auto.confidence_interval.total_seconds() == 24 * 3600
    (rule,) = config.cron_scaling_rules
    assert (rule.name, rule.start, rule.end, rule.counts) == ("test", "0 0 * * Thu", "59 23 * * Thu", True)
    assert rule.desired_resources is not None
    assert rule.desired_resources.requests.tflops == 44 and rule.desired_resources.limits.vram == 10 * 2**30
    # What the model writes back validates against the CRD, so it survives the apiserver unchanged.
    node = schema_at(crd_schema(load_one(PROFILE_CRD)), ".spec.autoScalingConfig")
    assert node is not None
    assert validation_errors(config.to_dict(), node, ".spec.autoScalingConfig") == []
    assert validation_errors(AutoScalingConfig().to_dict(), node, ".spec.autoScalingConfig") == []


def test_models_accept_upstream_lowercase_percentiles() -> None:
    legacy = {
        "targettflopspercentile": "0.8",
        "lowerboundtflopspercentile": 0.4,
        "upperboundtflopspercentile": "0.97",
        "targetvrampercentile": "0.85",
        "lowerboundvrampercentile": "0.5",
        "upperboundvrampercentile": "0.9",
    }
    obj = {
        "apiVersion": ann.GROUP_VERSION,
        "kind": ann.WORKLOAD_KIND,
        "metadata": {"name": "legacy", "namespace": "default"},
        "spec": {"autoScalingConfig": {"autoSetResources": {"enable": True, "targetResource": "tflops", **legacy}}},
    }
    assert validation_errors(obj, crd_schema(load_one(WORKLOAD_CRD))) == []  # not pruned
    auto = crds.TensorFusionWorkload.from_object(obj).spec.auto_scaling_config.auto_set_resources
    assert auto.target_tflops_percentile == 0.8
    assert auto.lower_bound_tflops_percentile == 0.4
    assert auto.upper_bound_tflops_percentile == 0.97
    assert auto.target_vram_percentile == 0.85
    assert auto.lower_bound_vram_percentile == 0.5
    assert auto.upper_bound_vram_percentile == 0.9
    emitted = auto.to_dict()
    assert emitted["targetTflopsPercentile"] == 0.8
    assert not set(LEGACY_PERCENTILES) & set(emitted), "camelCase out"


def test_workload_status_like_the_seed() -> None:
    obj = _example(EXAMPLES / "demo-workload.yaml", ann.WORKLOAD_KIND, "demo-inference")
    obj["status"] = {
        "phase": "Running",
        "workerCount": 3,
        "readyWorkers": 3,
        "conditions": [
            {
                "lastTransitionTime": "2025-10-09T09:16:46Z",
                "message": "TFLOPS scaled up due to (1) below lower bound (2)",
                "reason": ann.REASON_OUT_OF_ESTIMATED_BOUND,
                "status": "True",
                "type": ann.CONDITION_RECOMMENDATION_PROVIDED,
            }
        ],
        "recommendation": {"limits": {"tflops": "13", "vram": "1Gi"}, "requests": {"tflops": "13", "vram": "1Gi"}},
        "appliedRecommendedReplicas": 3,
        "activeCronScalingRule": {
            "enable": True,
            "name": "test",
            "start": "0 0 * * Thu",
            "end": "59 23 * * Thu",
            "desiredResources": {
                "limits": {"tflops": "99", "vram": "10Gi"},
                "requests": {"tflops": "44", "vram": "5Gi"},
            },
        },
        "histogramCheckpoint": {"tflops": {"totalWeight": 1.5, "bucketWeights": {"3": 10000}}},
    }
    assert validation_errors(obj, crd_schema(load_one(WORKLOAD_CRD))) == []
    status = crds.TensorFusionWorkload.from_object(obj).status
    assert status.recommendation is not None
    assert status.recommendation.requests.tflops == 13 and status.recommendation.limits.vram == 2**30
    assert status.applied_recommended_replicas == 3
    assert (status.worker_count, status.ready_workers) == (3, 3)
    condition = status.condition(ann.CONDITION_RECOMMENDATION_PROVIDED)
    assert condition is not None and condition.reason == ann.REASON_OUT_OF_ESTIMATED_BOUND
    assert condition.last_transition_time is not None and condition.last_transition_time.year == 2025
    assert status.condition("Nope") is None
    assert status.active_cron_scaling_rule is not None and status.active_cron_scaling_rule.name == "test"
    assert status.histogram_checkpoint == {"tflops": {"totalWeight": 1.5, "bucketWeights": {"3": 10000}}}


def test_workload_model_rejects_what_the_crd_rejects() -> None:
    base = _example(EXAMPLES / "demo-workload.yaml", ann.WORKLOAD_KIND, "demo-inference")
    schema = crd_schema(load_one(WORKLOAD_CRD))
    for field, value in (("gpuCount", 0), ("gpuCount", 129), ("qos", "urgent"), ("replicas", -1)):
        bad = copy.deepcopy(base)
        bad["spec"][field] = value
        assert validation_errors(bad, schema) != [], (field, value)
        with pytest.raises(ValidationError):
            crds.TensorFusionWorkload.from_object(bad)
