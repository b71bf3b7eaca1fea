"""``python -m kvcluster`` is the ``kvcluster`` command."""

from kvcluster.cli.main import main

main()
