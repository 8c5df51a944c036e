"""`python -m xcore` is the same as the `xcore` command."""

from xcore.heap import defer_collections

defer_collections()  # until the start is over (see xcore.heap); before the CLI's imports

from xcore.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
