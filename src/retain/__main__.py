"""``python -m retain``: the ``retain`` command (what the jobs of ``--launcher`` run)."""

from retain.cli import main

main()
