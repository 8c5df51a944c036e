"""`xcore user create | passwd | list | roles`: manage accounts from the machine, for self-hosters.

Whoever can run this command can read the data directory, so it may do anything: it is the machine's owner.
Passwords are asked for twice on a terminal, or read from the first line of standard input with
--password-stdin (for scripts). They are never taken as an argument, which would leave them in the shell
history and the process list.
"""

from __future__ import annotations

import sys

import click

from xcore.cli.options import data_dir_option, migrated_runtime
from xcore.cli.output import echo


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise click.UsageError("--password-stdin: standard input is empty; pipe the password in")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise click.UsageError("no terminal to ask for the password on; use --password-stdin")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group()
def user() -> None:
    """Create accounts and set passwords from the command line."""


@user.command("create")
@click.argument("username")
@click.option("--email", default=None, help="Email address; it works as a login name too.")
@click.option("--superadmin", is_flag=True, help="Make the account a superadmin (this is how setup is done here).")
@click.option("--role", "roles", multiple=True, help="Role to grant (repeatable); default: user.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@data_dir_option
def create(
    username: str,
    email: str | None,
    superadmin: bool,
    roles: tuple[str, ...],
    password_stdin: bool,
    data_dir: str | None,
) -> None:
    """Create an account. With --superadmin on a new install, this completes first-run setup."""
    from xcore.auth import accounts
    from xcore.auth.service import Client

    runtime = migrated_runtime(data_dir)
    password = _read_password(password_stdin)
    auth = runtime.auth
    client = Client(ip="command line")
    granted = ["superadmin", *roles] if superadmin else list(roles) or ["user"]
    if auth.setup_required():
        if not superadmin:
            raise click.UsageError("no account exists yet: the first one must be a superadmin; add --superadmin")
        accounts.complete_setup(auth, client, None, username=username, password=password, email=email)
    else:
        accounts.create_user(auth, None, client, username=username, password=password, email=email, roles=granted)
    echo(f"created {username} ({', '.join(dict.fromkeys(granted))})")


@user.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@data_dir_option
def passwd(username: str, password_stdin: bool, data_dir: str | None) -> None:
    """Set a user's password. All of their sessions end."""
    from sqlalchemy import select

    from xcore.auth import accounts
    from xcore.auth.errors import NotFound
    from xcore.auth.service import Client
    from xcore.db.models import User

    runtime = migrated_runtime(data_dir)
    with runtime.sessions() as session:  # before asking for a password twice
        if session.scalar(select(User.id).where(User.username == username)) is None:
            raise NotFound(f"there is no user {username!r}; `xcore user list` shows the accounts")
    password = _read_password(password_stdin)
    accounts.set_password(runtime.auth, Client(ip="command line"), username, password)
    echo(f"password of {username} changed; their sessions have ended")


@user.command("list")
@data_dir_option
def list_users(data_dir: str | None) -> None:
    """List the accounts with their roles and 2FA state."""
    from sqlalchemy import select

    from xcore.db.models import User

    runtime = migrated_runtime(data_dir)
    with runtime.sessions() as session:
        users = session.scalars(select(User).order_by(User.username)).all()
        if not users:
            echo("no accounts yet: run `xcore user create NAME --superadmin`")
        for u in users:
            flags = ("" if u.is_active else " inactive") + (" 2fa" if u.totp_enabled else "")
            echo(f"{u.username:<24} {','.join(r.name for r in u.roles):<24}{flags}")
