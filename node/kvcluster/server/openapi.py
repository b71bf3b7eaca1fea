"""The OpenAPI 3 description of the public HTTP API, served at ``/v1/openapi.json``.

Written by hand next to the handlers rather than generated: the key travels as raw percent-encoded
bytes and values as raw bodies, which no route decorator describes. A test compares the paths here
with the routes the application registers, so a new route without a description fails the build.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from aiohttp import web

OPENAPI_PATH = "/v1/openapi.json"

ERROR_CODES = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "no_such_endpoint",
    "method_not_allowed",
    "version_conflict",
    "conflict",
    "too_large",
    "unavailable",
    "timeout",
    "internal",
]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}


def _ok(description: str, schema: dict[str, Any] | None = None, status: str = "200") -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {_JSON: {"schema": schema}}
    return {status: answer}


_COMMON_ERRORS = {
    "400": _error("Malformed input"),
    "401": _error("Missing or wrong bearer token"),
    "503": _error("No leader, storage failure, or the cluster is reshaping this range"),
    "504": _error("The request did not commit in time"),
}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, **_COMMON_ERRORS}, **extra}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "integer", "minimum": 0},
    }


_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "The key as percent-encoded bytes; slashes are part of the key",
    "schema": {"type": "string", "minLength": 1},
}
_IF_VERSION = _query(
    "if_version", "Only if the key is at this version (0: only if absent)", {"type": "integer", "minimum": 0}
)
_CONSISTENCY = _query(
    "consistency",
    "linearizable (default) or stale",
    {"type": "string", "enum": ["linearizable", "strong", "stale"]},
)
_OBJECT = {"type": "object"}
_ADMIN_BODY = {"required": True, "content": {_JSON: {"schema": _OBJECT}}}
_STEP = _ok("The step ran", _ref("Step"))
_LEASE = {
    "type": "object",
    "required": ["id", "ttl"],
    "properties": {"id": {"type": "integer"}, "ttl": {"type": "number"}},
}
_ADMIN_ERRORS = {"404": _error("No such node or partition"), "409": _error("The cluster refused the step")}


def document() -> dict[str, Any]:
    item = {
        "type": "object",
        "required": ["key", "encoding"],
        "properties": {
            "key": {"type": "string"},
            "value": {"type": "string"},
            "encoding": {"type": "string", "enum": ["utf-8", "base64"]},
            "version": {"type": "integer"},
            "deleted": {"type": "boolean"},
        },
    }
    paths: dict[str, Any] = {
        "/v1/kv/{key}": {
            "parameters": [_KEY],
            "get": _op(
                "Read a key",
                {
                    "200": {
                        "description": "The value, raw; its version in X-KV-Version",
                        "content": {
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "404": _error("No such key"),
                    "413": _error("The key is over the key limit"),
                },
                parameters=[_CONSISTENCY],
            ),
            "put": _op(
                "Write a key",
                {
                    **_ok("Stored", _ref("Item")),
                    "409": _error("if_version did not match"),
                    "413": _error("The key or value is over its limit"),
                },
                parameters=[
                    _IF_VERSION,
                    _query(
                        "lease",
                        "Bind the key to this lease: it is deleted when the lease expires or is revoked",
                        {"type": "integer", "minimum": 1},
                    ),
                ],
                requestBody={
                    "required": False,
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
            ),
            "delete": _op(
                "Delete a key",
                {
                    **_ok("Deleted", _ref("Item")),
                    "409": _error("if_version did not match"),
                    "413": _error("Key too long"),
                },
                parameters=[_IF_VERSION],
            ),
        },
        "/v1/kv": {
            "get": _op(
                "List keys in key order",
                {
                    **_ok(
                        "A page of items; 'next' is the percent-encoded start of the next page",
                        {
                            "type": "object",
                            "required": ["items", "count", "next"],
                            "properties": {
                                "items": {"type": "array", "items": item},
                                "count": {"type": "integer"},
                                "next": {"type": ["string", "null"]},
                            },
                        },
                    ),
                    "413": _error("prefix or start over the key limit"),
                },
                parameters=[
                    _query(
                        "prefix", "Only keys with this prefix (percent-encoded bytes)", {"type": "string"}
                    ),
                    _query("start", "Start at this key (inclusive)", {"type": "string"}),
                    _query("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _CONSISTENCY,
                ],
            )
        },
        "/v1/watch": {
            "get": _op(
                "Stream the changes of a key or a prefix (newline-delimited JSON, resumable)",
                {
                    "200": {
                        "description": "One JSON object per line: put/delete/expire events "
                        '({"type", "key", "value", "encoding", "version", "revision"}), '
                        '{"type": "progress", "token"} after each batch and every 5 s while idle, '
                        '{"type": "compacted", "revision"} when the history asked for is gone',
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    },
                    "400": _error("Neither or both of key and prefix, or a bad from"),
                    "413": _error("key or prefix over the key limit"),
                },
                parameters=[
                    _query("key", "Watch exactly this key (percent-encoded bytes)", {"type": "string"}),
                    _query("prefix", "Watch every key with this prefix (may be empty)", {"type": "string"}),
                    _query(
                        "from",
                        "Every change after this revision, or after a progress token; default: from now",
                        {"type": "string"},
                    ),
                ],
            )
        },
        "/v1/leases": {
            "post": _op(
                "Grant a lease",
                {
                    **_ok("The lease id and its ttl in seconds", _LEASE),
                    "400": _error("ttl missing or out of range"),
                },
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["ttl"],
                                "properties": {"ttl": {"type": "number", "exclusiveMinimum": 0}},
                            }
                        }
                    },
                },
            )
        },
        "/v1/leases/{id}/keepalive": {
            "parameters": [_path("id", "Lease id")],
            "post": _op(
                "Restart a lease's countdown at its full ttl",
                {**_ok("The lease", _LEASE), "404": _error("No such lease, or it is expiring")},
            ),
        },
        "/v1/leases/{id}": {
            "parameters": [_path("id", "Lease id")],
            "delete": _op(
                "Revoke a lease and delete the keys bound to it",
                {
                    **_ok("Revoked; 'deleted' counts the keys removed", _OBJECT),
                    "404": _error("No such lease"),
                },
            ),
        },
        "/v1/routing": {
            "get": _op("Partition ranges and their leaders' URLs", _ok("The routing table", _OBJECT))
        },
        "/v1/cluster": {
            "get": _op(
                "Nodes, partitions, leaders, commit and applied indexes", _ok("The cluster view", _OBJECT)
            )
        },
        OPENAPI_PATH: {"get": {"summary": "This document", "responses": _ok("OpenAPI 3 document", _OBJECT)}},
        "/v1/admin/map": {"get": _op("The partition map with leaders", _ok("The map", _OBJECT))},
        "/v1/admin/nodes/{id}": {
            "parameters": [_path("id", "Node id")],
            "get": _op(
                "One node's membership and replicas",
                {**_ok("The node", _OBJECT), "404": _error("Not a member")},
            ),
        },
        "/v1/admin/nodes/{id}/drain": {
            "parameters": [_path("id", "Node id")],
            "post": _op(
                "Move every replica off a node", {**_ok("Job started", _ref("Job"), "202"), **_ADMIN_ERRORS}
            ),
        },
        "/v1/admin/nodes/{id}/forget": {
            "parameters": [_path("id", "Node id")],
            "post": _op("Remove a drained node from the map", {**_ok("Forgotten", _OBJECT), **_ADMIN_ERRORS}),
        },
        "/v1/admin/reshape": {
            "get": _op("The running or last reshape job", _ok("The job, or {'state': 'idle'}", _ref("Job"))),
            "post": _op(
                "Start a reshape toward a target shape",
                {**_ok("Job started", _ref("Job"), "202"), "409": _error("Refused")},
                requestBody={
                    "required": True,
                    "content": {
                        _JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["nodes", "partitions", "replicas"],
                                "properties": {
                                    "nodes": {
                                        "type": "array",
                                        "items": {"type": "integer", "minimum": 1},
                                        "minItems": 1,
                                    },
                                    "partitions": {"type": "integer", "minimum": 1},
                                    "replicas": {"type": "integer", "minimum": 1},
                                },
                            }
                        }
                    },
                },
            ),
        },
        "/v1/admin/partitions/{id}/split": {
            "parameters": [_path("id", "Partition id")],
            "post": _op("Split a partition in two", {**_STEP, **_ADMIN_ERRORS}),
        },
        "/v1/admin/partitions/{id}/merge": {
            "parameters": [_path("id", "Partition id")],
            "post": _op("Merge a partition with its right neighbour", {**_STEP, **_ADMIN_ERRORS}),
        },
        "/v1/admin/partitions/{id}/replicas": {
            "parameters": [_path("id", "Partition id")],
            "post": _op(
                "Add ({'add': node}) or remove ({'remove': node}) a replica",
                {**_STEP, **_ADMIN_ERRORS},
                requestBody=_ADMIN_BODY,
            ),
        },
        "/v1/admin/partitions/{id}/leader": {
            "parameters": [_path("id", "Partition id")],
            "post": _op(
                "Hand leadership to {'node': id}", {**_STEP, **_ADMIN_ERRORS}, requestBody=_ADMIN_BODY
            ),
        },
        "/v1/admin/backup": {
            "post": _op(
                "Stream a backup of every partition (a tar: header, rows per partition, manifest last)",
                {
                    "200": {
                        "description": "The backup file, streamed. A run that fails after the stream "
                        "started ends with kvbackup/error.json instead of kvbackup/manifest.json",
                        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
                    }
                },
            ),
        },
        "/v1/admin/restore/rows": {
            "post": _op(
                "Load a batch of rows (a restore); an upsert, safe to retry",
                _ok("How many rows were written", _OBJECT),
                requestBody={
                    "required": True,
                    "content": {
                        "application/msgpack": {
                            "schema": {
                                "type": "object",
                                "description": '{"rows": [[key, value], ...]} with msgpack binaries, '
                                "1 to 10000 rows",
                            }
                        }
                    },
                },
            ),
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {**_ok("Alive", _OBJECT), "503": _error("Storage failure")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "responses": {
                    **_ok("Every local replica knows a leader", _OBJECT),
                    "503": _error("Not ready"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Text exposition", "content": {"text/plain": {}}}},
            }
        },
        "/ui": {
            "get": {
                "summary": "The status page",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
        "/ui/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "summary": "A file of the status page",
                "responses": {"200": {"description": "The file"}, "404": _error("No such file")},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "kvcluster", "version": version("kvcluster")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": ERROR_CODES},
                                "message": {"type": "string"},
                            },
                            "additionalProperties": True,
                        }
                    },
                },
                "Item": item,
                "Job": {
                    "type": "object",
                    "required": ["state"],
                    "properties": {
                        "state": {"type": "string"},
                        "target": _OBJECT,
                        "steps_done": {"type": "integer"},
                        "steps_total": {"type": "integer"},
                        "current": {"type": ["string", "null"]},
                        "error": {"type": ["string", "null"]},
                    },
                },
                "Step": {"type": "object", "required": ["step", "descriptors"]},
            },
        },
        "security": [{"bearer": []}, {}],
    }


async def serve(request: web.Request) -> web.Response:
    return web.json_response(document())


def routes() -> list[web.AbstractRouteDef]:
    return [web.get(OPENAPI_PATH, serve)]
