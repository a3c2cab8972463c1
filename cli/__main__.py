"""``python -m cli``: the ``gateway`` command without its installed entry point."""

from cli.main import main

main()
