"""``python -m zoo``: the ``zoo`` command, so that ``torchrun -m zoo train ...`` works."""

from zoo.cli import main

if __name__ == "__main__":
    main(prog_name="zoo")
