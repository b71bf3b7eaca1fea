"""Exact balanced assignment by min-cost flow.

Both the replica layout (each partition needs ``R`` distinct nodes) and the
leader layout (each partition needs one of its voters) are the same problem:
rows need ``demand`` distinct columns, every column is used between ``lower``
and ``upper`` times, and the total cost is minimal. A greedy heuristic would
need fix-ups to reach balance and would move more data than necessary; the flow
is exact, and fast enough to re-run after every executed step at the sizes
a cluster has (milliseconds for tens of partitions, about a second of CPU for
256 partitions on a dozen nodes).

The optimum is made *unique* by a tie-break that depends only on the row and
column positions (never on the current state). That uniqueness is what makes
re-planning stable: the planner's own steps lower the cost of the chosen
assignment at least as much as that of any other, so the re-computed optimum
is the same assignment and the executor never oscillates.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


class Infeasible(ValueError):
    """No assignment satisfies the demands and bounds."""


class _Graph:
    def __init__(self, size: int) -> None:
        self.to: list[int] = []
        self.cap: list[int] = []
        self.cost: list[int] = []
        self.out: list[list[int]] = [[] for _ in range(size)]

    def add(self, u: int, v: int, cap: int, cost: int) -> int:
        self.out[u].append(len(self.to))
        self.to.append(v)
        self.cap.append(cap)
        self.cost.append(cost)
        self.out[v].append(len(self.to))
        self.to.append(u)
        self.cap.append(0)
        self.cost.append(-cost)
        return len(self.to) - 2


def balanced_assignment(
    demands: Sequence[int],
    costs: Sequence[Sequence[int | None]],
    lower: int,
    upper: int,
) -> list[list[int]]:
    """Columns chosen for each row, minimising the total cost.

    ``costs[row][col]`` is ``None`` where the pair is not allowed, else a
    non-negative integer. Each row gets exactly ``demands[row]`` distinct
    columns; each column ends up used between ``lower`` and ``upper`` times.
    Raises ``Infeasible`` when the demands and bounds cannot all be met.
    """
    rows, cols = len(demands), len(costs[0]) if costs else 0
    total = sum(demands)
    if rows == 0 or total == 0:
        return [[] for _ in range(rows)]
    if cols == 0 or not lower * cols <= total <= upper * cols:
        raise Infeasible("bounds cannot add up to the total demand")
    pairs = [(r, c) for r in range(rows) for c in range(cols) if costs[r][c] is not None]
    bits = len(pairs)
    positive = sum(int(costs[r][c] or 0) for r, c in pairs)
    # Lower bounds become "must-fill" units priced below any possible saving.
    big = (positive + 1) << (bits + 1)
    source, sink = rows + cols, rows + cols + 1
    g = _Graph(rows + cols + 2)
    for r in range(rows):
        g.add(source, r, demands[r], 0)
    pair_edges: list[tuple[int, int, int]] = []
    for idx, (r, c) in enumerate(pairs):
        weight = (int(costs[r][c] or 0) << bits) | (1 << idx)
        pair_edges.append((r, c, g.add(r, rows + c, 1, weight)))
    for c in range(cols):
        if lower:
            g.add(rows + c, sink, lower, -big)
        if upper > lower:
            g.add(rows + c, sink, upper - lower, 0)

    # Potentials from the acyclic initial graph (source, rows, columns, sink
    # is a topological order) make every residual cost non-negative, so
    # Dijkstra can find each shortest augmenting path.
    pot: list[int | None] = [None] * (rows + cols + 2)
    pot[source] = 0
    for u in [source, *range(rows + cols)]:
        pu = pot[u]
        if pu is None:
            continue
        for e in g.out[u]:
            if g.cap[e] > 0:
                v, nd = g.to[e], pu + g.cost[e]
                pv = pot[v]
                if pv is None or nd < pv:
                    pot[v] = nd
    potential = [p if p is not None else 0 for p in pot]

    flow = 0
    while flow < total:
        # Dijkstra until the sink is settled; nodes not settled by then get
        # the sink's distance, which keeps every residual cost non-negative.
        dist: list[int | None] = [None] * len(potential)
        settled = [False] * len(potential)
        via: list[int] = [-1] * len(potential)
        dist[source] = 0
        heap: list[tuple[int, int]] = [(0, source)]
        while heap:
            d, u = heapq.heappop(heap)
            if settled[u]:
                continue
            settled[u] = True
            if u == sink:
                break
            for e in g.out[u]:
                if g.cap[e] <= 0:
                    continue
                v = g.to[e]
                nd = d + g.cost[e] + potential[u] - potential[v]
                dv = dist[v]
                if dv is None or nd < dv:
                    dist[v] = nd
                    via[v] = e
                    heapq.heappush(heap, (nd, v))
        reach = dist[sink]
        if reach is None or not settled[sink]:
            raise Infeasible("not enough allowed (row, column) pairs")
        for v, dv in enumerate(dist):
            potential[v] += dv if settled[v] and dv is not None else reach
        push = total - flow
        v = sink
        while v != source:
            e = via[v]
            push = min(push, g.cap[e])
            v = g.to[e ^ 1]
        v = sink
        while v != source:
            e = via[v]
            g.cap[e] -= push
            g.cap[e ^ 1] += push
            v = g.to[e ^ 1]
        flow += push

    used = [0] * cols
    chosen: list[list[int]] = [[] for _ in range(rows)]
    for r, c, e in pair_edges:
        if g.cap[e] == 0:
            chosen[r].append(c)
            used[c] += 1
    if any(u < lower or u > upper for u in used):
        raise Infeasible("column bounds cannot be met")
    return chosen
