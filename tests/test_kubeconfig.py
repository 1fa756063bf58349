"""The kubeconfig and in-cluster loader, and the credentials it hands the client:
each kind of user, what is fetched again and when, and every refusal naming
the file and field.  Exec plugins are real processes; the servers are real
local HTTP(S) servers (the real API server: tests/e2e/test_kube_credentials.py)."""

from __future__ import annotations

import base64
import json
import ssl
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from tfsched.devcluster import pki
from tfsched.kubeapi import kubeconfig
from tfsched.kubeapi.client import KubeApiError, KubeClient
from tfsched.kubeapi.kubeconfig import KubeConfigError, load, load_file, load_in_cluster


def write_config(folder: Path, cluster: dict, user: dict, **extra) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
        **extra,
    }
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def plugin(folder: Path, body: str, name: str = "plugin.py") -> Path:
    """An exec plugin: a Python script; ``body`` prints the answer."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}\n")
    path.chmod(0o755)
    return path


def exec_user(command: Path | str, api_version: str = "client.authentication.k8s.io/v1", **more) -> dict:
    return {"exec": {"apiVersion": api_version, "command": str(command), "interactiveMode": "Never", **more}}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- a token plugin that counts its runs and can be told which token to give ------------------

COUNTING = """
state = os.environ["STATE"]
runs = int(open(state).read()) + 1 if os.path.exists(state) else 1
open(state, "w").write(str(runs))
extra = json.load(open(state + ".extra")) if os.path.exists(state + ".extra") else {}
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": f"token-{runs}", **extra}}))
"""


def counting_plugin(tmp_path: Path, extra: dict | None = None) -> tuple[dict, Path]:
    """A plugin answering token-N on its Nth run, with ``extra`` (file ``runs.extra``) in its status."""
    state = tmp_path / "runs"
    (tmp_path / "runs.extra").write_text(json.dumps(extra or {}))
    return exec_user(plugin(tmp_path, COUNTING), env=[{"name": "STATE", "value": str(state)}]), state


def runs(state: Path) -> int:
    return int(state.read_text()) if state.exists() else 0


# --- loading ----------------------------------------------------------------------------------


async def test_a_token_user_with_a_relative_ca_file(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_bytes(b"PEM")
    path = write_config(
        tmp_path, {"server": "https://h:6443/", "certificate-authority": "certs/ca.crt"}, {"token": "t"}
    )
    config = load_file(path)
    assert config.server == "https://h:6443" and config.ca_pem == b"PEM" and not config.insecure
    assert (await config.credentials.current()).authorization == "Bearer t"


async def test_the_named_context_wins_over_the_current_one(tmp_path):
    path = write_config(
        tmp_path,
        {"server": "https://a"},
        {"username": "me", "password": "pw"},
        contexts=[
            {"name": "ctx", "context": {"cluster": "c", "user": "nobody"}},
            {"name": "other", "context": {"cluster": "c", "user": "u"}},
        ],
    )
    config = load_file(path, "other")
    assert (await config.credentials.current()).authorization == "Basic " + base64.b64encode(b"me:pw").decode()
    with pytest.raises(KubeConfigError, match=r"contexts.0.context.user: no user named 'nobody'"):
        load_file(path)


def test_kubeconfig_files_of_the_environment_that_do_not_exist_are_skipped(tmp_path, monkeypatch):
    path = write_config(tmp_path, {"server": "http://x"}, {})
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{path}")
    assert load().server == "http://x"
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{tmp_path / 'gone'}")
    with pytest.raises(KubeConfigError, match=r"\$KUBECONFIG names no file that exists: .*absent:.*gone"):
        load()


def write_doc(path: Path, **doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **doc}))
    return path


async def test_kubeconfig_files_of_the_environment_are_merged_as_kubectl_merges_them(tmp_path, monkeypatch):
    # The first file names the context; the second holds the cluster (with a CA relative to
    # itself) and the user; a third defines the same names again, and loses to the first ones.
    first = write_doc(tmp_path / "a" / "config", contexts=[{"name": "ctx", "context": {"cluster": "c", "user": "u"}}])
    (tmp_path / "b" / "pki").mkdir(parents=True)
    (tmp_path / "b" / "pki" / "ca.crt").write_bytes(b"CA-OF-B")
    second = write_doc(
        tmp_path / "b" / "config",
        clusters=[{"name": "c", "cluster": {"server": "https://b", "certificate-authority": "pki/ca.crt"}}],
        users=[{"name": "u", "user": {"token": "token-of-b"}}],
        **{"current-context": "ctx"},
    )
    third = write_doc(
        tmp_path / "c" / "config",
        clusters=[{"name": "c", "cluster": {"server": "https://c"}}],
        users=[{"name": "u", "user": {"token": "token-of-c"}}],
        contexts=[{"name": "ctx", "context": {"cluster": "other", "user": "other"}}],
        **{"current-context": "elsewhere"},
    )
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}:{third}")
    config = load()
    assert config.server == "https://b" and config.ca_pem == b"CA-OF-B"
    assert (await config.credentials.current()).authorization == "Bearer token-of-b"


def test_a_merged_kubeconfig_names_the_file_at_fault(tmp_path, monkeypatch):
    first = write_doc(tmp_path / "a", contexts=[{"name": "ctx", "context": {"cluster": "missing", "user": ""}}])
    second = write_doc(tmp_path / "b", **{"current-context": "ctx"})
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    with pytest.raises(KubeConfigError, match=rf"kubeconfig {first}: contexts.0.context.cluster: no cluster named"):
        load()
    (tmp_path / "b").write_text("clusters: 5\n")
    with pytest.raises(KubeConfigError, match=rf"{tmp_path / 'b'}: clusters: "):
        load()
    (tmp_path / "b").write_text("current-context: nowhere\n")
    with pytest.raises(KubeConfigError, match=r"kubeconfig .*a:.*b: contexts: no context named 'nowhere'"):
        load()


@pytest.mark.parametrize(
    ("cluster", "user", "message"),
    [
        ({"server": "h:1"}, {}, r"clusters.0.cluster.server: 'h:1' is not an http\(s\):// URL"),
        ({"server": "https://h", "certificate-authority-data": "%%%"}, {}, r"certificate-authority-data: not base64"),
        ({"server": "https://h", "certificate-authority": "nope.crt"}, {}, r"certificate-authority: cannot read"),
        (
            {"server": "https://h", "certificate-authority-data": "UEVN", "insecure-skip-tls-verify": True},
            {},
            r"clusters.0.cluster: a certificate authority and insecure-skip-tls-verify exclude each other",
        ),
        ({"server": "https://h", "proxy-url": "http://p"}, {}, r"clusters.0.cluster.proxy-url: .* not supported"),
        ({"server": "https://h"}, {"auth-provider": {"name": "gcp"}}, r"users.0.user.auth-provider: 'gcp'"),
        ({"server": "https://h"}, {"as": "admin"}, r"users.0.user.as: impersonation is not supported"),
        ({"server": "https://h"}, {"token": "t", "username": "u"}, r"more than one authentication method"),
        ({"server": "https://h"}, {"client-certificate": "c.crt"}, r"users.0.user: a client certificate and its key"),
        ({"server": "https://h"}, {"tokenFile": "absent"}, r"users.0.user.tokenFile: cannot read"),
        ({"server": "https://h"}, {"client-key-data": "!", "client-certificate-data": "UEVN"}, r"client-key-data"),
        ({"server": "https://h"}, exec_user("x", "client.authentication.k8s.io/v1alpha1"), r"exec.apiVersion"),
        ({"server": "https://h"}, {"exec": {"apiVersion": "x"}}, r"users.0.user.exec.command: Field required"),
        (
            {"server": "https://h"},
            exec_user("x", interactiveMode="Always"),
            r"users.0.user.exec.interactiveMode: Always needs a terminal",
        ),
    ],
)
def test_what_the_loader_refuses_it_names_by_file_and_field(tmp_path, cluster, user, message):
    path = write_config(tmp_path, cluster, user)
    with pytest.raises(KubeConfigError, match=message) as info:
        load_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: [\n", r"invalid YAML"),
        ("- a\n", r"not a kubeconfig"),
        ("clusters: []\n", r"current-context is not set"),
        ("current-context: x\n", r"contexts: no context named 'x'"),
        ("current-context: x\ncontexts: [{name: x, context: {cluster: y}}]\n", r"no cluster named 'y'"),
        ("clusters: 3\n", r"clusters: Input should be a valid list"),
    ],
)
def test_a_file_that_is_not_a_usable_kubeconfig(tmp_path, text, message):
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(KubeConfigError, match=message) as info:
        load_file(path)
    assert str(path) in str(info.value)


def test_a_key_that_does_not_match_its_certificate_is_refused_at_load(tmp_path):
    ca = pki.make_ca(tmp_path, "ca")
    one, other = pki.issue(tmp_path, ca, "one", server=False), pki.issue(tmp_path, ca, "other", server=False)
    user = {"client-certificate": str(one.cert), "client-key": str(other.key)}
    with pytest.raises(KubeConfigError, match=r"users.0.user: the client certificate and key do not load"):
        load_file(write_config(tmp_path, {"server": "https://h"}, user))


async def test_a_token_file_and_certificate_files_are_read_again_together(tmp_path):
    ca = pki.make_ca(tmp_path, "ca")
    first, second = pki.issue(tmp_path, ca, "first", server=False), pki.issue(tmp_path, ca, "second", server=False)
    (tmp_path / "token").write_text("one")
    (tmp_path / "in-use.crt").write_bytes(first.cert.read_bytes())
    (tmp_path / "in-use.key").write_bytes(first.key.read_bytes())
    user = {"tokenFile": "token", "client-certificate": "in-use.crt", "client-key": "in-use.key"}
    config = load_file(write_config(tmp_path, {"server": "https://h"}, user))
    credential = await config.credentials.current()
    assert credential.authorization == "Bearer one" and credential.certificate.cert_pem == first.cert.read_bytes()
    assert 59 <= config.credentials._lapses - time.monotonic() <= 60  # the sooner of the two: the token's minute
    (tmp_path / "token").write_text("two")
    (tmp_path / "in-use.crt").write_bytes(second.cert.read_bytes())
    (tmp_path / "in-use.key").write_bytes(second.key.read_bytes())
    config.credentials._lapses = 0.0
    credential = await config.credentials.current()
    assert credential.authorization == "Bearer two" and credential.certificate.cert_pem == second.cert.read_bytes()


# --- in a pod ---------------------------------------------------------------------------------


async def test_in_cluster_the_token_is_read_again_each_period(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "ca.crt").write_bytes(b"CA")
    config = load_in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path)
    assert config.server == "https://[fd00::1]:443" and config.ca_pem == b"CA"
    assert (await config.credentials.current()).authorization == "Bearer first"
    (tmp_path / "token").write_text("rotated")
    assert (await config.credentials.current()).authorization == "Bearer first"  # within the minute
    monkeypatch.setattr(config.credentials, "_lapses", 0.0)
    assert (await config.credentials.current()).authorization == "Bearer rotated"


def test_in_cluster_without_its_token_or_address_says_so(tmp_path):
    with pytest.raises(KubeConfigError, match=r"KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set"):
        load_in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, tmp_path)
    with pytest.raises(KubeConfigError, match=r"in-cluster configuration: cannot read .*token"):
        load_in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path)


# --- exec plugins -----------------------------------------------------------------------------


async def test_an_exec_plugin_runs_once_and_again_when_its_credential_nears_expiry(tmp_path):
    soon = rfc3339(datetime.now(UTC) + timedelta(seconds=kubeconfig.EXPIRY_MARGIN_S + 60))
    user, state = counting_plugin(tmp_path, {"expirationTimestamp": soon})
    config = load_file(write_config(tmp_path, {"server": "https://h"}, user))
    assert runs(state) == 0  # loading runs nothing; the client's first request does
    first = await config.credentials.current()
    assert first.authorization == "Bearer token-1" and runs(state) == 1
    # Due one margin before the expiry (the timestamp has whole seconds).
    assert 58 <= config.credentials._lapses - time.monotonic() <= 60
    assert await config.credentials.current() is first and runs(state) == 1
    later = rfc3339(datetime.now(UTC) + timedelta(hours=1))
    config.credentials._lapses = 0.0  # as the clock passes expiry minus the margin
    (tmp_path / "runs.extra").write_text(json.dumps({"expirationTimestamp": later}))
    assert (await config.credentials.current()).authorization == "Bearer token-2" and runs(state) == 2


async def test_an_exec_plugin_is_told_the_cluster_when_asked_and_relative_commands_resolve(tmp_path):
    (tmp_path / "bin").mkdir()
    plugin(
        tmp_path / "bin",
        'info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])\n'
        'print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",'
        ' "status": {"token": json.dumps(info["spec"]) + os.environ["MINE"]}}))',
    )
    cluster = {
        "server": "https://h:1",
        "certificate-authority-data": base64.b64encode(b"CA").decode(),
        "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "a"}}],
    }
    user = exec_user(
        "./bin/plugin.py",
        "client.authentication.k8s.io/v1beta1",
        provideClusterInfo=True,
        env=[{"name": "MINE", "value": "!"}],
    )
    config = load_file(write_config(tmp_path, cluster, user))
    token = (await config.credentials.current()).authorization.removeprefix("Bearer ")
    spec = json.loads(token.removesuffix("!"))
    assert spec["interactive"] is False and token.endswith("!")
    assert spec["cluster"] == {
        "server": "https://h:1",
        "insecure-skip-tls-verify": False,
        "certificate-authority-data": base64.b64encode(b"CA").decode(),
        "config": {"audience": "a"},
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('sys.stderr.write("no credentials here\\n"); sys.exit(3)', r"exited with 3: no credentials here"),
        ('print("nonsense")', r"did not print an ExecCredential as JSON"),
        ('print(json.dumps({"kind": "ExecCredential", "apiVersion": "v9", "status": {}}))', r"answered in 'v9'"),
        (
            'print(json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",'
            ' "status": {"expirationTimestamp": "2026-01-01T00:00:00Z"}}))',
            r"neither a token nor a client certificate",
        ),
        (
            'print(json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",'
            ' "status": {"token": "t", "expirationTimestamp": "tomorrow"}}))',
            r"expirationTimestamp: 'tomorrow' is not an RFC 3339 time",
        ),
    ],
)
async def test_a_failing_plugin_is_a_config_error_naming_the_field(tmp_path, body, message):
    path = write_config(tmp_path, {"server": "https://h"}, exec_user(plugin(tmp_path, body)))
    config = load_file(path)
    with pytest.raises(KubeConfigError, match=message) as info:
        await config.credentials.current()
    assert f"{path}: users.0.user.exec" in str(info.value)


async def test_a_missing_or_hanging_plugin(tmp_path, monkeypatch):
    user = exec_user(tmp_path / "absent", installHint="install it with: brew install thing")
    config = load_file(write_config(tmp_path, {"server": "https://h"}, user))
    with pytest.raises(KubeConfigError, match=r"cannot run .*absent.*; install it with: brew install thing"):
        await config.credentials.current()
    monkeypatch.setattr(kubeconfig, "EXEC_TIMEOUT_S", 0.3)
    config = load_file(
        write_config(tmp_path, {"server": "https://h"}, exec_user(plugin(tmp_path, "import time; time.sleep(30)")))
    )
    with pytest.raises(KubeConfigError, match=r"did not finish in 0 s"):
        await config.credentials.current()


async def test_a_plugin_that_keeps_printing_is_stopped_at_the_output_limit(tmp_path, monkeypatch):
    # Read to its end, this plugin's output would fill memory until the timeout.
    endless = 'line = "x" * 65535 + "\\n"\nwhile True:\n    sys.stdout.write(line)\n    sys.stderr.write(line)'
    config = load_file(write_config(tmp_path, {"server": "https://h"}, exec_user(plugin(tmp_path, endless))))
    # The message says which bound stopped it: the timeout's would say "did not finish".
    with pytest.raises(KubeConfigError, match=r"printed more than 1048576 bytes"):
        await config.credentials.current()
    monkeypatch.setattr(kubeconfig, "EXEC_OUTPUT_LIMIT", 10)
    exact = load_file(
        write_config(tmp_path, {"server": "https://h"}, exec_user(plugin(tmp_path, 'print("x" * 11)', "b.py")))
    )
    with pytest.raises(KubeConfigError, match=r"printed more than 10 bytes"):
        await exact.credentials.current()


async def test_a_plugin_that_fails_later_is_not_run_for_every_request(tmp_path):
    user, state = counting_plugin(tmp_path)
    user["exec"]["env"].append({"name": "FAIL_AFTER", "value": "1"})
    gate = "if runs > int(os.environ.get('FAIL_AFTER', '99')): sys.exit('plugin broke')\n"
    plugin(tmp_path, COUNTING.replace('open(state, "w")', gate + 'open(state, "w")', 1))
    config = load_file(write_config(tmp_path, {"server": "https://h"}, user))
    first = await config.credentials.current()
    config.credentials._lapses = 0.0
    # The renewal fails: the last credential is still sent, and the plugin is not run again at once.
    for _ in range(5):
        assert await config.credentials.current() is first
    assert runs(state) == 1 and config.credentials._failure is not None
    broken = load_file(
        write_config(tmp_path, {"server": "https://h"}, exec_user(plugin(tmp_path, "sys.exit(1)", "b.py")))
    )
    for _ in range(3):
        with pytest.raises(KubeConfigError, match=r"exited with 1"):
            await broken.credentials.current()


async def test_serve_stops_at_start_on_a_broken_plugin(tmp_path):
    path = write_config(tmp_path, {"server": "https://h"}, exec_user(plugin(tmp_path, "sys.exit(1)")))
    with pytest.raises(KubeConfigError, match=r"exited with 1"):
        await KubeClient.from_config(str(path))


# --- the client: 401s, certificates -----------------------------------------------------------


async def token_server(accepted: set[str], seen: list[str]) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "")
        seen.append(token)
        if token not in accepted:
            return web.json_response({"kind": "Status", "reason": "Unauthorized", "message": "no"}, status=401)
        return web.json_response({"ok": token})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


async def test_a_refused_plugin_credential_is_fetched_again_and_the_request_sent_again(tmp_path):
    user, state = counting_plugin(tmp_path)
    seen: list[str] = []
    runner, url = await token_server({"Bearer token-2"}, seen)
    client = KubeClient(load_file(write_config(tmp_path, {"server": url}, user)))
    try:
        assert await client.get("/api") == {"ok": "Bearer token-2"}
        assert seen == ["Bearer token-1", "Bearer token-2"] and runs(state) == 2
        # Refused again at once: no plugin storm, the caller gets the 401.
        seen.clear()
        client.config.credentials._lapses = 0.0
        with pytest.raises(KubeApiError) as info:
            await client.create("/api", {"a": 1})
        assert info.value.status == 401 and seen == ["Bearer token-3"] and runs(state) == 3
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_fixed_token_refused_is_not_sent_twice(tmp_path):
    seen: list[str] = []
    runner, url = await token_server(set(), seen)
    client = KubeClient(load_file(write_config(tmp_path, {"server": url}, {"token": "wrong"})))
    try:
        with pytest.raises(KubeApiError, match="401 Unauthorized"):
            await client.get("/api")
        assert seen == ["Bearer wrong"]
    finally:
        await client.close()
        await runner.cleanup()


async def tls_server(tmp_path: Path) -> tuple[web.AppRunner, str, pki.KeyPair, list[str]]:
    """HTTPS on 127.0.0.1 requiring a client certificate of ``ca``; records each client's CN."""
    ca = pki.make_ca(tmp_path, "ca")
    serving = pki.issue(tmp_path, ca, "server", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert))
    context.load_cert_chain(serving.cert, serving.key)
    context.verify_mode = ssl.CERT_REQUIRED
    names: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert")  # type: ignore[union-attr]
        names.append(dict(item[0] for item in peer["subject"])["commonName"])
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, f"https://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", ca, names  # type: ignore[union-attr]


