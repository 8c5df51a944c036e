"""The frozen build's entry point: the `xcore` command (PyInstaller runs this file as `__main__`)."""

import multiprocessing

if __name__ == "__main__":
    # Granian starts its workers with multiprocessing; in a frozen build a child must stop here, not rerun the CLI.
    multiprocessing.freeze_support()
    import sys
    from pathlib import Path

    from xcore import codecache
    from xcore.heap import defer_collections

    defer_collections()  # until the start is over (see xcore.heap); before the CLI's imports
    # The dataclasses' methods compiled at build time (see xcore.codecache); before anything creates one.
    codecache.install(Path(getattr(sys, "_MEIPASS", ".")) / "xcore" / codecache.FILE_NAME)
    if sys.argv[1:2] == ["plugin-zygote"]:  # the fork server of sandboxed plugins' workers: no command line imports
        from xcore.plugin_zygote import main as zygote_main

        sys.exit(zygote_main(sys.argv[2:]))
    from xcore.cli import main

    main()
