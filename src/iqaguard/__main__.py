"""``python -m iqaguard``: the same typer app as the ``iqaguard`` command."""
from .cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
