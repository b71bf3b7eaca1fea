"""Long suites that have their own make target are left out of ``make test``, not skipped.

A skip says "cannot run here"; these can, they just take minutes, so ``make test`` deselects
them (pytest reports the count) and their targets select them with ``-m``.
"""

from __future__ import annotations

import pytest


def requested(config: pytest.Config, marker: str) -> bool:
    markexpr = str(config.getoption("markexpr", "") or "")
    return marker in markexpr.replace(f"not {marker}", "")


def deselect(config: pytest.Config, items: list[pytest.Item], marker: str) -> None:
    dropped = [item for item in items if item.get_closest_marker(marker) is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
