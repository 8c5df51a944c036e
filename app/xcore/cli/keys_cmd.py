"""`xcore keys new` and `xcore trust add | remove | list`: signing keys for plugin authors, and the public keys
the operator trusts (plugins/README.md, "Signed bundles").

A private key is written readable by its owner only, and never overwritten: losing it is better than silently
replacing it. The trust store lives in the data directory; a change to it makes every server's workers look at
the plugins again, so a bundle the policy refused may load once its signer is trusted.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from xcore.cli.options import data_dir_option, echo_table, migrated_runtime
from xcore.cli.output import echo


@click.group()
def keys() -> None:
    """Make a key to sign plugin bundles with."""


@keys.command("new")
@click.argument("name")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), help="Output folder."
)
def new_key_command(name: str, out_dir: Path) -> None:
    """Make the key pair NAME: OUT/<name>.key (private: keep it secret, sign with it) and OUT/<name>.pub (public:
    give it to whoever installs your bundles, for `xcore trust add`)."""
    from xcore.plugins.signing import SignatureError, key_id, new_key, parse_public_key

    pem, line = new_key(name)
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    private, public = out_dir / f"{stem}.key", out_dir / f"{stem}.pub"
    for path in (private, public):
        if path.exists():
            raise SignatureError(f"{path} exists already; choose another name or folder (a key is never replaced)")
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public.write_text(line + "\n", encoding="utf-8")
    echo(f"private key {private.absolute()} (keep it secret: whoever has it signs as {name!r})")
    echo(f"public key  {public.absolute()}")
    echo(f"key id      {key_id(parse_public_key(line)[1])}")


@click.group()
def trust() -> None:
    """The public keys whose signed bundles this host trusts."""


@trust.command("add")
@click.argument("public_key", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="The name to trust it under (default: the one in the file).")
@data_dir_option
def trust_add(public_key: Path, name: str | None, data_dir: str | None) -> None:
    """Trust the signer whose public key (a .pub file of `xcore keys new`) is PUBLIC_KEY."""
    from xcore.plugins.signing import SignatureError
    from xcore.plugins.store import signal_state_change, trust_store

    try:
        line = public_key.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise SignatureError(f"cannot read the public key {public_key} ({why})") from None
    runtime = migrated_runtime(data_dir)
    added = trust_store(runtime).add(line, name)
    signal_state_change(runtime)
    echo(f"trusted {added.name} ({added.key_id})")


@trust.command("remove")
@click.argument("name")
@data_dir_option
def trust_remove(name: str, data_dir: str | None) -> None:
    """Stop trusting the key NAME (or key id)."""
    from xcore.plugins.store import signal_state_change, trust_store

    runtime = migrated_runtime(data_dir)
    removed = trust_store(runtime).remove(name)
    signal_state_change(runtime)
    echo(f"no longer trusted: {removed.name} ({removed.key_id})")


@trust.command("list")
@data_dir_option
def trust_list(data_dir: str | None) -> None:
    """List the trusted keys."""
    from xcore.plugins.store import trust_store

    runtime = migrated_runtime(data_dir)
    found = trust_store(runtime).listed()
    if not found:
        echo("no trusted keys: `xcore trust add NAME.pub` trusts one")
        return
    echo_table(["NAME", "KEY ID"], [[k.name, k.key_id] for k in found])
