"""What the RESP door needs from the cluster file before it opens: its address, its
password, its TLS context, and whether ``curve`` mode lets it open at all.  Each raises
:class:`~zcounter.errors.ConfigError` naming the file and the field for anything
unusable, so a node refuses to start rather than serve a door it was not meant to."""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path
from typing import NoReturn

from ..config import ClusterConfig
from ..errors import ConfigError

_ENDPOINT = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):([0-9]{1,5})$")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    match = _ENDPOINT.match(endpoint)
    if match is None:
        raise ValueError(f"malformed endpoint {endpoint!r}")
    return match.group(1).strip("[]"), int(match.group(2))


def read_password(config: ClusterConfig) -> bytes | None:
    """The RESP password (the file's first line), or None when no file is configured."""
    path = config.security.resp_password_file
    if path is None:
        return None
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{config.source}: security.resp_password_file: cannot read {path} "
                          f"({exc.strerror})") from None
    password = text.splitlines()[0].strip() if text.strip() else b""
    if not password:
        raise ConfigError(f"{config.source}: security.resp_password_file: {path} is empty")
    return password


def _no_passphrase() -> NoReturn:
    # Called by OpenSSL only for an encrypted key; without it, Python would prompt on the
    # terminal and the node would hang at start.
    raise _EncryptedKey


class _EncryptedKey(ConfigError):
    """Raised through OpenSSL's passphrase callback, turned into a ConfigError that
    names the file at once (:func:`tls_context`)."""


def tls_context(config: ClusterConfig) -> ssl.SSLContext | None:
    """The RESP door's server-side TLS context, or None when TLS is not configured.
    Raises :class:`ConfigError` naming the file and the field for anything unusable."""
    security, source = config.security, config.source
    cert, key, ca = security.resp_tls_cert, security.resp_tls_key, security.resp_tls_ca
    if cert is None:
        return None
    assert key is not None  # config.py refuses one without the other
    files: tuple[tuple[str, Path | None], ...] = (
        ("resp_tls_cert", cert), ("resp_tls_key", key), ("resp_tls_ca", ca))
    for name, path in files:
        if path is None:
            continue
        try:
            with path.open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise ConfigError(f"{source}: security.{name}: cannot read {path} "
                              f"({exc.strerror})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(str(cert), str(key), password=_no_passphrase)
    except _EncryptedKey:
        raise ConfigError(f"{source}: security.resp_tls_key: {key} is encrypted (give the "
                          "key without a passphrase, mode 0600)") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"{source}: security.resp_tls_cert / resp_tls_key: {cert} and {key} "
                          f"are not a PEM certificate and its private key "
                          f"({exc.reason or exc})") from None
    if ca is not None:
        try:
            context.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as exc:
            raise ConfigError(f"{source}: security.resp_tls_ca: {ca} holds no PEM CA "
                              f"certificate ({exc.reason or exc})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address literal (127.0.0.0/8, ::1).  A name such as
    ``localhost`` is not: what it resolves to is not ours to trust."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def curve_refusal(config: ClusterConfig, endpoint: str, password: bool) -> str | None:
    """Why the RESP door at ``endpoint`` must stay shut, or None.  In ``curve`` mode every
    connection to a node is encrypted and authenticated, so the door may open only
    encrypted (TLS) or explicitly on loopback, and only with an authentication of its own
    (a password or client certificates)."""
    security = config.security
    if not config.curve:
        return None
    host, _ = parse_endpoint(endpoint)
    if not security.resp_tls:
        if not security.resp_plaintext_loopback:
            return ("security.mode is curve and security.resp_tls_cert is not set (TLS); "
                    "on a loopback address, security.resp_plaintext_loopback = true opens "
                    "it without")
        if not is_loopback(host):
            return (f"security.mode is curve, security.resp_tls_cert is not set and {host} is "
                    "not a loopback address (security.resp_plaintext_loopback covers "
                    "127.0.0.0/8 and ::1 only)")
    if not password and security.resp_tls_ca is None:
        return ("security.mode is curve and neither security.resp_password_file nor "
                "security.resp_tls_ca (client certificates) is set")
    return None


__all__ = ["curve_refusal", "is_loopback", "parse_endpoint", "read_password", "tls_context"]