async def test_client_certificates_from_files_data_and_a_plugin_with_its_renewal(tmp_path):
    runner, url, ca, names = await tls_server(tmp_path)
    first, second = pki.issue(tmp_path, ca, "first", server=False), pki.issue(tmp_path, ca, "second", server=False)
    cluster = {"server": url, "certificate-authority": str(ca.cert)}
    clients = []
    try:
        by_file = KubeClient(
            load_file(
                write_config(tmp_path, cluster, {"client-certificate": str(first.cert), "client-key": str(first.key)})
            )
        )
        inline = {
            "client-certificate-data": base64.b64encode(second.cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(second.key.read_bytes()).decode(),
        }
        by_data = KubeClient(load_file(write_config(tmp_path, cluster, inline)))
        # The plugin gives the first pair, then (once it lapses) the second.
        body = (
            "pair = sys.argv[1] if not os.path.exists(sys.argv[3]) else sys.argv[2]\n"
            'open(sys.argv[3], "w").write("ran")\n'
            'print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {'
            ' "clientCertificateData": open(pair + ".crt").read(), "clientKeyData": open(pair + ".key").read()}}))'
        )
        pairs = [str(tmp_path / "first"), str(tmp_path / "second"), str(tmp_path / "ran")]
        by_plugin = KubeClient(
            load_file(write_config(tmp_path, cluster, exec_user(plugin(tmp_path, body), args=pairs)))
        )
        clients = [by_file, by_data, by_plugin]
        for client in clients:
            await client.get("/x")
        assert names == ["first", "second", "first"]
        by_plugin.config.credentials._lapses = 0.0
        await by_plugin.get("/x")
        assert names[-1] == "second"  # the renewed certificate, on a new connection
    finally:
        for client in clients:
            await client.close()
        await runner.cleanup()


async def test_the_server_certificate_is_verified_against_the_named_ca(tmp_path):
    runner, url, _, _ = await tls_server(tmp_path)
    stranger = pki.make_ca(tmp_path, "stranger")
    client = KubeClient(
        load_file(write_config(tmp_path, {"server": url, "certificate-authority": str(stranger.cert)}, {}))
    )
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.get("/x")
    finally:
        await client.close()
        await runner.cleanup()
