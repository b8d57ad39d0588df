"""``python -m lrtune`` runs the command-line interface."""

from lrtune.cli import main

if __name__ == "__main__":
    main()
