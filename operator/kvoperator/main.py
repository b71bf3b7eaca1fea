"""``kvcluster-operator``: run the operator (the console script's entry point)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

import kopf

from kvoperator.controller import Operator, OperatorConfig, random_priority


def parse_args(argv: Sequence[str] | None, env: dict[str, str]) -> tuple[OperatorConfig, bool]:
    parser = argparse.ArgumentParser(prog="kvcluster-operator", description="kvcluster Kubernetes operator")
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeatable; KVOPERATOR_NAMESPACES=a,b); all namespaces when none",
    )
    parser.add_argument("--peering", help="kopf peering object name (KVOPERATOR_PEERING, default kvcluster)")
    parser.add_argument("--standalone", action="store_true", help="run without peering (single replica only)")
    parser.add_argument(
        "--priority", type=int, help="peering priority (default: random, so that replicas never tie)"
    )
    parser.add_argument("--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--node-image", help="default node image (KVOPERATOR_NODE_IMAGE)")
    parser.add_argument("--poll-interval", type=float, help="health/progress timer in seconds")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    config = OperatorConfig.from_env(env)
    namespaces = tuple(args.namespace) or config.namespaces
    config = dataclasses.replace(
        config,
        namespaces=namespaces,
        clusterwide=not namespaces,
        peering_name=args.peering or config.peering_name,
        standalone=args.standalone or env.get("KVOPERATOR_STANDALONE", "") in ("1", "true"),
        priority=args.priority if args.priority is not None else random_priority(),
        liveness_endpoint=args.liveness or env.get("KVOPERATOR_LIVENESS") or None,
        default_image=args.node_image or config.default_image,
        poll_interval=args.poll_interval or config.poll_interval,
    )
    return config, args.verbose


def main(argv: Sequence[str] | None = None) -> None:
    config, verbose = parse_args(argv, dict(os.environ))
    kopf.configure(verbose=verbose)
    registry = kopf.OperatorRegistry()
    operator = Operator(config)
    operator.register(registry)
    kopf.run(
        registry=registry,
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        standalone=config.standalone,
        peering_name=None if config.standalone else config.peering_name,
        priority=config.priority,
        liveness_endpoint=config.liveness_endpoint,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
