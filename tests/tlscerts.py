"""Test certificates for the RESP door's TLS, made at test time with the ``openssl``
command (Debian's ``openssl`` package; mark tests that use it
``@pytest.mark.tool("openssl")``).

One CA signs the server's certificate (for 127.0.0.1, ::1 and localhost) and a client's;
a second, unrelated CA signs a "stranger" client certificate the node must refuse.  EC
P-256 keys: made in milliseconds, where RSA 2048 takes ~0.1 s each.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Every openssl run is bounded by this.
OPENSSL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: Signed by another CA: a client certificate the node must not accept.
    stranger_cert: Path
    stranger_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True,
                   timeout=OPENSSL_TIMEOUT_S)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
             # What Python 3.13's default VERIFY_X509_STRICT requires of a CA.
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _signed(directory: Path, name: str, ca: tuple[Path, Path], extensions: str
            ) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    request, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    ext.write_text(f"{extensions}\nkeyUsage=critical,digitalSignature\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", request, "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext)
    return cert, key


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    server = _signed(directory, "server", ca, "subjectAltName=IP:127.0.0.1,IP:::1,"
                     "DNS:localhost\nextendedKeyUsage=serverAuth")
    client = _signed(directory, "client", ca, "extendedKeyUsage=clientAuth")
    stranger = _signed(directory, "stranger", _ca(directory, "other-ca"),
                       "extendedKeyUsage=clientAuth")
    return Certs(ca[0], *server, *client, *stranger)


__all__ = ["Certs", "make_certs"]
