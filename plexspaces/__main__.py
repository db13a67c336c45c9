"""`python -m plexspaces`: the `plexspaces` command line (see `plexspaces --help`)."""

from plexspaces.cli import main

if __name__ == "__main__":
    main()
