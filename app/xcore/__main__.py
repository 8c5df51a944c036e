"""`python -m xcore` is the same as the `xcore` command."""

from xcore.cli import main

if __name__ == "__main__":
    main()
