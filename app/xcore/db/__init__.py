"""The core database: engine (`engine`), tables (`models`), migrations (`migrate`) and backups (`backup`)."""

BUSY_TIMEOUT_MS = 5000  # how long a connection to the core SQLite database waits on another's lock
