"""``python -m crrg`` is the same entry point as the ``crrg`` command (needed for torchrun)."""

from crrg.cli.main import main

if __name__ == "__main__":
    main()
