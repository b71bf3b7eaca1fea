"""``kvcluster reshape``: change nodes, partitions and replicas of a running cluster.

Two ways to reach the cluster:

* ``-e URL`` (or ``KVCLUSTER_ENDPOINT``): any cluster. The node processes are the caller's
  business, as on Kubernetes: nodes a target adds must already run and have joined, and nodes it
  drops keep running, empty, until their owner stops and forgets them.
* ``--data-dir DIR`` (the default, ``data``): a running ``kvcluster local`` on that directory,
  which starts the nodes a target adds and stops the ones it drained.

A target names only what changes; the rest is the cluster's current shape
(:func:`kvcluster.client.reshape.current_shape`).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvcluster.client import BadRequest, Conflict, KVError, SyncClient, Unavailable
from kvcluster.client.reshape import Shape, current_shape, follow, known_nodes
from kvcluster.local import ClusterError
from kvcluster.local.reshape import ControlFileSupervisor, reshape

from .kvcmds import ENDPOINT_ENV, read_token, split_endpoints

EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_UNAVAILABLE = 4
EXIT_ERROR = 5

EPILOG = """\b
--nodes is a count N (the N lowest node ids stay or, with --data-dir,
are started) or a comma-separated list of node ids ("1,2,4" or "4,").
\b
Exit codes:
  0  done (--no-wait: submitted; --status: reported)
  1  the job failed, was replaced by another, or still runs at --timeout
  2  usage error, or the cluster refused the target (its reason is printed)
  4  the cluster is unavailable
  5  any other error (unauthorized, server error)
