"""`xcore serve`: check everything that can be checked, migrate, then run Granian until a signal stops it.

The parent process does the one-time work (data directory, signing key, migrations, the port check) before
Granian starts its workers, so a bad setting or a taken port fails fast with one clear line, and N workers
never race to migrate the same database. On a start with nothing to migrate it reads the SQLite database with
sqlite3 (`xcore.db.peek`) rather than SQLAlchemy. With one worker it never imports the web stack either: the
worker imports both, and this process, which only watches over it, stays small and hands over sooner. With
several, it imports them once for all (`preload_for_workers`), so the workers share those pages.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import socket
import sqlite3
from collections.abc import Iterator

from xcore import codecache
from xcore.auth import builtin
from xcore.auth.setup import SetupToken
from xcore.build import self_command, shell_line
from xcore.db import peek, revisions
from xcore.db.backup import remove_partial_backups, remove_working_copies
from xcore.db.serving import ServingLock, migrating
from xcore.errors import DatabaseError, ServerError
from xcore.heap import after_fork_in_child, freeze_startup_heap
from xcore.metrics.export import ENV as METRICS_ENV
from xcore.metrics.export import prepare_directory
from xcore.plugins import safemode
from xcore.plugins.leftovers import remove_leftovers
from xcore.runtime import Runtime
from xcore.terminal import printable

log = logging.getLogger("xcore.system")

WORKER_TARGET = "xcore.web.asgi:create_switch"
METRICS_DIR = "metrics"  # in the data directory: the workers' metric files (prometheus-client's multi-process mode)


def check_port_free(host: str, port: int) -> None:
    """check_port_free raises ServerError, naming the port and the flag to change, when it cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerError(f"host {host!r} cannot be resolved ({exc.strerror}); check --host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        if os.name != "nt":  # as Granian does, so a port in TIME_WAIT is not reported as taken
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServerError(f"port {port} on {host} is already in use; choose another with --port") from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise ServerError(
                    f"port {port} on {host} needs more privileges; choose one above 1023 with --port"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ServerError(f"address {host} is not one of this machine's; check --host") from None
            raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host and --port") from None


def prepare_database(runtime: Runtime) -> None:
    """prepare_database applies pending migrations (backup first), or refuses when auto_upgrade is off, then
    brings the built-in roles and permissions up to date. A SQLite database that needs neither is only read
    (`up_to_date`)."""
    if up_to_date(runtime):
        return
    if revisions.current_revision(runtime.engine) != revisions.head_revision():
        from xcore.db import migrate  # Alembic, only when there is something to migrate (or to refuse)

        with migrating(runtime.database_url):  # PostgreSQL: nodes starting together migrate one at a time
            pending = migrate.pending_revisions(runtime.database_url)
            if pending:
                apply_migrations(runtime, pending)
    from xcore.auth.permissions import sync_builtin

    with runtime.auth.transaction() as session:
        sync_builtin(session)


def up_to_date(runtime: Runtime) -> bool:
    """up_to_date says whether the SQLite core database is at the shipped revision with the built-in roles and
    permissions in sync, reading it with sqlite3. False for any other database, and when the file cannot be
    read that way: prepare_database then takes the full path, which reports any error properly."""
    path = runtime.database_file
    if path is None:
        return False
    try:
        if peek.revision(path) != revisions.head_revision():
            return False
        return builtin.in_sync(*peek.permissions_and_roles(path))
    except sqlite3.Error:
        return False


def accounts_exist(runtime: Runtime) -> bool:
    """accounts_exist says whether any account exists, read with sqlite3 when the database is a SQLite file."""
    path = runtime.database_file
    if path is not None:
        try:
            return peek.has_accounts(path)
        except sqlite3.Error:
            pass  # the ORM's answer, or its error
    return not runtime.auth.setup_required()


def apply_migrations(runtime: Runtime, pending: list[str]) -> None:
    url = runtime.database_url
    if not runtime.config.migration.auto_upgrade:
        raise DatabaseError(
            f"the database needs migrations {', '.join(pending)}; run `xcore db upgrade` "
            "(or set migration.auto_upgrade to true)"
        )
    from xcore.db import migrate

    log.info("applying database migrations: %s", ", ".join(pending), extra={"context": "db"})
    result = migrate.upgrade(url, runtime.backups_dir, runtime.config.migration.backup)
    if result.backup:
        log.info("backup before migration: %s", result.backup, extra={"context": "db"})


def announce_setup(runtime: Runtime, url: str) -> str | None:
    """announce_setup prints a one-time setup URL while no account exists and returns its token (None once an
    account exists). The token is also in <data>/setup-token (mode 0600); it is new at every start and dies
    once used."""
    setup_token = SetupToken(runtime.data.root)
    if accounts_exist(runtime):
        setup_token.remove()
        return None
    token = setup_token.create()
    # The command as it runs from any shell: `xcore` may not be on the PATH (a checkout's .venv, a binary).
    create = shell_line(
        [*self_command(), "user", "create", "NAME", "--superadmin", "--data-dir", str(runtime.data.root)]
    )
    print(
        printable(
            f"First run: no account exists yet. Create the first superadmin at {url}/admin/setup?token={token}\n"
            f"  or: POST {url}/api/setup with token, username and password, or run `{create}`.",
            keep_newlines=True,
        ),
        flush=True,
    )
    log.info("first run: waiting for setup; the setup token is in %s", setup_token.path)
    return token


def announce_safe_mode(mode: safemode.SafeMode) -> None:
    """announce_safe_mode says loudly, on the console and in the log, that this run has every plugin off."""
    advice = "remove or fix it in the admin UI or with `xcore plugin remove`, then restart without --safe"
    text = f"SAFE MODE: {mode.describe().removeprefix('safe mode: ')}; {advice}"
    print(printable(text), flush=True)
    log.warning("%s", text)


def display_url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def worker_environment(runtime: Runtime) -> dict[str, str]:
    """worker_environment is what the workers need to open the same Runtime as the parent."""
    server = runtime.config.server
    return {
        "XCORE_DATA_DIR": str(runtime.data.root),
        "XCORE_SERVER__HOST": server.host,
        "XCORE_SERVER__PORT": str(server.port),
        "XCORE_SERVER__WORKERS": str(server.workers),
    }


@contextlib.contextmanager
def serving_database(runtime: Runtime) -> Iterator[None]:
    """serving_database holds the serving lock on the core database while this process serves it
    (`xcore.db.serving`): on SQLite no second server (and no restore) uses the same file; on PostgreSQL any number
    of nodes serve together, and none while a restore or migration command runs. It first removes the temporary
    files interrupted plugin uploads left (`remove_leftovers`), and those of interrupted restores, migrations and
    backups. Raises ServerError when the lock cannot be taken."""
    runtime.data.signing_key()  # created at first run, mode 0600; never printed
    db_file = runtime.database_file
    lock = ServingLock(runtime.database_url, db_file)
    if not lock.serve():
        if db_file is not None:
            raise ServerError(
                f"another xcore server is already running with the database {db_file}; stop it, or use "
                "another --data-dir"
            )
        raise ServerError(
            "an `xcore db restore`, `upgrade` or `downgrade` is running against the database; start again when "
            "it has finished"
        )
    try:
        remove_leftovers(runtime)  # no worker runs yet, and no other server: whatever is half-written is orphaned
        if db_file is not None:
            remove_working_copies(db_file)
        remove_partial_backups(runtime.backups_dir)
        yield
    finally:
        lock.release()


def preload_for_workers(workers: int) -> None:
    """preload_for_workers imports, with several workers, what each of them imports (the worker target's
    module: the web stack, SQLAlchemy, the plugin manager) once in this process before Granian forks them, so
    they start from shared pages rather than each from its own copy. A worker still copies many of them as it
    runs (reference counts are writes), so this saves memory from three workers on and costs none with two
    (benchmarks/README.md). A single worker shares with nobody, so its start does not wait for this process to
    import first."""
    if workers > 1:
        importlib.import_module(WORKER_TARGET.partition(":")[0])


def serve(runtime: Runtime, *, safe: bool = False) -> int:
    """serve runs the server until SIGINT or SIGTERM and returns the exit code (0 after a clean stop). With `safe`,
    or after repeated failed starts (`xcore.plugins.safemode`), it runs with every plugin off."""
    server = runtime.config.server
    with serving_database(runtime):
        check_port_free(server.host, server.port)
        prepare_database(runtime)
        os.environ.update(worker_environment(runtime))
        if server.metrics:  # each worker writes its metric files there, emptied now (see xcore.metrics.export)
            os.environ[METRICS_ENV] = str(prepare_directory(runtime.data.root / METRICS_DIR))
        mode = safemode.begin_start(runtime.data.root, forced=safe)
        if mode is not None:
            os.environ.update(safemode.environment(mode))
            announce_safe_mode(mode)
        from granian import Granian  # here: the CLI's other commands migrate with prepare_database, without it
        from granian.constants import Interfaces

        url = display_url(server.host, server.port)
        granian = Granian(
            WORKER_TARGET,
            address=server.host,
            port=server.port,
            interface=Interfaces.ASGI,
            workers=server.workers,
            factory=True,
            log_dictconfig=runtime.logging_config(),
            log_level=runtime.config.xcore.logs.level.lower(),  # type: ignore[arg-type]
            log_access=False,
            respawn_failed_workers=False,
        )
        print(
            printable(f"xcore {runtime.version} serving at {url}  (docs: {url}/docs, data: {runtime.data.root})"),
            flush=True,
        )
        announce_setup(runtime, url)
        log.info("xcore %s starting at %s with %d worker(s)", runtime.version, url, server.workers)
        if server.trusted_proxies:
            log.info("trusting X-Forwarded-For and X-Forwarded-Proto from %s", ", ".join(server.trusted_proxies))
        # Granian forks its workers (on Linux): they share this frozen heap, and defer their own collections
        # until their core app is built (see xcore.heap). Once forked, this process needs no more of the
        # binary's compiled dataclass methods (xcore.codecache).
        preload_for_workers(server.workers)
        freeze_startup_heap(once=False)
        os.register_at_fork(after_in_child=after_fork_in_child, after_in_parent=codecache.release)
        try:
            granian.serve()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            log.error("xcore stopped with exit code %d (a worker failed; see the lines above)", code)
            return code
        log.info("xcore stopped cleanly")
        return 0
