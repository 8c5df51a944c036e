"""The core database: engine (`engine`), tables (`models`), migrations (`migrate`) and backups (`backup`)."""