"""


@dataclass(frozen=True)
class NodeSpec:
    """``--nodes``: how many (``count``) or exactly which (``ids``)."""

    count: int | None = None
    ids: tuple[int, ...] = ()

    def resolve(self, known: list[int]) -> tuple[int, ...]:
        """The node ids of the target, given the ids that have joined the cluster."""
        if self.count is None:
            return self.ids
        if self.count > len(known):
            raise Refused(
                f"--nodes {self.count}, but the cluster knows only nodes {known}: start the other "
                "node processes first (with -e they are yours to run), or name the ids"
            )
        return tuple(known[: self.count])


def parse_nodes(ctx: click.Context, param: click.Parameter, value: str | None) -> NodeSpec | None:
    """``--nodes 5`` (a count) or ``--nodes 1,2,4`` / ``--nodes 4,`` (ids)."""
    if value is None:
        return None
    if "," in value:
        return NodeSpec(ids=parse_ids(value))
    try:
        count = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a count nor a list of node ids") from None
    if not 1 <= count <= 64:
        raise click.BadParameter(f"a node count is 1..64, not {count}")
    return NodeSpec(count=count)


def parse_forget(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    return None if value is None else parse_ids(value)


def parse_ids(value: str) -> tuple[int, ...]:
    """``4`` or ``4,5`` or ``4,``: node ids, sorted, each once."""
    try:
        ids = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of node ids") from None
    if not ids or min(ids) < 1:
        raise click.BadParameter(f"{value!r}: node ids are positive integers")
    return ids


class Refused(Exception):
    """The target cannot be submitted; nothing was changed."""


def complete(
    current: Shape, known: list[int], nodes: NodeSpec | None, partitions: int | None, replicas: int | None
) -> Shape:
    """The target: what was given, the rest from the current shape."""
    return Shape(
        nodes.resolve(known) if nodes is not None else current.nodes,
        partitions if partitions is not None else current.partitions,
        replicas if replicas is not None else current.replicas,
    )


@click.command("reshape", epilog=EPILOG)
@click.option(
    "--endpoint",
    "-e",
    "endpoints",
    multiple=True,
    envvar=ENDPOINT_ENV,
    show_envvar=True,
    help="A node of the cluster to reshape (repeat or separate with commas for fallbacks).",
)
@click.option(
    "--nodes", metavar="N|ID,ID,...", callback=parse_nodes, help="Nodes to end with: a count or ids."
)
@click.option("--partitions", type=click.IntRange(1, 1024), default=None, help="Partitions to end with.")
@click.option("--replicas", type=click.IntRange(1, 15), default=None, help="Replicas per partition.")
@click.option("--status", "show_status", is_flag=True, help="Print the current job's state once.")
@click.option("--wait", "wait_only", is_flag=True, help="Follow the running job until it ends.")
@click.option("--no-wait", is_flag=True, help="Submit the target, print the job id, do not follow.")
@click.option(
    "--forget",
    metavar="ID,ID,...",
    callback=parse_forget,
    help="Drop drained nodes whose processes you stopped from the cluster's node list.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Without -e: the data dir of the running `kvcluster local`, which starts and stops nodes.",
)
@click.option(
    "--token",
    envvar=["KVCLUSTER_ADMIN_TOKEN", "KVCLUSTER_TOKEN"],
    default=None,
    help="Admin token, if the nodes want one (env KVCLUSTER_ADMIN_TOKEN).",
)
@click.option(
    "--token-file",
    envvar=["KVCLUSTER_ADMIN_TOKEN_FILE", "KVCLUSTER_TOKEN_FILE"],
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="File holding the admin token (env KVCLUSTER_ADMIN_TOKEN_FILE).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=1800.0, show_default=True, help="Seconds to follow."
)
@click.pass_context
def reshape_command(
    ctx: click.Context,
    endpoints: tuple[str, ...],
    nodes: NodeSpec | None,
    partitions: int | None,
    replicas: int | None,
    show_status: bool,
    wait_only: bool,
    no_wait: bool,
    forget: tuple[int, ...] | None,
    data_dir: Path,
    token: str | None,
    token_file: str | None,
    timeout: float,
) -> None:
    """Reshape a running cluster online: give only what changes.

    \b
      kvcluster reshape -e http://node:7000 --partitions 16     # any cluster
      kvcluster reshape -e http://node:7000 --status            # the job, once
      kvcluster reshape -e http://node:7000 --wait              # follow it to the end
      kvcluster reshape -e http://node:7000 --forget 4          # a drained node, once stopped
      kvcluster reshape --nodes 5                               # a `kvcluster local` in ./data

    The cluster moves replicas and leaders, splits or merges partitions, while clients keep
    reading and writing; this command follows the job with a progress bar.
    """
    has_target = (nodes, partitions, replicas) != (None, None, None)
    actions = [
        name for name, on in (("--status", show_status), ("--wait", wait_only), ("--forget", forget)) if on
    ]
    if len(actions) > 1:
        raise click.UsageError(f"{' and '.join(actions)} exclude each other")
    if actions and (has_target or no_wait):
        raise click.UsageError(f"{actions[0]} takes no target")
    if not (actions or has_target):
        raise click.UsageError("give --nodes, --partitions or --replicas (or --status, --wait, --forget)")
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    e_source, d_source = ctx.get_parameter_source("endpoints"), ctx.get_parameter_source("data_dir")
    if e_source == d_source == ParameterSource.COMMANDLINE:
        raise click.UsageError("-e and --data-dir exclude each other")
    # -e on the command line wins; else an explicit --data-dir; else KVCLUSTER_ENDPOINT; else ./data.
    remote = bool(endpoints) and (e_source == ParameterSource.COMMANDLINE or d_source not in given)
    sup: ControlFileSupervisor | None = None
    if not remote:
        try:
            sup = ControlFileSupervisor(data_dir)
        except ClusterError as exc:
            raise click.UsageError(f"{exc}; or give -e URL of any node of a cluster") from None
        if no_wait and has_target:
            raise click.UsageError("--no-wait needs -e: with --data-dir this command starts and stops nodes")
        if nodes is not None and nodes.count is None:
            raise click.UsageError("with --data-dir, --nodes is a count (the lowest ids stay)")
    console = Console(stderr=True, soft_wrap=True)
    urls = split_endpoints(endpoints) if remote else sup.endpoints() if sup else []
    with _errors(console), SyncClient(urls, read_token(token, token_file)) as client:
        if show_status:
            print_status(client)
        elif forget:
            forget_nodes(client, console, forget)
        elif wait_only:
            _finish(console, _follow(client, console, timeout, expect=None), None, None)
        elif sup is not None:
            _local(client, sup, console, nodes, partitions, replicas, timeout)
        else:
            _remote(client, console, nodes, partitions, replicas, no_wait=no_wait, timeout=timeout)


def _remote(
    client: SyncClient,
    console: Console,
    nodes: NodeSpec | None,
    partitions: int | None,
    replicas: int | None,
    *,
    no_wait: bool,
    timeout: float,
) -> None:
    """Complete the target from the cluster, submit it, follow the job unless --no-wait."""
    admin_map = client.admin_map()
    before = current_shape(admin_map, client.reshape_status())
    target = complete(before, known_nodes(admin_map), nodes, partitions, replicas)
    try:
        submitted = client.reshape(list(target.nodes), target.partitions, target.replicas)
    except BadRequest as exc:
        raise Refused(exc.message) from None
    except Conflict as exc:
        joined = exc.code == "nodes_not_joined"
        hint = "; start them first (with -e they are yours to run)" if joined else ""
        raise Refused(exc.message + hint) from None
    job_id = str(submitted.get("job") or submitted.get("id"))
    console.print(escape(f"reshape job {job_id}: {before} -> {target}"))
    if no_wait:
        click.echo(job_id)
        return
    _finish(console, _follow(client, console, timeout, expect=job_id), before, target)


def _local(
    client: SyncClient,
    sup: ControlFileSupervisor,
    console: Console,
    nodes: NodeSpec | None,
    partitions: int | None,
    replicas: int | None,
    timeout: float,
) -> None:
    """Through the running `kvcluster local`: it starts the nodes first and stops drained ones after."""
    before = current_shape(client.admin_map(), client.reshape_status())
    count = nodes.count if nodes is not None and nodes.count is not None else len(before.nodes)
    want_partitions = partitions if partitions is not None else before.partitions
    want_replicas = replicas if replicas is not None else before.replicas
    with _progress(console) as show:
        try:
            result = reshape(
                sup, client, count, want_partitions, want_replicas, timeout=timeout, on_progress=show
            )
        except BadRequest as exc:
            raise Refused(exc.message) from None
        except ClusterError as exc:
            console.print(f"[red]reshape failed:[/] {escape(str(exc))}")
            raise click.exceptions.Exit(EXIT_FAILED) from None
    console.print(
        f"[green]done[/] in {result.seconds:.1f}s: {result.job.get('steps_done')} steps"
        + (f", started nodes {result.added}" if result.added else "")
        + (f", drained and stopped nodes {result.removed}" if result.removed else "")
    )


@contextmanager
def _errors(console: Console) -> Iterator[None]:
    """Refusals and client errors as one clear line on stderr and the documented exit code."""
    try:
        yield
    except Refused as exc:
        console.print(f"[red]refused:[/] {escape(str(exc))}\nnothing was changed")
        raise click.exceptions.Exit(EXIT_REFUSED) from None
    except Unavailable as exc:
        console.print(f"[red]unavailable:[/] {escape(exc.message)}")
        raise click.exceptions.Exit(EXIT_UNAVAILABLE) from None
    except KVError as exc:
        console.print(f"[red]error:[/] {escape(exc.code)}: {escape(exc.message)}")
        raise click.exceptions.Exit(EXIT_ERROR) from None
    except ValueError as exc:  # e.g. an endpoint that is not a URL
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise click.exceptions.Exit(EXIT_REFUSED) from None


@contextmanager
def _progress(console: Console) -> Iterator[Callable[[dict[str, Any]], None]]:
    with Progress(
        TextColumn("[bold]reshape[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def show(job: dict[str, Any]) -> None:
            total = job.get("steps_total")
            progress.update(
                task,
                total=total if isinstance(total, int) else None,
                completed=int(job.get("steps_done") or 0),
                description=str(job.get("current") or job.get("state") or ""),
            )

        yield show


def _follow(client: SyncClient, console: Console, timeout: float, expect: str | None) -> dict[str, Any]:
    with _progress(console) as show:
        try:
            job = follow(client, timeout, show)
        except TimeoutError as exc:
            console.print(f"[red]{escape(str(exc))}[/]")
            raise click.exceptions.Exit(EXIT_FAILED) from None
        except KeyboardInterrupt:
            # Only the watching stops: the job lives in the cluster's meta group and carries on.
            console.print("stopped following; the job goes on (`kvcluster reshape -e URL --wait` follows it)")
            raise click.exceptions.Exit(130) from None
    if expect is not None and job.get("id") not in (None, expect):
        console.print(f"[red]job {expect} was replaced by job {job.get('id')}[/] (another reshape)")
        raise click.exceptions.Exit(EXIT_FAILED)
    return job


def _finish(console: Console, job: dict[str, Any], before: Shape | None, target: Shape | None) -> None:
    state = job.get("state")
    if state == "idle":
        console.print("no reshape job")
        return
    if state == "failed":
        console.print(f"[red]reshape job {job.get('id')} failed:[/] {escape(str(job.get('error')))}")
        raise click.exceptions.Exit(EXIT_FAILED)
    took = (job.get("finished") or time.time()) - (job.get("started") or time.time())
    console.print(f"[green]done[/] in {took:.1f}s: {job.get('steps_done')} steps, {_target(job)}")
    dropped = sorted(set(before.nodes) - set(target.nodes)) if before and target else []
    if dropped:
        console.print(
            f"nodes {dropped} hold no data now: stop their processes, then "
            f"`kvcluster reshape -e URL --forget {','.join(map(str, dropped))}`"
        )


def forget_nodes(client: SyncClient, console: Console, ids: tuple[int, ...]) -> None:
    """Forget drained nodes, but only once their processes are gone: a running node joins again."""
    for node_id in ids:
        info = client.admin_node(node_id)
        if info is None:
            console.print(f"node {node_id} is not a member of the cluster")
            continue
        if info.get("reachable"):
            raise Refused(
                f"node {node_id} still answers at {info.get('url')}: stop its process first "
                "(a running node registers itself again)"
            )
        try:
            client.forget_node(node_id)
        except Conflict as exc:
            raise Refused(f"{exc.message}; reshape it away first (--nodes)") from None
        console.print(f"forgot node {node_id}")


def _target(job: dict[str, Any]) -> str:
    t = job.get("target") or {}
    return str(Shape(tuple(t.get("nodes") or ()), int(t.get("partitions", 0)), int(t.get("replicas", 0))))


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    stamp = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({time.time() - ts:.0f}s ago)"


def print_status(client: SyncClient) -> None:
    """The job, once: state, target, steps, the step under way, the error; and the map now."""
    job = client.reshape_status()
    now = current_shape(client.admin_map(), None)
    if job.get("state") == "idle":
        click.echo("reshape: no job")
    else:
        total = job.get("steps_total")
        click.echo(f"reshape job {job.get('id')}: {job.get('state')}")
        click.echo(f"  target    {_target(job)}")
        click.echo(f"  steps     {job.get('steps_done') or 0}/{total if total is not None else '?'}")
        if job.get("current"):
            click.echo(f"  current   {job['current']}")
        click.echo(f"  started   {_when(job.get('started'))}")
        if job.get("finished"):
            click.echo(f"  finished  {_when(job.get('finished'))}")
        if job.get("error"):
            click.echo(f"  error     {job['error']}")
    click.echo(f"cluster now: {now}")
