"""TLS on the extender's listener: plain HTTP and HTTPS without a client
certificate never reach /bind; kube-scheduler's client certificate does;
probes use a plain listener of their own; rotated certificates are picked up."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import orjson
import pytest

from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.cache import Kind
from tfsched.clustermodel.objects import gpu_object, gpu_pod, node_object
from tfsched.devcluster import pki as pki_files
from tfsched.extender.bind import Binder, MemoryPodWriter
from tfsched.extender.tls import TLSConfigError, TLSFiles, server_context
from tfsched.kubeapi.leader import WriterGate
from tfsched.server import Listener, Server

GiB = 2**30


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    pair = pki_files.make_ca(d, name)
    return pair.cert, pair.key


def issue(d: Path, ca: tuple[Path, Path], name: str, *, server: bool) -> tuple[Path, Path]:
    pair = pki_files.issue(d, pki_files.KeyPair(*ca), name, server=server)
    return pair.cert, pair.key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    other_ca = make_ca(d, "other-ca")
    return {
        "ca": ca,
        "server": issue(d, ca, "server", server=True),
        "scheduler": issue(d, ca, "kube-scheduler", server=False),
        "stranger": issue(d, other_ca, "stranger", server=False),
    }


def client_context(pki, cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"][0]))
    if cert is not None:
        context.load_cert_chain(*map(str, pki[cert]))
    return context


@pytest.fixture
async def server(pki, tmp_path):
    state = ClusterState()
    state.load(
        {
            Kind.NODE: [node_object("a")],
            Kind.GPU: [gpu_object("a", 0, tflops=100, vram=16 * GiB)],
            Kind.POD: [gpu_pod("p", tflops="10", vram="1Gi", uid="u1")],
        }
    )
    gate = WriterGate()
    srv = Server(state, Binder(state, MemoryPodWriter(state), gate), gate)
    files = TLSFiles(pki["server"][0], pki["server"][1], pki["ca"][0])
    port = await srv.start("127.0.0.1", 0, tls=files, health=Listener("127.0.0.1", 0))
    yield srv, port
    await srv.stop()


async def post_bind(port: int, context: ssl.SSLContext | bool, scheme: str = "https") -> tuple[int, dict]:
    body = orjson.dumps({"PodName": "p", "PodNamespace": "default", "PodUID": "u1", "Node": "a"})
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{scheme}://127.0.0.1:{port}/bind", data=body, ssl=context) as resp,
    ):
        return resp.status, await resp.json()


async def test_bind_needs_the_schedulers_client_certificate(server, pki):
    srv, port = server
    with pytest.raises(aiohttp.ClientError):
        await post_bind(port, False, scheme="http")  # plain HTTP on the TLS port
    with pytest.raises(aiohttp.ClientError):
        await post_bind(port, client_context(pki, None))  # HTTPS, no client certificate
    with pytest.raises(aiohttp.ClientError):
        await post_bind(port, client_context(pki, "stranger"))  # a certificate from another CA
    assert not srv.state.ledger.allocations
    status, body = await post_bind(port, client_context(pki, "scheduler"))
    assert status == 200 and body["Error"] == ""
    assert "u1" in srv.state.ledger.allocations


async def test_probes_and_metrics_on_their_own_plain_listener(server):
    srv, _ = server
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with session.get(f"http://127.0.0.1:{srv.health_port}{path}") as resp:
                assert resp.status == 200, path
        async with session.post(f"http://127.0.0.1:{srv.health_port}/bind", data=b"{}") as resp:
            assert resp.status in (404, 405)  # the verbs are not served there


async def test_rotated_certificates_are_used_for_new_connections(pki, tmp_path):
    from tfsched.extender.tls import reload_on_change

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(pki["server"][0].read_bytes())
    key.write_bytes(pki["server"][1].read_bytes())
    files = TLSFiles(cert, key)
    context = server_context(files)
    task = asyncio.create_task(reload_on_change(context, files, every=0.05))
    try:
        other = issue(tmp_path, pki["ca"], "rotated", server=True)
        cert.write_bytes(other[0].read_bytes())
        key.write_bytes(other[1].read_bytes())
        await asyncio.sleep(0.3)
        assert context.get_ca_certs() == []  # no client CA configured
        # The context now serves the rotated certificate: check by a handshake.
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki, None))
        peer = writer.get_extra_info("peercert")
        assert dict(x[0] for x in peer["subject"])["commonName"] == "rotated"
        writer.close()
        server.close()
    finally:
        task.cancel()


async def test_a_tls_handshake_that_never_comes_is_closed_within_the_head_timeout(pki, monkeypatch):
    from tfsched.extender import httpserver

    monkeypatch.setattr(httpserver, "HEAD_TIMEOUT_S", 0.3)
    files = TLSFiles(pki["server"][0], pki["server"][1], pki["ca"][0])
    listener = httpserver.HttpServer({})
    port = await listener.start("127.0.0.1", 0, server_context(files))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # TCP only, no ClientHello
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert loop.time() - started < 2  # asyncio's own default would hold it 60 s
        writer.close()
    finally:
        await listener.close()


def test_unusable_files_are_named(tmp_path, pki):
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate")
    with pytest.raises(TLSConfigError, match=r"bad\.crt"):
        server_context(TLSFiles(bad, pki["server"][1]))


def test_cli_names_what_is_wrong_with_the_tls_flags(tmp_path, pki):
    from click.testing import CliRunner

    from tfsched.cli import main

    cert, key = map(str, pki["server"])
    bad = tmp_path / "bad.pem"
    bad.write_text("nope")
    runner = CliRunner()
    for args, message in (
        (["--tls-cert-file", cert], "go together"),
        (["--client-ca-file", str(pki["ca"][0])], "needs --tls-cert-file"),
        (["--tls-cert-file", str(bad), "--tls-private-key-file", key], "bad.pem"),
    ):
        result = runner.invoke(main, ["serve", "--snapshot", str(bad), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
