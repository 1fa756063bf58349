"""TLS for the extender's listener: HTTPS, and mutual TLS for the verbs.

kube-scheduler presents a client certificate through the extender's
``tlsConfig``; with a client CA configured, a connection without a
certificate signed by it never reaches a handler, so ``/bind`` is not open to
whoever can reach the port.  Certificates are re-read when their files change
(cert-manager and the chart's rotation replace them in place): each new
connection gets the current ones.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class TLSConfigError(ValueError):
    """Certificate files that cannot be used; the message names the file."""


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # required client certificates when set

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


def _stamp(files: TLSFiles) -> tuple[float, ...]:
    return tuple(p.stat().st_mtime_ns for p in files.paths())


def _load(context: ssl.SSLContext, files: TLSFiles) -> None:
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load the certificate {files.cert} with key {files.key}: {exc}") from None
    if files.client_ca is not None:
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load the client CA {files.client_ca}: {exc}") from None


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """A server context: TLS 1.2+, and client certificates required when a client CA is given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
    _load(context, files)
    return context


async def reload_on_change(context: ssl.SSLContext, files: TLSFiles, every: float = 5.0) -> None:
    """Re-read the files into ``context`` whenever they change; a bad new file
    is logged and the previous certificates stay in use."""
    stamp: tuple[float, ...] = ()  # unknown: the files may have changed since the context was built
    while True:
        stamp = _reload_if_changed(context, files, stamp)
        await asyncio.sleep(every)


def _reload_if_changed(context: ssl.SSLContext, files: TLSFiles, stamp: tuple[float, ...]) -> tuple[float, ...]:
    try:
        current = _stamp(files)
    except OSError:  # mid-rotation: a file briefly missing
        return stamp
    if current == stamp:
        return stamp
    try:
        _load(context, files)
    except TLSConfigError as exc:
        log.warning("TLS files changed but cannot be used (keeping the previous ones): %s", exc)
        return stamp
    if stamp:
        log.info("TLS certificates reloaded from %s", files.cert)
    return current
