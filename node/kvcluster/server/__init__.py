"""The storage node: multi-raft host, router and HTTP API."""

from .config import NodeConfig
from .node import EXIT_STORAGE_FAILURE, Node, serve

__all__ = ["EXIT_STORAGE_FAILURE", "Node", "NodeConfig", "serve"]
