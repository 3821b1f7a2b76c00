"""API keys: who may call the server, and by name who owns a job or a trace.

Keys come from ``SLOWTHINK_API_KEY`` (one key, named ``default``) or a keys file (``--api-key-file``):
one key per line, ``NAME KEY`` or a bare ``KEY`` (named ``key<line>``), blank lines and ``#`` comments
ignored. Each name owns what its key made: a job or a stored completion is visible and changeable only
with the key that made it. An empty key is refused (it would have turned authentication off), and
binding beyond loopback without a key is refused unless ``--allow-unauthenticated`` says it is meant.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from .protocol import APIError

ANONYMOUS = ""  # the owner of everything on a server without keys
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Keys:
    """Named API keys (none: no authentication)."""

    by_name: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for name, key in self.by_name.items():
            if not name or not key or key != key.strip() or any(c.isspace() for c in key):
                raise ValueError(f"API key {name!r}: a key must be non-empty and contain no whitespace")

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def owner(self, request: Request) -> str:
        """The name of the key the request carries (401 when it carries none of them)."""
        if not self.by_name:
            return ANONYMOUS
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        # every key compared in constant time, none skipped: timing says neither how much of a guess was
        # right nor which key it was close to
        matches = [name for name, key in self.by_name.items() if hmac.compare_digest(given, key.encode())]
        if scheme.lower() != "bearer" or not matches:
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
        return matches[0]


def as_keys(api_key: str | Keys | dict | None) -> Keys:
    """``create_app``'s ``api_key``: one key (named ``default``), named keys, or None."""
    if isinstance(api_key, Keys):
        return api_key
    if isinstance(api_key, dict):
        return Keys(dict(api_key))
    if api_key is None:
        return Keys()
    if not api_key.strip():
        raise ValueError("the API key is empty (SLOWTHINK_API_KEY= ?): give a key, or unset it to serve without one")
    return Keys({"default": api_key})


def read_key_file(path: str | Path) -> tuple[Keys, list[str]]:
    """The keys of a keys file, and warnings (a file others may read)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--api-key-file {path}: no such file")
    by_name: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2:
            raise ValueError(f"{path}:{number}: expected 'NAME KEY' or 'KEY', got {len(parts)} fields")
        name, key = parts if len(parts) == 2 else (f"key{number}", parts[0])
        if name in by_name:
            raise ValueError(f"{path}:{number}: the name {name!r} is given twice")
        by_name[name] = key
    if not by_name:
        raise ValueError(f"--api-key-file {path}: no keys in it")
    warnings = []
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"{path} can be read by other users: chmod 600 {path}")
    return Keys(by_name), warnings


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys: Keys, allow_unauthenticated: bool) -> list[str]:
    """Refuse to serve beyond loopback without a key unless told to; the warnings to print."""
    if keys or is_loopback(host):
        return []
    if not allow_unauthenticated:
        raise ValueError(f"--host {host} serves beyond this machine, and no API key is set: anyone who can reach "
                         "it could use the model and read the stored jobs. Set SLOWTHINK_API_KEY or "
                         "--api-key-file, or pass --allow-unauthenticated if that is meant.")
    return [f"WARNING: serving on {host} without an API key (--allow-unauthenticated)"]


def keys_from(cli_key: str | None, key_file: str | None, environ=os.environ) -> tuple[Keys, list[str]]:
    """The server's keys from ``--api-key-file``, ``SLOWTHINK_API_KEY`` or ``--api-key`` (one source), and
    warnings to print."""
    env_key = environ.get("SLOWTHINK_API_KEY")
    given = [name for name, v in (("--api-key-file", key_file), ("SLOWTHINK_API_KEY", env_key),
                                  ("--api-key", cli_key)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give the API key one way, not {' and '.join(given)}")
    if key_file is not None:
        return read_key_file(key_file)
    warnings = ["WARNING: --api-key on the command line can be read by other users (ps); use SLOWTHINK_API_KEY "
                "or --api-key-file"] if cli_key is not None else []
    return as_keys(env_key if env_key is not None else cli_key), warnings
