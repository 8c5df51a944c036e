"""The frozen build's entry point: the `xcore` command (PyInstaller runs this file as `__main__`)."""

import multiprocessing

if __name__ == "__main__":
    # Granian starts its workers with multiprocessing; in a frozen build a child must stop here, not rerun the CLI.
    multiprocessing.freeze_support()
    from xcore.heap import defer_collections

    defer_collections()  # until the start is over (see xcore.heap); before the CLI's imports
    from xcore.cli import main

    main()
