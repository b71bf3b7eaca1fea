"""Entry point: ``kvcluster <command>``."""

from __future__ import annotations

import click

from .backupcmd import BACKUP_COMMANDS
from .bench import bench_command
from .benchcompare import bench_compare_command
from .benchreshape import bench_reshape_command
from .kvcmds import KV_COMMANDS
from .leasecmd import lease_command, lock_command
from .localcmd import local_command
from .nodecmd import node_command
from .reshapecmd import reshape_command
from .torture import torture_command
from .watchcmd import watch_command


@click.group(context_settings={"auto_envvar_prefix": "KVCLUSTER", "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kvcluster")
def cli() -> None:
    """kvcluster: a partitioned, replicated, strongly consistent key-value store."""


cli.add_command(node_command)
cli.add_command(local_command)
for _command in KV_COMMANDS:
    cli.add_command(_command)
for _backup in BACKUP_COMMANDS:
    cli.add_command(_backup)
cli.add_command(bench_command)
cli.add_command(bench_compare_command)
cli.add_command(bench_reshape_command)
cli.add_command(torture_command)
cli.add_command(reshape_command)
cli.add_command(lease_command)
cli.add_command(lock_command)
cli.add_command(watch_command)


def main() -> None:
    cli()
