"""``kvcluster lease grant|keepalive|revoke`` and ``kvcluster lock NAME -- CMD`` (issue 10).

The lock is the classic recipe on compare-and-set plus a lease: create
``locks/NAME`` only if absent (``if_version=0``), bound to a lease that this
process keeps alive while CMD runs. If this process dies, the lease expires
and the lock frees itself; if the lease is lost (the cluster was unreachable
for a whole ttl), CMD is stopped, because another holder may now exist.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid

import click

from kvcluster.client import KVError, NotFound, OutcomeUnknown, SyncClient, VersionConflict

from .kvcmds import EXIT_CODES, EXIT_UNAVAILABLE, Connection, client_options, reporting_errors

LOCK_PREFIX = "locks/"


@click.group("lease")
def lease_command() -> None:
    """Grant, keep alive and revoke leases; keys put with --lease die with theirs."""


@lease_command.command("grant", epilog=EXIT_CODES)
@click.argument("ttl", type=float)
@client_options
def grant_command(
    ttl: float,
    conn: Connection,
) -> None:
    """Grant a lease of TTL seconds and print its id."""
    with reporting_errors(), conn.client() as kv:
        click.echo(kv.lease_grant(ttl))


@lease_command.command("keepalive", epilog=EXIT_CODES)
@click.argument("lease", type=click.IntRange(min=1))
@client_options
def keepalive_command(
    lease: int,
    conn: Connection,
) -> None:
    """Restart the lease's countdown once (exit 1 if it already expired)."""
    with reporting_errors(), conn.client() as kv:
        click.echo(kv.lease_keepalive(lease))


@lease_command.command("revoke", epilog=EXIT_CODES)
@click.argument("lease", type=click.IntRange(min=1))
@client_options
def revoke_command(
    lease: int,
    conn: Connection,
) -> None:
    """Revoke the lease now and print how many keys it deleted."""
    with reporting_errors(), conn.client() as kv:
        click.echo(kv.lease_revoke(lease))


def acquire(kv: SyncClient, key: str, holder: bytes, lease: int, wait: float) -> bool:
    """Create ``key`` bound to ``lease`` if absent, polling while another holder has it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            kv.put(key, holder, if_version=0, lease=lease)
            return True
        except VersionConflict:
            pass
        except OutcomeUnknown:
            item = kv.get(key)
            if item is not None and item.value == holder:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


@click.command("lock", epilog=EXIT_CODES, context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--ttl", type=click.FloatRange(1, 3600), default=10.0, show_default=True, help="Lease ttl.")
@click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True, help="Give up after.")
@client_options
def lock_command(
    name: str,
    cmd: tuple[str, ...],
    ttl: float,
    wait: float,
    conn: Connection,
) -> None:
    """Hold the lock NAME while CMD runs (``kvcluster lock NAME -- CMD ARGS``); exit with CMD's code."""
    key = LOCK_PREFIX + name
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}".encode()
    with reporting_errors(), conn.client() as kv:
        lease = kv.lease_grant(ttl)
        try:
            if not acquire(kv, key, holder, lease, wait):
                click.echo(f"lock {name!r} still held by someone else after {wait:g}s", err=True)
                raise click.exceptions.Exit(EXIT_UNAVAILABLE)
            child = subprocess.Popen(list(cmd))
            lost = threading.Event()
            done = threading.Event()

            def keep_alive() -> None:
                while not done.wait(ttl / 3):
                    try:
                        kv.lease_keepalive(lease)
                    except NotFound:
                        lost.set()
                        child.terminate()
                        return
                    except KVError:
                        continue  # a blip; the next try may get through within the ttl

            keeper = threading.Thread(target=keep_alive, daemon=True)
            keeper.start()
            code = child.wait()
            done.set()
            keeper.join()
            if lost.is_set():
                click.echo(f"lost the lock {name!r} (lease expired); stopped the command", err=True)
                raise click.exceptions.Exit(EXIT_UNAVAILABLE)
        finally:
            try:
                kv.lease_revoke(lease)
            except KVError:
                pass  # it expires by itself
    raise click.exceptions.Exit(code)
