"""Our kubeconfig loader against the real kube-apiserver: an exec plugin's token
with the server's certificate verified (requests and a watch), and the
in-cluster service-account token read again when the kubelet rotates it."""

from __future__ import annotations

import asyncio
import sys
import uuid

import pytest
import yaml

from tfsched.kubeapi.client import KubeApiError, KubeClient
from tfsched.kubeapi.kubeconfig import load_in_cluster

from .conftest import Cluster

pytestmark = pytest.mark.e2e


def serving_ca(cluster: Cluster) -> bytes:
    # kube-apiserver's self-signed serving certificate, written with the CA that signed it.
    return (cluster.dev.root / "pki" / "apiserver.crt").read_bytes()


async def test_an_exec_plugin_token_over_verified_tls_lists_and_watches(cluster, tmp_path):
    (tmp_path / "ca.crt").write_bytes(serving_ca(cluster))
    script = tmp_path / "token-plugin"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        'print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",'
        ' "status": {"token": sys.argv[1]}}))\n'
    )
    script.chmod(0o755)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "dev", "cluster": {"server": cluster.dev.server, "certificate-authority": "ca.crt"}}],
        "users": [
            {
                "name": "plugin",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": "./token-plugin",
                        "args": [cluster.dev.token],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "plugin"}}],
        "current-context": "dev",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    client = await KubeClient.from_config(str(path))
    try:
        listed = await client.get("/api/v1/namespaces", limit=1)
        assert listed["kind"] == "NamespaceList"
        events = client.watch("/api/v1/namespaces", listed["metadata"]["resourceVersion"], timeout_seconds=5)
        name = f"creds-{uuid.uuid4().hex[:8]}"
        cluster.kubectl("create", "namespace", name)
        event = await asyncio.wait_for(anext(events), 30)
        assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == name
        await events.aclose()
        cluster.kubectl("delete", "namespace", name, "--wait=false")
    finally:
        await client.close()


async def test_in_cluster_the_rotated_token_is_read_again(cluster, tmp_path):
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(serving_ca(cluster))
    (account / "token").write_text(cluster.dev.token)
    port = cluster.dev.server.rsplit(":", 1)[1]
    config = load_in_cluster({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}, account)
    client = KubeClient(config)
    try:
        assert (await client.get("/api/v1/namespaces/default"))["metadata"]["name"] == "default"
        (account / "token").write_text("revoked")
        config.credentials._lapses = 0.0  # the minute has passed
        with pytest.raises(KubeApiError) as info:
            await client.get("/api/v1/namespaces/default")
        assert info.value.status == 401
        (account / "token").write_text(cluster.dev.token)  # rotated to a good token
        config.credentials._lapses = 0.0  # another minute
        assert (await client.get("/api/v1/namespaces/default"))["metadata"]["name"] == "default"
    finally:
        await client.close()
