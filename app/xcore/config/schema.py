"""The one typed schema of xcore's settings, with a help text for every key.

`config.json` at the top of the repository holds exactly these defaults, and the README's settings table
lists exactly these keys; `tests/test_config_schema.py` fails when either drifts from this module.

Relative paths in settings are relative to the data directory.
"""

import ipaddress
import re
from functools import cache
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

# Settings whose values are masked by `xcore config show`.
SECRET: dict[str, Any] = {"secret": True}


NonEmptyStr = Annotated[str, Meta(min_length=1)]
LongStr = Annotated[str, Meta(min_length=32)]


def doc(text: str, **rules: Any) -> Meta:
    """doc attaches a help text, and optionally validation rules (ge=, le=, pattern=...), to a setting."""
    return Meta(description=text, **rules)


class _Section(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A settings section: unknown keys are errors, and a loaded config is read-only."""


class ServerConfig(_Section, frozen=True):
    host: Annotated[
        str,
        doc(
            "Address the HTTP server listens on. 127.0.0.1 keeps xcore private to this machine; "
            "0.0.0.0 opens it to the network.",
            min_length=1,
        ),
    ] = "127.0.0.1"
    port: Annotated[int, doc("TCP port of the HTTP server.", ge=1, le=65535)] = 8000
    workers: Annotated[
        int,
        doc("Number of Granian worker processes. One is right for a desktop or a small team.", ge=1, le=64),
    ] = 1
    trusted_proxies: Annotated[
        list[str],
        doc(
            "Addresses (127.0.0.1, ::1) or networks (10.0.0.0/8) of the reverse proxies in front of xcore. "
            "A request whose peer is one of them comes from the right-most address in its X-Forwarded-For "
            "header that is not a trusted proxy, with the scheme in X-Forwarded-Proto; the login throttle and "
            "the audit log see that address. Empty: the headers are ignored and every request comes from its "
            "peer, which behind a proxy is the proxy. List the proxies only, never the clients' networks: "
            "a trusted address can claim to be anyone. `xcore desktop` ignores this setting."
        ),
    ] = field(default_factory=list)
    metrics: Annotated[
        bool,
        doc(
            "Collect metrics: every request is counted (route, method, status, latency) for GET /metrics "
            "(Prometheus) and the admin dashboard (GET /api/admin/metrics). false turns the counting off, and both "
            "answer 404."
        ),
    ] = True
    metrics_interval: Annotated[
        float,
        doc(
            "Seconds between the samples of the admin UI's Metrics page, which charts the last hour of them and "
            "refreshes at the same pace. Prometheus's own scrape interval is Prometheus's setting.",
            ge=1,
            le=300,
        ),
    ] = 10.0


def trusted_proxy_problem(entry: str) -> str | None:
    """trusted_proxy_problem says what is wrong with one entry of server.trusted_proxies, or None when it is an IP
    address or network: the forms Granian's proxy-header wrapper matches a peer against (it would take anything
    else for a host name and never match it)."""
    if entry.strip() == "*":
        return (
            "'*' would let every client name its own address; list the addresses of your reverse proxies instead, "
            "such as 127.0.0.1 or 10.0.0.0/8"
        )
    example = "write an address such as 127.0.0.1 or ::1, or a network such as 10.0.0.0/8"
    try:
        if "/" not in entry:
            ipaddress.ip_address(entry)
            return None
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return f"{entry!r} is not an IP address or network; {example}"
    try:
        ipaddress.ip_network(entry)
    except ValueError:
        return f"{entry!r} has host bits set; write the network as {network.with_prefixlen}"
    return None


class SandboxLimits(_Section, frozen=True):
    memory_mb: Annotated[int, doc("Address space of a sandboxed plugin's worker, in MiB.", ge=128, le=1_048_576)] = 1024
    request_timeout: Annotated[
        float,
        doc(
            "Seconds a sandboxed plugin has to answer a request; past it the client gets 504 and the worker is "
            "replaced.",
            gt=0,
            le=3600,
        ),
    ] = 30.0
    open_files: Annotated[int, doc("Files and sockets a sandboxed plugin's worker may hold open.", ge=32)] = 256
    file_size_mb: Annotated[int, doc("Largest file a sandboxed plugin may write, in MiB.", ge=1)] = 1024
    network: Annotated[
        bool,
        doc(
            'Let a sandboxed plugin whose plugin.json asks for it ("network": true) open network connections '
            "(TCP and UDP); without both, it has none."
        ),
    ] = False


class BlockedVersions(_Section, frozen=True):
    id: Annotated[str, doc("The plugin's id.", pattern=r"^[a-z][a-z0-9_]{1,39}$")]
    versions: Annotated[
        str, doc("A PEP 440 specifier of the versions blocked, such as <1.2.3 or ==1.0.0; empty: every version.")
    ] = ""
    reason: Annotated[str, doc("Why, shown on the plugin.", min_length=1, max_length=300)] = "blocked by the operator"

    def __post_init__(self) -> None:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(self.versions)
        except InvalidSpecifier:
            raise ValueError(f"versions: {self.versions!r} is not a PEP 440 specifier such as <1.2.3") from None


class PluginsConfig(_Section, frozen=True):
    directory: Annotated[str, doc("Folder the plugin manager watches for plugin bundles (*.zip).", min_length=1)] = (
        "plugins"
    )
    interval: Annotated[
        float,
        doc(
            "Seconds a zip that does not read as a zip yet (a copy in progress) stays 'pending' before it is "
            "reported failed; also how often each worker rescans the folder in case a change went unnoticed.",
            ge=0.05,
            le=60,
        ),
    ] = 2.0
    entry_point: Annotated[
        str,
        doc(
            "Default entry module of a bundle, when its plugin.json names none.",
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        ),
    ] = "run"
    sandbox: Annotated[
        Literal["allow", "require", "off"],
        doc(
            "Which plugins run sandboxed, each in a worker process of its own with only its own files "
            '(plugins/README.md, "The sandbox"). allow: those whose plugin.json asks for it; require: every '
            "plugin not in `trusted`, whatever its manifest says; off: none, and a bundle that asks for a sandbox "
            "is refused."
        ),
    ] = "allow"
    trusted: Annotated[
        list[str],
        doc("Plugin ids the operator trusts to run in the server's process when `sandbox` is require."),
    ] = field(default_factory=list)
    limits: Annotated[
        SandboxLimits, doc("The limits of a sandboxed plugin's worker (the operator's; a bundle cannot set them).")
    ] = field(default_factory=lambda: SandboxLimits())
    limits_by_plugin: Annotated[
        dict[str, SandboxLimits],
        doc(
            "Limits of particular sandboxed plugins, by plugin id, instead of `limits`; a key left out of an "
            "entry takes its built-in default, not the value in `limits`."
        ),
    ] = field(default_factory=dict)
    policy: Annotated[
        Literal["unsigned", "sandbox-unsigned", "signed-only"],
        doc(
            'Which bundles may run, by their signature (plugins/README.md, "Signed bundles"). unsigned: any '
            "(those no trusted key signed are flagged); sandbox-unsigned: those no trusted key signed run "
            "sandboxed only; signed-only: only those a trusted key signed. A bundle whose signature does not "
            "hold is refused whatever the policy."
        ),
    ] = "unsigned"
    blocklist: Annotated[
        list[BlockedVersions],
        doc(
            "Plugin versions that never load, each {id, versions, reason}; one serving is unloaded, and its state "
            "says why."
        ),
    ] = field(default_factory=list)
    catalogues: Annotated[
        list[str],
        doc(
            "Plugin catalogues to browse, install and update from (https URLs of an index.json or its folder, or "
            "paths): signed JSON indexes of bundles, with a blocklist and notices (plugins/README.md, "
            '"Catalogues"). A catalogue is used only when a key in the trust store signed it.'
        ),
    ] = field(default_factory=list)
    index_url: Annotated[
        str,
        doc(
            "A package index (PEP 503 simple API, such as https://pypi.org/simple) from which a plugin's "
            "requirements that its bundle carries no wheel of are downloaded when it is installed, pinned by "
            'sha256 (plugins/README.md, "Requirements"). Empty: off, and such a bundle is refused naming the '
            "requirement.",
            pattern=r"^(https?://[^\s]+)?$",
        ),
    ] = ""
    cache: Annotated[
        Literal["auto", "memory", "file", "redis"],
        doc(
            'Where plugins\' `ctx.cache` entries live (plugins/README.md, "ctx.cache"). memory: each server '
            "process's own memory (with several workers, each worker has its own cache); file: files under "
            "<data>/cache/store, shared by this machine's processes and kept across restarts; redis: the Redis "
            "of the `redis` settings, shared by every node. auto: redis when Redis is on, file for `xcore "
            "desktop`, else memory."
        ),
    ] = "auto"


class TasksConfig(_Section, frozen=True):
    auto_restart: Annotated[
        bool,
        doc(
            "Resume a periodic task paused after repeated failures when its plugin loads again (or the server "
            "restarts)."
        ),
    ] = True
    pause_after: Annotated[
        int, doc("Consecutive failed runs after which a periodic task is paused (0: never).", ge=0, le=1000)
    ] = 5
    interval: Annotated[float, doc("Seconds between retries of a failed task.", ge=0, le=3600)] = 2.0
    max_retries: Annotated[int, doc("Times a failed task is retried before it is marked failed.", ge=0, le=100)] = 3
    workers: Annotated[
        int, doc("Threads that run tasks, in the one server process that runs the task consumer.", ge=1, le=32)
    ] = 2
    shutdown_grace: Annotated[
        float, doc("Seconds running tasks get to finish when the server stops.", ge=0, le=600)
    ] = 10.0
    maintenance_every: Annotated[
        float,
        doc(
            "Seconds between runs of the core's housekeeping tasks (expired sessions, old history, plugin cache).",
            ge=10,
            le=7 * 86400,
        ),
    ] = 3600.0
    history_days: Annotated[int, doc("Days finished task runs are kept in the journal.", ge=1, le=3650)] = 30
    audit_days: Annotated[int, doc("Days audit events are kept.", ge=1, le=36500)] = 365
    backup_every: Annotated[
        float,
        doc(
            "Seconds between scheduled complete backups (the database, plugins, their data and the settings; "
            "kept: migration.backup.max_backup_files) into migration.backup.backup_directory; 0 turns them off.",
            ge=0,
            le=365 * 86400,
        ),
    ] = 86400.0


class ManagerConfig(_Section, frozen=True):
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)


class PasswordConfig(_Section, frozen=True):
    min_length: Annotated[int, doc("Shortest password accepted for an account.", ge=8, le=256)] = 10
    refuse_common: Annotated[
        bool,
        doc(
            "Refuse the 20,000 most common passwords (the list Django ships, by Royce Williams), also with a few "
            "digits or symbols added or letters written as look-alike digits (P@ssw0rd1)."
        ),
    ] = True
    refuse_patterns: Annotated[
        bool,
        doc(
            "Refuse passwords made mostly of keyboard patterns (qwertyuiop, 1qaz2wsx), sequences (1234567890, "
            "abcdef) and repeats (aaaa, abcabc): fewer than 4 characters, or a third of them, outside such patterns."
        ),
    ] = True


class LockoutConfig(_Section, frozen=True):
    max_failures: Annotated[
        int,
        doc("Failed logins or 2FA codes in a row after which an account is locked for a while.", ge=1, le=1000),
    ] = 5
    ip_max_failures: Annotated[
        int, doc("Failed logins from one client address after which that address is locked for a while.", ge=1)
    ] = 20
    base_delay: Annotated[
        float, doc("Seconds of the first lock; each further failure while over the limit doubles it.", ge=1, le=3600)
    ] = 30
    max_delay: Annotated[float, doc("Longest lock, in seconds.", ge=1, le=7 * 86400)] = 3600


class HashingConfig(_Section, frozen=True):
    workers: Annotated[
        int,
        doc(
            "Passwords hashed or checked at once by each server worker, on threads of their own. Each one takes "
            "argon2id's 46 MiB while it runs, so this times 46 MiB is what hashing can use.",
            ge=1,
            le=64,
        ),
    ] = 1
    queue: Annotated[
        int,
        doc(
            "Requests that may wait for a password check beyond those being hashed; the next one is answered 503 "
            "with Retry-After at once. Each waiting or hashing request holds one of the worker's request threads "
            "(there are the CPUs + 4, at most 32); workers + queue is capped at half of them, so that the rest "
            "serve every other route during a flood of logins.",
            ge=0,
            le=1000,
        ),
    ] = 2


class SecureConfig(_Section, frozen=True):
    secret_key: Annotated[
        LongStr | None,
        doc(
            "Key that signs session tokens, at least 32 characters. Leave null: xcore generates one at "
            "first run in <data>/secret.key (mode 0600). Set it only to share sessions between machines.",
            extra=SECRET,
        ),
    ] = None
    session_ttl: Annotated[
        int,
        doc(
            "Lifetime of a login session, in seconds: how long refresh tokens keep a login alive without "
            "typing the password again.",
            ge=60,
            le=90 * 24 * 3600,
        ),
    ] = 8 * 3600
    access_ttl: Annotated[
        int,
        doc("Lifetime of an access token (JWT), in seconds. Clients refresh it before it expires.", ge=30, le=86400),
    ] = 900
    password: PasswordConfig = field(default_factory=PasswordConfig)
    lockout: LockoutConfig = field(default_factory=LockoutConfig)
    hashing: HashingConfig = field(default_factory=HashingConfig)


class BackupConfig(_Section, frozen=True):
    auto_backup_before_migration: Annotated[
        bool, doc("Copy the SQLite database (online backup API) before applying migrations.")
    ] = True
    max_backup_files: Annotated[
        int,
        doc(
            "How many of the newest backups of each kind (manual, scheduled, migration, safety) to keep; older "
            "ones of that kind are deleted.",
            ge=1,
            le=1000,
        ),
    ] = 10
    backup_directory: Annotated[str, doc("Folder the backups are written to.", min_length=1)] = "backups"
    encryption: Annotated[
        Literal["off", "passphrase", "key"],
        doc(
            "How complete backups made without one being chosen (scheduled ones, `xcore db backup`, the admin API's "
            "default) are encrypted: off; passphrase; key (a generated backup key, from `xcore db backup-key`). The "
            "passphrase or key is read from the environment variable XCORE_BACKUP_SECRET, else from "
            "`secret_file`; when neither holds one, such a backup is refused, never written unencrypted."
        ),
    ] = "off"
    secret_file: Annotated[
        str,
        doc(
            "File (in the data directory unless absolute; mode 0600) holding the passphrase or the backup key of "
            "`encryption`. Never put either in a settings file.",
            min_length=1,
        ),
    ] = "backup-secret"


class MigrationConfig(_Section, frozen=True):
    auto_upgrade: Annotated[
        bool,
        doc(
            "Apply pending database migrations when the server starts. When false, `xcore serve` "
            "refuses to start on an out-of-date database; run `xcore db upgrade`."
        ),
    ] = True
    backup: BackupConfig = field(default_factory=BackupConfig)


class DataConfig(_Section, frozen=True):
    url: Annotated[
        NonEmptyStr | None,
        doc(
            "SQLAlchemy URL of the core database. null means sqlite:///<data>/xcore.db. "
            "DATABASE_URL overrides it. PostgreSQL: postgresql+psycopg://user:password@host/db, with the "
            "xcore[postgres] extra.",
            extra=SECRET,
        ),
    ] = None
    echo: Annotated[bool, doc("Log every SQL statement (context db, level INFO).")] = False


class LogsConfig(_Section, frozen=True):
    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], doc("Lowest level that is logged.")] = (
        "INFO"
    )
    console: Annotated[bool, doc("Write human-readable log lines to the console (stderr).")] = True
    file: Annotated[
        str,
        doc(
            "JSON-lines log file, rotated by size. An empty string turns the file off, which also "
            "leaves `xcore logs` nothing to read."
        ),
    ] = "logs/xcore.log"
    max_bytes: Annotated[int, doc("Size at which the log file is rotated, in bytes.", ge=10_000, le=1_000_000_000)] = (
        10_000_000
    )
    backup_count: Annotated[int, doc("Rotated log files to keep.", ge=0, le=1000)] = 5


class AccessRule(_Section, frozen=True, omit_defaults=True):
    """One access rule, in the seed's format: the roles and permissions a path requires, for some methods."""

    roles: Annotated[list[str], doc("Roles the path requires; all of them.")] = field(default_factory=list)
    permissions: Annotated[list[str], doc("Permissions the path requires; all of them.")] = field(default_factory=list)
    method: Annotated[str | list[str], doc("HTTP method, or list of methods, the rule covers; empty means all.")] = (
        field(default_factory=list)
    )
    public: Annotated[bool, doc("true lets anyone in, logged in or not; roles and permissions must then be empty.")] = (
        False
    )


