"""``python -m zcounter.sim``: the ``bin/sim`` command."""

from .cli import main

if __name__ == "__main__":
    main()
