"""CurveZMQ keys: making, reading and checking them (ZeroMQ RFC 26/27 via ``zmq.auth``).

zcounter writes no cryptography and no authenticator of its own: key pairs are made by
``zmq.auth.create_certificates`` and read by ``zmq.auth.load_certificate`` (zmq's
certificate format: ``NAME.key`` holds the public key, ``NAME.key_secret`` both), and
connections are encrypted and authenticated by libzmq's CURVE mechanism, with each
connecting key accepted or refused by pyzmq's ZAP handler (:mod:`zcounter.runtime.auth`).

Every problem with a key file is a :class:`~zcounter.errors.ConfigError` naming the file
and the field that pointed at it, because that is what a user has to fix.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import zmq
import zmq.auth

from .errors import ConfigError

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


def _load(path: Path, where: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ConfigError(f"{path} ({where}): cannot read ({exc.strerror})") from None
    except (ValueError, IndexError, KeyError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} ({where}): not a zmq certificate ({exc})") from None
    if public is None or len(public) != 40:
        raise ConfigError(f"{path} ({where}): no valid public-key in the certificate")
    if secret is not None and len(secret) != 40:
        raise ConfigError(f"{path} ({where}): malformed secret-key in the certificate")
    return public, secret


def read_public_key(path: Path, where: str) -> bytes:
    """The Z85 public key in the certificate at ``path`` (``where``: the field naming it)."""
    return _load(path, where)[0]


def read_secret_certificate(path: Path, where: str) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a secret certificate, which must not be readable
    by group or others (like ssh, we refuse a secret anyone else could copy)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{path} ({where}): cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path} ({where}): not a regular file")
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{path} ({where}): secret key is accessible by group or others "
                          f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    public, secret = _load(path, where)
    if secret is None:
        raise ConfigError(f"{path} ({where}): holds no secret-key (the *{SECRET_SUFFIX} "
                          "file is the secret one)")
    return public, secret


def read_client_keys(directory: Path, where: str) -> dict[bytes, str]:
    """Public keys of every ``*.key`` file in ``directory``: key -> file name.  Raises
    ConfigError for the first bad file (start-up is strict)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ConfigError(f"{directory} ({where}): cannot list ({exc.strerror})") from None
    keys: dict[bytes, str] = {}
    for name in names:
        if name.endswith(PUBLIC_SUFFIX):
            keys[read_public_key(directory / name, where)] = name
    return keys


def generate(name: str, directory: Path) -> tuple[Path, Path]:
    """Write ``directory/name.key`` (public) and ``directory/name.key_secret`` (secret,
    mode 0600); refuse to overwrite an existing secret."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"key name {name!r}: use letters, digits, '-', '_' or '.'")
    public = directory / f"{name}{PUBLIC_SUFFIX}"
    secret = directory / f"{name}{SECRET_SUFFIX}"
    if secret.exists():
        raise ConfigError(f"{secret}: exists; refusing to overwrite a secret key")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Created with a umask of 077, so the secret is never readable by others, not
        # even between its creation and a chmod.
        old = os.umask(0o077)
        try:
            zmq.auth.create_certificates(directory, name)
        finally:
            os.umask(old)
        public.chmod(0o644)
        secret.chmod(0o600)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot write keys ({exc.strerror})") from None
    return public, secret


def curve_available() -> bool:
    return bool(zmq.has("curve"))
