"""Certificates for the local topology and the tests, made with the openssl CLI:
a CA, a serving certificate for 127.0.0.1, client certificates."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str, days: int = 2) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pair.key), "-out", str(pair.cert),
             "-days", str(days), "-subj", f"/CN={name}")  # fmt: skip
    return pair


def issue(directory: Path, ca: KeyPair, name: str, *, server: bool, days: int = 2) -> KeyPair:
    """A certificate signed by ``ca``: for serving on 127.0.0.1, or for a client."""
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pair.key), "-out", str(csr), "-subj", f"/CN={name}")
    usage = (
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        if server
        else "extendedKeyUsage=clientAuth\n"
    )
    ext.write_text(usage)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
             "-out", str(pair.cert), "-days", str(days), "-extfile", str(ext))  # fmt: skip
    return pair
