"""Where the API server is and who we are to it, loaded as kubectl loads it.

A kubeconfig's current context (or the one named) picks a cluster and a user;
relative paths are relative to the kubeconfig's folder.  In a pod without one,
the service account's token and CA.  What is read here, and how often:

- a token file (``tokenFile``, the in-cluster token) is read again each minute, as
  client-go does: projected service-account tokens are rotated by the kubelet;
- client certificate files are read again every five minutes (client-go's cert
  rotation), so a renewed certificate is used by the next new connection;
- an exec plugin (``client.authentication.k8s.io/v1`` or ``v1beta1``) runs when a
  credential is first needed, again once its ``expirationTimestamp`` is near,
  and again after the API server refuses its credential (401).

Our own loader rather than kubernetes_asyncio's: that package cost 0.3-0.5 s of
import on the way to ready and ~34 MB of memory (bench/RESULTS.md, issue 13),
and it never ran an exec plugin again once its token expired.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tfsched.clustermodel.times import parse_time
from tfsched.clustermodel.yamlfile import YamlFileError, problems, read_yaml

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_FILE_REREAD_S = 60.0
CERT_FILE_REREAD_S = 300.0
EXEC_TIMEOUT_S = 60.0  # a plugin that hangs must not hang every request behind it
EXEC_OUTPUT_LIMIT = 1 << 20  # of stdout; a plugin printing more is stopped there
EXEC_STDERR_KEPT = 4096  # of a failing plugin's stderr, the end is what explains it
KILL_DRAIN_S = 5.0  # a killed plugin's pipes drained this long at most before it is reaped
EXPIRY_MARGIN_S = 10.0  # fetch a credential this long before it expires, not after a 401
REFETCH_AFTER_REFUSAL_S = 5.0  # at most one refetch per this after 401s (a wrong credential is not a storm)
RETRY_FAILED_FETCH_S = 5.0  # a plugin that fails is not run again for every request in between
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


class KubeConfigError(Exception):
    """No usable Kubernetes configuration; the message says which and why."""


# --- the kubeconfig file (clientcmd/api/v1), the fields we read --------------------------------


class _Model(BaseModel):
    # Unknown fields (preferences, extensions, fields of newer clients) are ignored as kubectl does.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ClusterEntry(_Model):
    server: str = ""
    certificate_authority: str | None = Field(None, alias="certificate-authority")
    certificate_authority_data: str | None = Field(None, alias="certificate-authority-data")
    insecure_skip_tls_verify: bool = Field(False, alias="insecure-skip-tls-verify")
    tls_server_name: str | None = Field(None, alias="tls-server-name")
    proxy_url: str | None = Field(None, alias="proxy-url")
    extensions: list[dict[str, Any]] = Field(default_factory=list)


class EnvVar(_Model):
    name: str
    value: str


class ExecConfig(_Model):
    command: str
    api_version: str = Field(alias="apiVersion")
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    install_hint: str = Field("", alias="installHint")
    provide_cluster_info: bool = Field(False, alias="provideClusterInfo")
    interactive_mode: Literal["Never", "IfAvailable", "Always"] = Field("IfAvailable", alias="interactiveMode")


class UserEntry(_Model):
    client_certificate: str | None = Field(None, alias="client-certificate")
    client_certificate_data: str | None = Field(None, alias="client-certificate-data")
    client_key: str | None = Field(None, alias="client-key")
    client_key_data: str | None = Field(None, alias="client-key-data")
    token: str | None = None
    token_file: str | None = Field(None, alias="tokenFile")
    username: str | None = None
    password: str | None = None
    impersonate: str | None = Field(None, alias="as")
    impersonate_uid: str | None = Field(None, alias="as-uid")
    impersonate_groups: list[str] = Field(default_factory=list, alias="as-groups")
    impersonate_extra: dict[str, list[str]] = Field(default_factory=dict, alias="as-user-extra")
    exec: ExecConfig | None = None
    auth_provider: dict[str, Any] | None = Field(None, alias="auth-provider")


class ContextEntry(_Model):
    cluster: str = ""
    user: str = ""


class NamedCluster(_Model):
    name: str
    cluster: ClusterEntry


class NamedUser(_Model):
    name: str
    user: UserEntry = Field(default_factory=UserEntry)


class NamedContext(_Model):
    name: str
    context: ContextEntry


class KubeconfigFile(_Model):
    clusters: list[NamedCluster] = Field(default_factory=list)
    users: list[NamedUser] = Field(default_factory=list)
    contexts: list[NamedContext] = Field(default_factory=list)
    current_context: str = Field("", alias="current-context")


# --- what a client needs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ClientCertificate:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Credential:
    """What goes with each request: the Authorization header and the TLS client certificate."""

    authorization: str | None = None
    certificate: ClientCertificate | None = None


Fetch = Callable[[], Awaitable[tuple[Credential, float | None]]]  # the credential and for how many seconds it holds
# An Authorization header, a certificate issued with it (an exec plugin's), and for how many seconds they hold.
Authorize = Callable[[], Awaitable[tuple[str | None, ClientCertificate | None, float | None]]]


class Credentials:
    """The credential now: fetched when first asked for, again when it lapses and,
    if it can change (a file, a plugin), after the API server refused it."""

    def __init__(self, fetch: Fetch, *, refetch_on_refusal: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._refetch_on_refusal = refetch_on_refusal
        self._clock = clock
        self._credential: Credential | None = None
        self._lapses: float | None = None
        self._refused_at = -REFETCH_AFTER_REFUSAL_S
        self._failure: KubeConfigError | None = None
        self._failed_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def fixed(cls, credential: Credential) -> Credentials:
        async def fetch() -> tuple[Credential, float | None]:
            return credential, None

        return cls(fetch, refetch_on_refusal=False)

    @classmethod
    def composed(
        cls,
        authorize: Authorize,
        certificate: Callable[[], ClientCertificate] | None,
        certificate_holds_s: float | None,
        *,
        can_change: bool,
    ) -> Credentials:
        """The user's header and certificate, each from its own source, fetched again when
        the sooner of the two lapses."""

        async def fetch() -> tuple[Credential, float | None]:
            authorization, issued, holds_s = await authorize()
            chosen = issued or (certificate() if certificate is not None else None)
            periods = [p for p in (holds_s, None if issued else certificate_holds_s) if p is not None]
            return Credential(authorization, chosen), min(periods, default=None)

        return cls(fetch, refetch_on_refusal=can_change)

    def _stale(self) -> bool:
        return self._credential is None or (self._lapses is not None and self._clock() >= self._lapses)

    async def current(self) -> Credential:
        if self._stale():
            async with self._lock:  # one fetch for all the requests that found it stale
                if self._stale():
                    await self._refetch()
        assert self._credential is not None
        return self._credential

    async def _refetch(self) -> None:
        """Fetch anew; when that fails, keep the credential we had (the API server decides
        whether it still works) and do not try again for a while."""
        now = self._clock()
        if self._failure is None or now - self._failed_at >= RETRY_FAILED_FETCH_S:
            try:
                self._credential, holds_s = await self._fetch()
                self._lapses = None if holds_s is None else self._clock() + holds_s
                self._failure = None
                return
            except KubeConfigError as exc:
                self._failure, self._failed_at = exc, now
                if self._credential is not None:
                    log.warning("could not renew the API server credential, still using the last one: %s", exc)
        if self._credential is None:
            raise KubeConfigError(str(self._failure))

    def refused(self, credential: Credential) -> bool:
        """The API server answered 401 to ``credential``: True when a fresh one will be
        fetched for the next request (the caller may retry once), False when it cannot change."""
        now = self._clock()
        if not self._refetch_on_refusal or now - self._refused_at < REFETCH_AFTER_REFUSAL_S:
            return False
        if credential is self._credential:
            self._refused_at = now
            self._lapses = now
        return True


@dataclass(frozen=True)
class KubeConfig:
    """The API server's address, how to trust it, and our credentials."""

    server: str
    credentials: Credentials
    ca_pem: bytes | None = None  # None: the system's roots
    insecure: bool = False
    tls_server_name: str | None = None

    def ssl_context(self, certificate: ClientCertificate | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode("ascii") if self.ca_pem else None)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if certificate is not None:
            load_client_certificate(context, certificate)
        return context


