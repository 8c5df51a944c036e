"""Structured logging: one setup per process (`setup`), a multi-process rotating file (`handler`), and the
reader behind `xcore logs` (`reader`)."""
