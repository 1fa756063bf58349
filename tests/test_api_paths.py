"""Names from objects are quoted into API paths: never a query string, never another path."""

from __future__ import annotations

from tfsched.kubeapi.client import namespaced_path, pod_path


def test_pod_names_cannot_become_query_strings_or_paths() -> None:
    assert pod_path("ns", "other?dryRun=All") == "/api/v1/namespaces/ns/pods/other%3FdryRun%3DAll"
    assert pod_path("../kube-system", "p/../../x", "binding") == (
        "/api/v1/namespaces/..%2Fkube-system/pods/p%2F..%2F..%2Fx/binding"
    )
    assert pod_path("ns", "plain-name") == "/api/v1/namespaces/ns/pods/plain-name"


def test_custom_resource_paths_quote_names() -> None:
    assert namespaced_path("tensor-fusion.ai/v1", "a b", "tensorfusionworkloads", "w#1", "status") == (
        "/apis/tensor-fusion.ai/v1/namespaces/a%20b/tensorfusionworkloads/w%231/status"
    )
    assert namespaced_path("apps/v1", "ns", "deployments") == "/apis/apps/v1/namespaces/ns/deployments"
