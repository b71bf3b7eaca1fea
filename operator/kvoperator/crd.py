"""The KVCluster CustomResourceDefinition and the names derived from it.

The YAML file is the single source of truth: the Helm chart copies it, the
tests validate objects against its schema, and the operator takes its group,
version and plural from it so that the three can never disagree.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

GROUP = "kvcluster.io"
VERSION = "v1alpha1"
PLURAL = "kvclusters"
KIND = "KVCluster"
API_VERSION = f"{GROUP}/{VERSION}"
CRD_NAME = f"{PLURAL}.{GROUP}"


@functools.cache
def _load_text() -> str:
    return resources.files(__package__).joinpath("crd.yaml").read_text(encoding="utf-8")


def load_crd() -> dict[str, Any]:
    """A fresh copy of the CRD manifest (callers may mutate it)."""
    crd = yaml.safe_load(_load_text())
    if not isinstance(crd, dict):
        raise ValueError("crd.yaml does not hold a mapping")
    return crd


def version_schema(version: str = VERSION) -> dict[str, Any]:
    """The openAPIV3Schema of one served version."""
    for v in load_crd()["spec"]["versions"]:
        if v["name"] == version:
            schema = v["schema"]["openAPIV3Schema"]
            assert isinstance(schema, dict)
            return schema
    raise KeyError(version)
