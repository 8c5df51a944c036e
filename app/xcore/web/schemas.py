"""Request and response bodies of the accounts API. Unknown fields are refused, so a typo is an error."""

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

ROW_ID_MAX = 2**31 - 1
"""ROW_ID_MAX is the largest row id the core's tables hold on every database (PostgreSQL's INTEGER is 32 bits):
an id path parameter above it is refused with 400 rather than reaching the database, which cannot compare it."""

ROLE_DESCRIPTION_MAX = 500
USERNAME_MAX = ROLE_NAME_MAX = 64

Name = Annotated[str, Meta(min_length=1, max_length=254, description="Username or email address.")]
Secret = Annotated[str, Meta(max_length=1024)]
Code = Annotated[str, Meta(min_length=1, max_length=40)]
# An account holds a handful of roles and a role some dozens of permissions: the bounds refuse a list that
# could only be an attack (each name becomes a bound SQL variable) with a 400 naming the field.
RoleNames = Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=100)]
PermissionNames = Annotated[list[Annotated[str, Meta(max_length=120)]], Meta(max_length=1000)]


class Body(Struct, forbid_unknown_fields=True, kw_only=True):
    """A request body: unknown fields are refused with their name."""


class SetupIn(Body):
    token: Annotated[str, Meta(min_length=1, max_length=200, description="The token in <data>/setup-token.")]
    username: Annotated[str, Meta(min_length=1, max_length=USERNAME_MAX)]
    password: Secret
    email: Annotated[str, Meta(max_length=254)] | None = None


class SetupState(Struct):
    required: bool


class PasswordPolicyOut(Struct):
    min_length: int
    max_length: int
    refuse_common: bool
    refuse_patterns: bool
    rules: list[str]


class NameRuleOut(Struct):
    max_length: int
    rule: str


class PolicyOut(Struct):
    """PolicyOut is what the server checks in account forms, so the UI shows the server's rules, never a copy."""

    password: PasswordPolicyOut
    username: NameRuleOut
    role_name: NameRuleOut
    role_description_max_length: int
    totp_digits: int


class LoginIn(Body):
    username: Name
    password: Secret
    totp: Annotated[str, Meta(max_length=12, description="Current code of the authenticator app.")] | None = None
    recovery_code: Annotated[str, Meta(max_length=40, description="One of the 2FA recovery codes.")] | None = None
    cookie: bool = msgspec.field(default=False)


class RefreshIn(Body):
    refresh_token: Annotated[str, Meta(max_length=200)] | None = None


class DesktopLoginIn(Body):
    token: Annotated[str, Meta(min_length=1, max_length=200, description="The desktop window's one-time token.")]


class SessionOut(Struct, omit_defaults=True):
    """SessionOut is a new session. Cookie sessions carry no tokens in the body: they are in HttpOnly cookies."""

    user_id: int
    username: str
    token_type: str
    expires_in: int
    refresh_expires_in: int
    access_token: str | None = None
    refresh_token: str | None = None
    csrf_token: str | None = None


class UserOut(Struct):
    id: int
    username: str
    email: str | None
    is_active: bool
    roles: list[str]
    totp_enabled: bool
    created_at: datetime
    last_login_at: datetime | None


class MeOut(UserOut):
    permissions: list[str]
    totp_required: bool


class Page(Struct):
    items: list[Any]
    total: int
    page: int
    per_page: int


class UserIn(Body):
    username: Annotated[str, Meta(min_length=1, max_length=USERNAME_MAX)]
    password: Secret
    email: Annotated[str, Meta(max_length=254)] | None = None
    roles: RoleNames = msgspec.field(default_factory=lambda: ["user"])
    is_active: bool = True


class UserPatch(Body):
    email: Annotated[str, Meta(max_length=254)] | UnsetType | None = UNSET
    is_active: bool | UnsetType = UNSET
    password: Secret | UnsetType = UNSET


class MePatch(Body):
    email: Annotated[str, Meta(max_length=254)] | None


class RolesIn(Body):
    roles: RoleNames


class PasswordChange(Body):
    current_password: Secret
    new_password: Secret


class TotpSetupOut(Struct):
    secret: str
    uri: str
    qr_svg: str


class TotpSetupIn(Body):
    password: Secret


class TotpConfirmIn(Body):
    code: Code


class RecoveryCodesOut(Struct):
    recovery_codes: list[str]


class TotpDisableIn(Body):
    password: Secret
    code: Code


class RoleOut(Struct):
    name: str
    description: str
    builtin: bool
    rank: int
    require_totp: bool
    permissions: list[str]


class RoleIn(Body):
    name: Annotated[str, Meta(min_length=1, max_length=ROLE_NAME_MAX)]
    description: Annotated[str, Meta(max_length=ROLE_DESCRIPTION_MAX)] = ""
    permissions: PermissionNames = msgspec.field(default_factory=list)
    require_totp: bool = False


class RolePatch(Body):
    description: Annotated[str, Meta(max_length=ROLE_DESCRIPTION_MAX)] | UnsetType = UNSET
    permissions: PermissionNames | UnsetType = UNSET
    require_totp: bool | UnsetType = UNSET


class PermissionOut(Struct):
    name: str
    description: str
    plugin_id: str | None
    roles: list[str]


class AuditOut(Struct):
    id: int
    at: datetime
    actor: str | None
    action: str
    target: str | None
    ip: str | None
    detail: dict[str, Any]


class RuleOut(Struct):
    pattern: str | None
    roles: list[str]
    permissions: list[str]
    methods: list[str]
    public: bool
    requirement: str


class PathAccessOut(Struct):
    allowed: bool
    requirement: str


class ExplainOut(Struct):
    path: str
    method: str
    rule: RuleOut
    user: str | None
    user_roles: list[str]
    allowed: bool
    reason: str


class SystemOut(Struct):
    version: str
    python: str
    data_dir: str
    database: str
    pid: int
    workers: int
    started_at: datetime
    uptime_seconds: float
