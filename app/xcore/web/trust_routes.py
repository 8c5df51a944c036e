"""The trust store's admin API: the public keys whose signed bundles this host trusts (`xcore.plugins.signing`).

Admins read it (`plugins.read`); adding or removing a key is a superadmin's (`plugins.manage`), since a trusted
key decides what the signing policy lets run. Every change is audited, the catalogues are read again (one the
key signs can be used now, or no longer), and the plugins are looked at again at once (a bundle the policy
refused may load now, or one it let run may be refused), by every worker.

`GET /api/admin/plugin-policy` shows that policy (`manager.plugins.policy`) and the number of trusted keys, so the
UI can warn that unsigned bundles run here (the default). It is not under /api/admin/trust/, where a key could be
named "policy", nor under /api/admin/plugins/, where a plugin could.
"""

from typing import Annotated, Any

import anyio.to_thread
from litestar import Request, delete, get, post
from litestar.params import JSONBody, Parameter
from msgspec import Meta, Struct

from xcore.auth import audit
from xcore.plugins.signing import SignatureError
from xcore.plugins.store import signal_state_change, trust_store
from xcore.runtime import Runtime
from xcore.web.context import actor, client_of
from xcore.web.plugin_routes import manager_of

TAGS = ["plugins"]


class TrustedKeyOut(Struct):
    name: str
    key_id: str
    public_key: str  # the line of its .pub file


class PolicyOut(Struct):
    policy: str  # manager.plugins.policy: unsigned, sandbox-unsigned or signed-only
    unsigned_runs: bool  # a bundle no trusted key signed runs here (in the server's process, unless sandboxed)
    trusted_keys: int  # how many keys the trust store holds
    setting: str  # where the policy is set
    advice: str  # what the policy means here, and how to change it


POLICY_SETTING = "manager.plugins.policy"
POLICY_ADVICE = {
    "unsigned": (
        "Any bundle runs here, signed or not: a bundle no trusted key signed is only flagged. Set "
        f"{POLICY_SETTING} to sandbox-unsigned (such bundles run sandboxed only) or signed-only (only bundles a "
        "trusted key signed run) in the settings file, or with XCORE_MANAGER__PLUGINS__POLICY, then restart."
    ),
    "sandbox-unsigned": "A bundle no trusted key signed runs sandboxed only, in a confined process of its own.",
    "signed-only": "Only bundles a trusted key signed run here; any other bundle is refused.",
}


class TrustIn(Struct, forbid_unknown_fields=True):
    public_key: Annotated[
        str, Meta(min_length=1, max_length=1000, description="The .pub file's line: xcore-ed25519 <key> <name>.")
    ]
    name: (
        Annotated[
            str, Meta(min_length=1, max_length=64, description="The name to trust it under; default: the line's.")
        ]
        | None
    ) = None


def _out(key: Any) -> TrustedKeyOut:
    shown = key.as_json()
    return TrustedKeyOut(shown["name"], shown["key_id"], shown["public_key"])


@get("/api/admin/trust", tags=TAGS, summary="List the trusted signing keys", sync_to_thread=True)
def list_trusted(request: Request[Any, Any, Any]) -> list[TrustedKeyOut]:
    """The public keys whose signatures this host trusts, each with its name and key id."""
    actor(request, "plugins.read")
    runtime: Runtime = request.app.state.runtime
    return [_out(k) for k in trust_store(runtime).listed()]


@get("/api/admin/plugin-policy", tags=TAGS, summary="Show the signing policy", sync_to_thread=True)
def show_policy(request: Request[Any, Any, Any]) -> PolicyOut:
    """show_policy says which bundles may run here by their signature (`manager.plugins.policy`), whether one no
    trusted key signed runs (`unsigned_runs`: the default policy, `unsigned`, which the UI warns of), and how many
    keys are trusted. A trust store that cannot be read counts no key."""
    actor(request, "plugins.read")
    runtime: Runtime = request.app.state.runtime
    policy = runtime.config.manager.plugins.policy
    try:
        count = len(trust_store(runtime).listed())
    except SignatureError:
        count = 0
    return PolicyOut(policy, policy == "unsigned", count, POLICY_SETTING, POLICY_ADVICE[policy])


@post("/api/admin/trust", tags=TAGS, summary="Trust a signing key", status_code=201)
async def add_trusted(request: Request[Any, Any, Any], data: JSONBody[TrustIn]) -> TrustedKeyOut:
    """Trust the signer of this public key (the line of their `.pub` file); a 422 says what is wrong with it."""
    who = actor(request, "plugins.manage")
    runtime: Runtime = request.app.state.runtime
    key = await anyio.to_thread.run_sync(trust_store(runtime).add, data.public_key, data.name)
    await _changed(request, who.username, "trust.add", key)
    return _out(key)


@delete("/api/admin/trust/{name:str}", tags=TAGS, summary="Stop trusting a signing key", status_code=204)
async def remove_trusted(
    request: Request[Any, Any, Any], name: Annotated[str, Parameter(max_length=64, description="Its name or key id.")]
) -> None:
    """Stop trusting the key of this name (or key id); a 422 when no trusted key has it."""
    who = actor(request, "plugins.manage")
    runtime: Runtime = request.app.state.runtime
    key = await anyio.to_thread.run_sync(trust_store(runtime).remove, name)
    await _changed(request, who.username, "trust.remove", key)


async def _changed(request: Request[Any, Any, Any], username: str, action: str, key: Any) -> None:
    runtime: Runtime = request.app.state.runtime

    def write() -> None:
        with runtime.auth.transaction() as session:
            audit.record(session, action, actor=username, target=key.name, ip=client_of(request).ip, key_id=key.key_id)
        signal_state_change(runtime)

    await anyio.to_thread.run_sync(write)
    if request.app.state.plugins is not None:
        manager = manager_of(request)
        if manager.catalogues.sources:  # a catalogue this key signs can be used, or no longer: read them again
            await manager.refresh_catalogues()
        await manager.reconcile()


def trust_handlers() -> list[Any]:
    return [list_trusted, add_trusted, remove_trusted, show_policy]
