"""`python -m virtmix` runs the command line, as the `virtmix` script does."""

from virtmix.cli import main

if __name__ == "__main__":
    main()