def load_client_certificate(context: ssl.SSLContext, certificate: ClientCertificate) -> None:
    # The ssl module loads a key pair only from files: a private folder, gone before we return.
    with tempfile.TemporaryDirectory(prefix="tfsched-cert-") as folder:
        cert, key = Path(folder) / "tls.crt", Path(folder) / "tls.key"
        for path, data in ((cert, certificate.cert_pem), (key, certificate.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        context.load_cert_chain(cert, key)


# --- loading -----------------------------------------------------------------------------------


def kubeconfig_files_from_env() -> list[str]:
    """The files ``$KUBECONFIG`` lists (``os.pathsep``-separated), in order."""
    return [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]


def load(kubeconfig: str | None = None, context: str | None = None) -> KubeConfig:
    """Configured as kubectl is: ``kubeconfig``, else the files of ``$KUBECONFIG`` merged
    (missing ones skipped), else the pod's service account when running in a cluster,
    else ``~/.kube/config``.  Raises :class:`KubeConfigError` naming the file and field at fault."""
    if kubeconfig:
        if not Path(kubeconfig).is_file():
            raise KubeConfigError(f"kubeconfig {kubeconfig} does not exist")
        return load_files([Path(kubeconfig)], context)
    listed = kubeconfig_files_from_env()
    if listed:
        existing = [Path(p) for p in listed if Path(p).is_file()]
        if not existing:
            raise KubeConfigError(f"$KUBECONFIG names no file that exists: {os.pathsep.join(listed)}")
        return load_files(existing, context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return load_in_cluster()
    home = Path.home() / ".kube" / "config"
    if home.is_file():
        return load_files([home], context)
    raise KubeConfigError(
        "no Kubernetes configuration: pass --kubeconfig, set $KUBECONFIG, create ~/.kube/config, or run inside a pod"
    )


def load_in_cluster(environ: dict[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR) -> KubeConfig:
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeConfigError(
            "in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set"
        )
    token_path, ca_path = account_dir / "token", account_dir / "ca.crt"
    where = "in-cluster configuration"
    _read_token(token_path, where)  # fail now, not at the first request
    ca = _read_file(ca_path, where) if ca_path.exists() else None
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    credentials = Credentials.composed(_token_file_authorization(token_path, where), None, None, can_change=True)
    return KubeConfig(server, credentials, ca_pem=ca)


def load_file(path: Path, context_name: str | None = None) -> KubeConfig:
    return load_files([path], context_name)


@dataclass(frozen=True)
class _Found:
    """A named entry of a kubeconfig and where it was read: its file, and its place there."""

    entry: Any
    path: Path
    index: int

    def at(self, section: str, field: str) -> str:
        return f"kubeconfig {self.path}: {section}.{self.index}.{field}"


def _read_kubeconfig(path: Path) -> KubeconfigFile:
    try:
        raw = read_yaml(path)
    except YamlFileError as exc:
        raise KubeConfigError(str(exc)) from None
    if not isinstance(raw, dict):
        raise KubeConfigError(f"kubeconfig {path}: not a kubeconfig (a mapping with clusters, users and contexts)")
    try:
        return KubeconfigFile.model_validate(raw)
    except ValidationError as exc:
        raise KubeConfigError("; ".join(problems(exc, path, KubeconfigFile))) from None


def load_files(paths: list[Path], context_name: str | None = None) -> KubeConfig:
    """The kubeconfig files merged as kubectl merges ``$KUBECONFIG``: for each cluster, user
    and context name, and for ``current-context``, the first file that sets it wins; relative
    paths resolve against the file the entry came from."""
    docs = [(path, _read_kubeconfig(path)) for path in paths]
    clusters: dict[str, _Found] = {}
    users: dict[str, _Found] = {}
    contexts: dict[str, _Found] = {}
    for path, doc in docs:
        for named, section in ((clusters, doc.clusters), (users, doc.users), (contexts, doc.contexts)):
            for i, entry in enumerate(section):
                named.setdefault(entry.name, _Found(entry, path, i))
    where = f"kubeconfig {os.pathsep.join(map(str, paths))}"
    name = context_name or next((doc.current_context for _, doc in docs if doc.current_context), "")
    if not name:
        raise KubeConfigError(f"{where}: current-context is not set and no context was named")
    found = contexts.get(name)
    if found is None:
        raise KubeConfigError(f"{where}: contexts: no context named {name!r}")
    ctx = found.entry.context
    cluster = clusters.get(ctx.cluster)
    if cluster is None:
        raise KubeConfigError(f"{found.at('contexts', 'context.cluster')}: no cluster named {ctx.cluster!r}")
    user = users.get(ctx.user)
    if ctx.user and user is None:
        raise KubeConfigError(f"{found.at('contexts', 'context.user')}: no user named {ctx.user!r}")
    if user is None:  # a context without a user: no credential
        user = _Found(NamedUser(name=""), cluster.path, -1)
    return _from_entries(
        cluster.entry.cluster,
        cluster.path.parent,
        cluster.at("clusters", "cluster"),
        user.entry.user,
        user.path.parent,
        user.at("users", "user"),
    )


def _from_entries(
    cluster: ClusterEntry, cluster_base: Path, cluster_at: str, user: UserEntry, user_base: Path, user_at: str
) -> KubeConfig:
    server = cluster.server.rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise KubeConfigError(f"{cluster_at}.server: {cluster.server!r} is not an http(s):// URL")
    if cluster.proxy_url:
        raise KubeConfigError(f"{cluster_at}.proxy-url: a proxy to the API server is not supported")
    ca = None
    if cluster.certificate_authority_data:
        ca = _base64(cluster.certificate_authority_data, f"{cluster_at}.certificate-authority-data")
    elif cluster.certificate_authority:
        ca = _read_file(_resolve(cluster_base, cluster.certificate_authority), f"{cluster_at}.certificate-authority")
    if ca is not None and cluster.insecure_skip_tls_verify:
        raise KubeConfigError(f"{cluster_at}: a certificate authority and insecure-skip-tls-verify exclude each other")
    if user.impersonate or user.impersonate_uid or user.impersonate_groups or user.impersonate_extra:
        raise KubeConfigError(f"{user_at}.as: impersonation is not supported; give tfsched its own credential")
    if user.auth_provider is not None:
        provider = user.auth_provider.get("name", "?")
        raise KubeConfigError(
            f"{user_at}.auth-provider: {provider!r} is not supported (kubectl dropped auth providers): "
            "use an exec plugin, such as kubelogin or your cloud's"
        )
    methods = [
        m
        for m, used in (
            ("token", bool(user.token or user.token_file)),
            ("username/password", bool(user.username or user.password)),
            ("exec", user.exec is not None),
        )
        if used
    ]
    if len(methods) > 1:
        raise KubeConfigError(f"{user_at}: more than one authentication method ({', '.join(methods)}); use one")
    config = KubeConfig(
        server,
        _user_credentials(user, user_base, user_at, cluster, ca),
        ca_pem=ca,
        insecure=cluster.insecure_skip_tls_verify,
        tls_server_name=cluster.tls_server_name or None,
    )
    return config


def _pem_source(data: str | None, file: str | None, base: Path, at: str) -> tuple[Callable[[], bytes], bool] | None:
    """How to read a PEM the user entry names inline (``…-data``) or by file; True for a file."""
    if data:
        value = _base64(data, f"{at}-data")
        return (lambda: value), False
    if file:
        path = _resolve(base, file)
        return (lambda: _read_file(path, at)), True
    return None


def _user_credentials(user: UserEntry, base: Path, at: str, cluster: ClusterEntry, ca: bytes | None) -> Credentials:
    cert = _pem_source(user.client_certificate_data, user.client_certificate, base, f"{at}.client-certificate")
    key = _pem_source(user.client_key_data, user.client_key, base, f"{at}.client-key")
    if (cert is None) != (key is None):
        raise KubeConfigError(f"{at}: a client certificate and its key go together")
    read_certificate = None
    certificate_holds_s = None
    if cert is not None and key is not None:
        read_cert, read_key = cert[0], key[0]

        def read_certificate() -> ClientCertificate:
            return ClientCertificate(read_cert(), read_key())

        try:  # a key that does not match its certificate is found now, not at the first handshake
            load_client_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), read_certificate())
        except ssl.SSLError as exc:
            raise KubeConfigError(f"{at}: the client certificate and key do not load: {exc.reason or exc}") from None
        if cert[1] or key[1]:
            certificate_holds_s = CERT_FILE_REREAD_S

    if user.exec is not None:
        authorize = _exec_authorization(user.exec, base, f"{at}.exec", cluster, ca)
    elif user.token_file and not user.token:  # kubectl: an inline token wins over the file
        path = _resolve(base, user.token_file)
        _read_token(path, f"{at}.tokenFile")
        authorize = _token_file_authorization(path, f"{at}.tokenFile")
    else:
        header = None
        if user.token:
            header = f"Bearer {user.token.strip()}"
        elif user.username is not None or user.password is not None:
            pair = f"{user.username or ''}:{user.password or ''}".encode()
            header = "Basic " + base64.b64encode(pair).decode("ascii")
        if certificate_holds_s is None:
            return Credentials.fixed(Credential(header, read_certificate() if read_certificate else None))

        async def authorize() -> tuple[str | None, ClientCertificate | None, float | None]:
            return header, None, None

    return Credentials.composed(authorize, read_certificate, certificate_holds_s, can_change=True)


def _token_file_authorization(path: Path, at: str) -> Authorize:
    async def reread() -> tuple[str | None, ClientCertificate | None, float | None]:
        return f"Bearer {_read_token(path, at)}", None, TOKEN_FILE_REREAD_S

    return reread


def _exec_authorization(spec: ExecConfig, base: Path, at: str, cluster: ClusterEntry, ca: bytes | None) -> Authorize:
    if spec.api_version not in EXEC_API_VERSIONS:
        raise KubeConfigError(f"{at}.apiVersion: {spec.api_version!r} is not one of {', '.join(EXEC_API_VERSIONS)}")
    if spec.interactive_mode == "Always":
        raise KubeConfigError(f"{at}.interactiveMode: Always needs a terminal; a server has none")
    # A command with a slash in it is relative to the kubeconfig's folder; a bare name is looked up on $PATH.
    command = str(_resolve(base, spec.command)) if os.sep in spec.command else spec.command
    info: dict[str, Any] = {"apiVersion": spec.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    if spec.provide_cluster_info:
        described: dict[str, Any] = {
            "server": cluster.server,
            "insecure-skip-tls-verify": cluster.insecure_skip_tls_verify,
        }
        if cluster.tls_server_name:
            described["tls-server-name"] = cluster.tls_server_name
        if ca is not None:
            described["certificate-authority-data"] = base64.b64encode(ca).decode("ascii")
        for extension in cluster.extensions:
            if extension.get("name") == "client.authentication.k8s.io/exec":
                described["config"] = extension.get("extension")
        info["spec"]["cluster"] = described
    env = {**os.environ, **{var.name: var.value for var in spec.env}, "KUBERNETES_EXEC_INFO": json.dumps(info)}

    async def run() -> tuple[str | None, ClientCertificate | None, float | None]:
        status = await _run_plugin(command, spec, env, at)
        token = status.get("token")
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if bool(cert) != bool(key):
            raise KubeConfigError(f"{at}: the plugin's status has one of clientCertificateData and clientKeyData")
        if not token and not cert:
            raise KubeConfigError(f"{at}: the plugin's status has neither a token nor a client certificate")
        if not (isinstance(token or "", str) and isinstance(cert or "", str) and isinstance(key or "", str)):
            raise KubeConfigError(f"{at}: the plugin's status fields must be strings")
        holds_s = None
        if status.get("expirationTimestamp"):
            try:
                expires = parse_time(status["expirationTimestamp"])
            except ValueError as exc:
                raise KubeConfigError(f"{at}: the plugin's expirationTimestamp: {exc}") from None
            holds_s = max(0.0, (expires - datetime.now(UTC)).total_seconds() - EXPIRY_MARGIN_S)
        issued = ClientCertificate(cert.encode(), key.encode()) if cert else None
        return (f"Bearer {token}" if token else None), issued, holds_s

    return run


async def _run_plugin(command: str, spec: ExecConfig, env: dict[str, str], at: str) -> dict[str, Any]:
    try:
        proc = await asyncio.create_subprocess_exec(
            command,
            *spec.args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        hint = f"; {spec.install_hint.strip()}" if spec.install_hint.strip() else ""
        raise KubeConfigError(f"{at}: cannot run {command!r}: {exc.strerror or exc}{hint}") from None
    try:
        async with asyncio.timeout(EXEC_TIMEOUT_S):
            out, err = await _bounded_output(proc)
            await proc.wait()
    except TimeoutError:
        await _killed(proc)
        raise KubeConfigError(f"{at}: {command!r} did not finish in {EXEC_TIMEOUT_S:.0f} s") from None
    except _TooMuchOutput:
        await _killed(proc)
        raise KubeConfigError(f"{at}: {command!r} printed more than {EXEC_OUTPUT_LIMIT} bytes") from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-500:]
        raise KubeConfigError(f"{at}: {command!r} exited with {proc.returncode}" + (f": {tail}" if tail else ""))
    try:
        answer = json.loads(out)
    except ValueError:
        raise KubeConfigError(f"{at}: {command!r} did not print an ExecCredential as JSON") from None
    if not isinstance(answer, dict) or answer.get("kind") != "ExecCredential":
        raise KubeConfigError(f"{at}: {command!r} did not print an ExecCredential")
    if answer.get("apiVersion") != spec.api_version:
        raise KubeConfigError(
            f"{at}: {command!r} answered in {answer.get('apiVersion')!r}, the kubeconfig asks for {spec.api_version!r}"
        )
    status = answer.get("status")
    if not isinstance(status, dict):
        raise KubeConfigError(f"{at}: {command!r} printed an ExecCredential without a status")
    return status


class _TooMuchOutput(Exception):
    pass


async def _bounded_output(proc: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """The plugin's stdout, at most EXEC_OUTPUT_LIMIT bytes (a plugin that keeps printing
    is stopped there, not read into memory until its timeout), and the end of its stderr."""

    async def stdout() -> bytes:
        assert proc.stdout is not None
        data = bytearray()
        while chunk := await proc.stdout.read(1 << 16):
            data += chunk
            if len(data) > EXEC_OUTPUT_LIMIT:
                raise _TooMuchOutput()
        return bytes(data)

    async def stderr() -> bytes:
        assert proc.stderr is not None
        tail = b""
        while chunk := await proc.stderr.read(1 << 16):
            tail = (tail + chunk)[-EXEC_STDERR_KEPT:]
        return tail

    try:
        async with asyncio.TaskGroup() as group:
            out, err = group.create_task(stdout()), group.create_task(stderr())
    except* _TooMuchOutput:
        raise _TooMuchOutput() from None
    return out.result(), err.result()


async def _killed(proc: asyncio.subprocess.Process) -> None:
    """Kill the plugin and reap it.  Its pipes are drained to their end first: asyncio's
    wait() returns only once they are closed, and a pipe no longer read stays open."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    # Bounded: a child the plugin left behind could hold a pipe open.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_DRAIN_S):
            for stream in (proc.stdout, proc.stderr):
                while stream is not None and await stream.read(1 << 16):
                    pass
            await proc.wait()


def _resolve(base: Path, name: str) -> Path:
    path = Path(os.path.expanduser(name))
    return path if path.is_absolute() else base / path


def _read_file(path: Path, at: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KubeConfigError(f"{at}: cannot read {path}: {exc.strerror or exc}") from None


def _read_token(path: Path, at: str) -> str:
    token = _read_file(path, at).decode("utf-8", errors="replace").strip()
    if not token:
        raise KubeConfigError(f"{at}: {path} is empty")
    return token


def _base64(text: str, at: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KubeConfigError(f"{at}: not base64") from None
