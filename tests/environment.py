"""Whether a test that cannot run here may skip, or must fail.

``scripts/setup-system.sh`` (run by ``make test``) installs every tool the suites use when it runs as
root on a Debian machine. There, a missing tool or a fault that cannot be injected means the setup is
broken, and a skip would let CI stay green without having run the partition or disk nemeses -- so it
fails. Elsewhere (no root: no namespaces, no loop mounts, no apt) such a test skips with the reason.
``KVCLUSTER_ALLOW_SKIPS=1`` turns the failure back into a skip, for a root shell that knowingly lacks a
capability (e.g. an unprivileged container).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import pytest

ALLOW_SKIPS_ENV = "KVCLUSTER_ALLOW_SKIPS"


def must_run() -> bool:
    """As root on Linux every suite can be made to run, so none may skip for want of a tool."""
    return sys.platform == "linux" and os.geteuid() == 0 and os.environ.get(ALLOW_SKIPS_ENV) != "1"


def cannot_run(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it where :func:`must_run` says the test must run."""
    if must_run():
        pytest.fail(
            f"{reason} -- as root on Linux this must run: scripts/setup-system.sh installs what it needs "
            f"({ALLOW_SKIPS_ENV}=1 allows the skip)",
            pytrace=False,
        )
    print(f"SKIP: {reason}")
    pytest.skip(reason)
