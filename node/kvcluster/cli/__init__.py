"""The ``kvcluster`` command."""
