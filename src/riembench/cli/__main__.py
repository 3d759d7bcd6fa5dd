"""``python -m riembench.cli``: the ``riembench`` command."""

from riembench.cli.main import main

main()
