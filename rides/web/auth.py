"""API keys for the web service: who may ask for predictions, put rides on the stream, or read
what the stream made of them.

On by default: the service refuses to start without keys unless RIDES_WEB_AUTH=none, which the
local stack sets (rides.local.backend) and nothing else does. Keys are stored as SHA-256 hashes,
so the configuration can be read without revealing a key:

    RIDES_API_KEYS='{"backend": {"sha256": "<hex>", "scopes": ["predict", "stream", "read"]}}'

or the same JSON in a Secrets Manager secret named by RIDES_API_KEYS_SECRET_ARN (what Terraform
wires on AWS, behind the function URL's IAM auth). `rides api-key NAME` makes a key and its
entry. A request sends the key as `x-api-key: <key>` or `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rides import RidesError

SCOPES = ("predict", "stream", "read")
MODE = "RIDES_WEB_AUTH"
KEYS = "RIDES_API_KEYS"
KEYS_SECRET_ARN = "RIDES_API_KEYS_SECRET_ARN"


class AuthConfigError(RidesError):
    """API keys are required but missing or unreadable."""


@dataclass(frozen=True)
class Client:
    name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Client("anonymous", frozenset(SCOPES))  # auth off (the local stack)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, entries: Mapping[str, Mapping]):
        self.by_hash: dict[str, Client] = {}
        for name, entry in entries.items():
            hashed = str(entry.get("sha256", "")).lower()
            scopes = frozenset(entry.get("scopes") or SCOPES)
            if len(hashed) != 64 or not all(c in "0123456789abcdef" for c in hashed):
                raise AuthConfigError(f"API key {name!r}: sha256 must be 64 hex digits")
            if unknown := scopes - set(SCOPES):
                raise AuthConfigError(
                    f"API key {name!r}: unknown scopes {sorted(unknown)} (known: {', '.join(SCOPES)})"
                )
            self.by_hash[hashed] = Client(name, scopes)
        if not self.by_hash:
            raise AuthConfigError("API keys are configured but the list is empty")

    def client(self, headers: Iterable[tuple[bytes, bytes]]) -> Client | None:
        """The client an ASGI request's headers identify, or None."""
        for name, value in headers:
            if name == b"x-api-key":
                key = value
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                key = value[7:]
            else:
                continue
            # A dict lookup of a hash: no comparison of the key itself, so no timing to learn it from.
            return self.by_hash.get(hashlib.sha256(key.strip()).hexdigest())
        return None


def from_env(environ: Mapping[str, str] = os.environ, secrets_client=None) -> ApiKeys | None:
    """The configured keys, or None when authentication is off (RIDES_WEB_AUTH=none)."""
    mode = environ.get(MODE, "api-key")
    if mode == "none":
        return None
    if mode != "api-key":
        raise AuthConfigError(f"{MODE} must be api-key or none, got {mode!r}")
    if environ.get(KEYS):
        text, where = environ[KEYS], KEYS
    elif environ.get(KEYS_SECRET_ARN):
        import boto3

        client = secrets_client or boto3.client("secretsmanager")
        text = client.get_secret_value(SecretId=environ[KEYS_SECRET_ARN])["SecretString"]
        where = environ[KEYS_SECRET_ARN]
    else:
        raise AuthConfigError(
            f"the web service needs API keys: set {KEYS} or {KEYS_SECRET_ARN} (`rides api-key NAME` makes one), "
            f"or {MODE}=none to serve without authentication"
        )
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthConfigError(f"{where} is not JSON: {exc}") from None
    if not isinstance(entries, dict):
        raise AuthConfigError(f"{where} must map client names to {{sha256, scopes}}")
    return ApiKeys(entries)


def new_key(name: str, scopes: Iterable[str] = SCOPES) -> tuple[str, dict]:
    """A fresh random key and its configuration entry {name: {sha256, scopes}}."""
    key = "rk_" + secrets.token_urlsafe(32)
    return key, {name: {"sha256": digest(key), "scopes": sorted(scopes)}}
