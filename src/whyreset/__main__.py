"""``python -m whyreset`` runs the command-line interface."""

from whyreset.cli import main

if __name__ == "__main__":
    main()