ROLE_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,63}\Z")
PERMISSION_NAME = re.compile(r"^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_.-]*\Z")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CHANGING_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def access_rule_problem(pattern: str, rule: AccessRule) -> tuple[str, str] | None:
    """access_rule_problem says what is wrong with one rule: (the sub-key at fault, the message), or None."""
    if not pattern.startswith("/"):
        return "", "the path must start with /"
    if "*" in pattern[:-1]:
        return "", "* may only end the path (a prefix), as in /api/admin/*"
    for method in [rule.method] if isinstance(rule.method, str) else rule.method:
        if method.upper() not in HTTP_METHODS:
            return ".method", f"unknown HTTP method {method!r}; use one of {', '.join(sorted(HTTP_METHODS))}"
    for role in rule.roles:
        if not ROLE_NAME.match(role):
            return ".roles", f"{role!r} is not a role name (lowercase letters, digits, _ and -)"
    for permission in rule.permissions:
        if not PERMISSION_NAME.match(permission):
            return ".permissions", f"{permission!r} is not a permission name such as plugins.read"
    if rule.public and (rule.roles or rule.permissions):
        return "", "a public rule cannot also require roles or permissions"
    return None


PUBLIC = AccessRule(public=True)
LOGGED_IN = AccessRule()


def default_access_rules() -> dict[str, AccessRule]:
    """default_access_rules is the shipped table: admin routes need admin, a few entry points are public."""
    return {
        "/api/admin/*": AccessRule(roles=["admin"]),
        "/api/admin/backups*": AccessRule(roles=["superadmin"]),  # a restore replaces every account
        # The metrics: a Prometheus server (with a scraper token, `xcore metrics token new`) and the admin dashboard.
        "/metrics": AccessRule(permissions=["metrics.read"]),
        "/api/admin/metrics": AccessRule(permissions=["metrics.read"]),
        # Changing plugins needs at least the right to change sandboxed ones; a plugin any version of which runs in
        # the server's process, with its rights, needs plugins.manage too (superadmins), which the handlers check.
        "/api/admin/plugins*": AccessRule(permissions=["plugins.manage_sandboxed"], method=list(CHANGING_METHODS)),
        "/api/me/*": LOGGED_IN,
        "/api/auth/*": PUBLIC,
        "/api/setup": PUBLIC,
        "/api/version": PUBLIC,
        "/health": PUBLIC,
        "/docs": PUBLIC,
        "/redoc": PUBLIC,
        "/openapi.json": PUBLIC,
        "/static/vendor/*": PUBLIC,
        "/admin": PUBLIC,
        "/admin/*": PUBLIC,
    }


