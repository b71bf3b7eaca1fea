"""Five processes increment one shared counter through compare-and-set; the total is exact.

    python examples/counter.py -e http://127.0.0.1:7001,http://127.0.0.1:7002 --workers 5 -n 100

Each increment reads the counter, then writes the next value with
``if_version`` = the version read; a conflict (someone else won) means read
and try again. The subtle case is a write whose outcome is unknown (the node
was killed after the request left, a timeout): retrying blindly could count
it twice, giving up could lose it. So the value records, next to the count,
the sequence number of each worker's last increment; after an unknown
outcome the worker re-reads and sees whether its increment is in. The final
value is exactly workers * n, also when a node is killed half-way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from kvcluster.client import OutcomeUnknown, SyncClient, Unavailable, VersionConflict


def decode(raw: bytes | None) -> tuple[int, dict[str, int]]:
    """(count, each worker's last applied increment) of a stored counter value."""
    if not raw:
        return 0, {}
    state = json.loads(raw)
    return int(state["count"]), {str(w): int(s) for w, s in state["last"].items()}


def increment(kv: SyncClient, key: str, worker: str, seq: int) -> None:
    """Apply increment number ``seq`` of ``worker`` exactly once."""
    while True:
        try:
            item = kv.get(key)
        except Unavailable:
            time.sleep(0.1)
            continue
        count, last = decode(item.value if item else None)
        if last.get(worker, 0) >= seq:
            return  # an earlier attempt whose answer was lost did take effect
        last[worker] = seq
        value = json.dumps({"count": count + 1, "last": last}).encode()
        try:
            kv.put(key, value, if_version=item.version if item else 0)
            return
        except VersionConflict:
            continue  # another worker incremented first: read again
        except (OutcomeUnknown, Unavailable):
            time.sleep(0.1)  # maybe applied, maybe not: the next read tells


def run_worker(endpoints: list[str], key: str, worker: str, n: int) -> None:
    with SyncClient(endpoints, timeout=30.0) as kv:
        for seq in range(1, n + 1):
            increment(kv, key, worker, seq)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-e", "--endpoints", required=True, help="comma-separated node URLs")
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("-n", type=int, default=100, help="increments per worker")
    parser.add_argument("--key", default="examples/counter")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    endpoints = args.endpoints.split(",")
    if args.worker is not None:
        run_worker(endpoints, args.key, args.worker, args.n)
        return 0
    with SyncClient(endpoints) as kv:
        if kv.get(args.key) is not None:
            kv.delete(args.key)
    base = [sys.executable, __file__, "-e", args.endpoints, "-n", str(args.n), "--key", args.key]
    procs = [subprocess.Popen([*base, "--worker", f"w{i}"]) for i in range(args.workers)]
    failed = [p.args for p in procs if p.wait() != 0]
    with SyncClient(endpoints) as kv:
        item = kv.get(args.key)
    count, _ = decode(item.value if item else None)
    expected = args.workers * args.n
    print(f"counter = {count}, expected {expected}")
    return 0 if count == expected and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
