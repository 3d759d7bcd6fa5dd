"""``python -m riembench.cli.main``: the ``riembench`` command."""

from riembench.cli.main.main import main

main()
