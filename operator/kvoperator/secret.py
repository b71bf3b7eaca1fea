"""The auth Secret generated when the spec names none.

It is created once and never rewritten: rotating the peer secret under
running nodes would split the cluster, so a user who wants rotation supplies
their own Secret and rolls it deliberately.
"""

from __future__ import annotations

import base64
import secrets

from kvoperator.resources import CLUSTER_SECRET_KEY, TOKEN_KEY, Body, ClusterRef, object_meta

TOKEN_BYTES = 32


def generate_credentials() -> dict[str, str]:
    """Fresh random credentials; ``token_urlsafe`` so they fit in headers and flags unescaped."""
    return {
        TOKEN_KEY: secrets.token_urlsafe(TOKEN_BYTES),
        CLUSTER_SECRET_KEY: secrets.token_urlsafe(TOKEN_BYTES),
    }


def build_secret(ref: ClusterRef, credentials: dict[str, str]) -> Body:
    """The Secret object; credentials are passed in so the builder stays deterministic."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": object_meta(ref, ref.generated_secret, "auth"),
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(credentials.items())},
    }


def decode_secret_value(secret: Body, key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        value = (secret.get("stringData") or {}).get(key)
        return str(value) if value is not None else None
    return base64.b64decode(raw).decode()
