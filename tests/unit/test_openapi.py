"""The OpenAPI document describes exactly the public routes the node's aiohttp app registers."""

from __future__ import annotations

from pathlib import Path

from kvcluster.server.config import NodeConfig
from kvcluster.server.errors import ApiError
from kvcluster.server.node import Node
from kvcluster.server.openapi import ERROR_CODES, document

METHODS = {"get", "put", "post", "delete", "patch"}


def registered(tmp_path: Path) -> set[tuple[str, str]]:
    node = Node(NodeConfig(node_id=1, data_dir=tmp_path))
    try:
        app = node.app()
        out = set()
        for route in app.router.routes():
            path = route.resource.canonical if route.resource else ""
            if route.method == "HEAD" or path.startswith("/internal/") or path.endswith("/"):
                continue
            out.add((route.method.lower(), path))
        return out
    finally:
        node.store.close()


async def test_document_covers_every_public_route(tmp_path: Path) -> None:
    doc = document()
    described = {(m, p) for p, item in doc["paths"].items() for m in item if m in METHODS}
    assert registered(tmp_path) == described


def test_every_operation_documents_its_answers_and_params() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.")
    for path, item in doc["paths"].items():
        names = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert names == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, path
        for method, op in item.items():
            if method in METHODS:
                assert any(code.startswith("2") for code in op["responses"]), (method, path)
                assert op["summary"], (method, path)


def test_error_codes_cover_every_api_error() -> None:
    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    codes = {c.code for c in subclasses(ApiError)}
    assert codes <= set(ERROR_CODES), codes - set(ERROR_CODES)