class MiddlewareConfig(_Section, frozen=True):
    ACCESS_RULES: Annotated[
        dict[str, AccessRule],
        doc(
            "Access rules, in the seed's format: a path, or a prefix ending in *, mapped to the roles and "
            "permissions it requires (all of them) and the methods it covers. The most specific path wins; "
            "a path no rule covers needs a logged-in user (deny by default). A rule with no roles and no "
            "permissions needs a logged-in user; public: true lets anyone in. Layers merge rule by rule: "
            "your config adds or replaces rules, and a rule set to null removes a default one."
        ),
    ] = field(default_factory=default_access_rules)


class XcoreSection(_Section, frozen=True):
    data: DataConfig = field(default_factory=DataConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    middleware: MiddlewareConfig = field(default_factory=MiddlewareConfig)


class RedisConfig(_Section, frozen=True):
    enabled: Annotated[
        bool | None,
        doc(
            "Use Redis for the task queue, and for the lease that picks its one consumer, instead of SQLite. "
            "null means: when url is set."
        ),
    ] = None
    url: Annotated[
        NonEmptyStr | None,
        doc(
            "Redis URL, e.g. redis://host:6379/0. REDIS_URL overrides it; when set it wins over host, port and db.",
            extra=SECRET,
        ),
    ] = None
    host: Annotated[str, doc("Redis host, used when url is null.", min_length=1)] = "localhost"
    port: Annotated[int, doc("Redis port, used when url is null.", ge=1, le=65535)] = 6379
    db: Annotated[int, doc("Redis database number, used when url is null.", ge=0)] = 0
    password: Annotated[str | None, doc("Redis password, used when url is null.", extra=SECRET)] = None

    @property
    def active(self) -> bool:
        """active tells whether Redis is switched on."""
        return self.enabled if self.enabled is not None else self.url is not None


# Keys that were settings and are no longer, with the reason. A layer that still sets one is refused with that
# reason (`xcore.config.loader`), not as an unknown key, which would read as a typo to look up.
RETIRED: dict[tuple[str, ...], str] = {
    ("redis", "TTL"): "it was to be the lifetime of entries cached in Redis, and xcore caches nothing there, "
    "so it never had an effect",
}


class XcoreConfig(_Section, frozen=True):
    """XcoreConfig is the whole, validated configuration of one xcore process."""

    server: ServerConfig = field(default_factory=ServerConfig)
    manager: ManagerConfig = field(default_factory=ManagerConfig)
    secure: SecureConfig = field(default_factory=SecureConfig)
    migration: MigrationConfig = field(default_factory=MigrationConfig)
    xcore: XcoreSection = field(default_factory=XcoreSection)
    redis: RedisConfig = field(default_factory=RedisConfig)


def defaults_as_builtins() -> dict[str, Any]:
    """defaults_as_builtins returns the schema's defaults as plain JSON data, the content of config.json."""
    defaults: dict[str, Any] = msgspec.to_builtins(XcoreConfig())
    return defaults


class Setting(msgspec.Struct, frozen=True):
    """Setting describes one leaf key of the schema: its path, help text, type, default and secrecy."""

    path: tuple[str, ...]
    help: str
    type: msgspec.inspect.Type
    default: Any
    secret: bool

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def type_name(self) -> str:
        return describe_type(self.type)


def _unwrap(t: msgspec.inspect.Type) -> tuple[msgspec.inspect.Type, str, bool]:
    if isinstance(t, msgspec.inspect.Metadata):
        description = (t.extra_json_schema or {}).get("description", "")
        return t.type, description, bool((t.extra or {}).get("secret"))
    return t, "", False


def iter_settings(struct: type[Struct] = XcoreConfig, prefix: tuple[str, ...] = ()) -> list[Setting]:
    """iter_settings lists every leaf setting of the schema, depth first, in declaration order."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    instance = struct()
    found: list[Setting] = []
    for f in info.fields:
        inner, description, secret = _unwrap(f.type)
        if isinstance(inner, msgspec.inspect.StructType):
            found += iter_settings(inner.cls, (*prefix, f.encode_name))
        else:
            default = msgspec.to_builtins(getattr(instance, f.name))
            found.append(Setting((*prefix, f.encode_name), description, inner, default, secret))
    return found


@cache
def _schema_info() -> msgspec.inspect.Type:
    """The schema's type information, built once and kept: loading asks for it at every key it checks."""
    return msgspec.inspect.type_info(XcoreConfig)


def section_fields(path: tuple[str, ...]) -> dict[str, msgspec.inspect.Type] | None:
    """section_fields maps the keys of the section at `path` to their types, or None if `path` is no section."""
    info: msgspec.inspect.Type = _schema_info()
    for name in path:
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        fields = {f.encode_name: _unwrap(f.type)[0] for f in info.fields}
        if name not in fields:
            return None
        info = fields[name]
    if not isinstance(info, msgspec.inspect.StructType):
        return None
    return {f.encode_name: _unwrap(f.type)[0] for f in info.fields}


def describe_type(t: msgspec.inspect.Type) -> str:
    """describe_type names a schema type the way the README and error messages show it."""
    simple = {
        msgspec.inspect.StrType: "string",
        msgspec.inspect.IntType: "integer",
        msgspec.inspect.FloatType: "number",
        msgspec.inspect.BoolType: "boolean",
        msgspec.inspect.NoneType: "null",
    }
    t, _, _ = _unwrap(t)
    if type(t) in simple:
        return simple[type(t)]
    if isinstance(t, msgspec.inspect.UnionType):
        return " or ".join(describe_type(m) for m in t.types)
    if isinstance(t, msgspec.inspect.LiteralType):
        return "one of " + ", ".join(str(v) for v in t.values)
    if isinstance(t, msgspec.inspect.ListType):
        return f"list of {describe_type(t.item_type)}"
    if isinstance(t, msgspec.inspect.DictType):
        return f"object of {describe_type(t.value_type)}"
    if isinstance(t, msgspec.inspect.StructType):
        return "object with keys " + ", ".join(f.encode_name for f in t.fields)
    return type(t).__name__


def type_at(path: tuple[str, ...]) -> msgspec.inspect.Type | None:
    """type_at returns the schema type at a key path; list indexes and mapping keys may appear in the path."""
    current: msgspec.inspect.Type = _schema_info()
    for token in path:
        current = _unwrap(current)[0]
        if isinstance(current, msgspec.inspect.UnionType):  # e.g. `str | list[str]`: follow the container
            containers = [t for t in current.types if isinstance(_unwrap(t)[0], msgspec.inspect.ListType)]
            current = _unwrap(containers[0])[0] if containers else current
        if isinstance(current, msgspec.inspect.StructType):
            fields = {f.encode_name: f.type for f in current.fields}
            if token not in fields:
                return None
            current = fields[token]
        elif isinstance(current, msgspec.inspect.DictType):
            current = current.value_type
        elif isinstance(current, msgspec.inspect.ListType):
            current = current.item_type
        else:
            return None
    return _unwrap(current)[0]
