"""Admin commands: tokens, policy, stored credentials, trusted host keys, the audit log."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.cli.context import Context, audited_change, cli, pass_ctx, record_audit, refused
from controller.errors import ApiError
from controller.principal import ROLES
from controller.services.auth import cli_principal
from controller.store.models import AuditEntry


@cli.group()
def token() -> None:
    """API tokens: create (shown once), list, revoke."""


@token.command("create")
@click.option("--name", required=True, help="Who or what uses it, e.g. dashboard or ci-nightly.")
@click.option("--role", type=click.Choice(ROLES), required=True, help="viewer reads; operator scans and deploys; admin also manages.")
@click.option("--scope", "scope", multiple=True, help="Narrow this token to a CIDR or hostname inside the policy scope (repeatable).")
@click.option("--allow-large-targets", is_flag=True, help="May target networks larger than the policy's size limit.")
@click.option("--expires-in", help="Lifetime, e.g. 30d, 12h, 90m (default: no expiry).")
@click.option("--max-queued", type=int, help="Jobs it may have waiting (default: the policy's token_max_queued).")
@click.option("--max-running", type=int, help="Jobs it may have running at once (default: the policy's token_max_running).")
@pass_ctx
def token_create(
    ctx: Context,
    name: str,
    role: str,
    scope: tuple[str, ...],
    allow_large_targets: bool,
    expires_in: str | None,
    max_queued: int | None,
    max_running: int | None,
) -> None:
    """Create a token and print it once: it is stored only as a hash."""
    from controller.services.auth import create_token

    try:
        with ctx.db.session() as session:
            created, text = create_token(
                session,
                name,
                role,
                cli_principal().name,
                scope=list(scope) or None,
                allow_large_targets=allow_large_targets,
                expires_in=expires_in,
                max_queued=max_queued,
                max_running=max_running,
            )
    except ApiError as exc:
        raise refused(ctx, "token create", exc) from None
    click.echo(f"token {created.name} ({created.role}) created; it is shown only now:", err=True)
    click.echo(text)
    record_audit(ctx, "token create", 201, f"token {created.name} ({created.role})")


@token.command("list")
@pass_ctx
def token_list(ctx: Context) -> None:
    """List tokens (never their text)."""
    from controller.services.auth import list_tokens, token_view

    with ctx.db.session() as session:
        rows = [token_view(t) for t in list_tokens(session)]
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else f"last used {row['last_used_at'] or 'never'}"
        state += f", expires {row['expires_at']}" if row["expires_at"] and not row["revoked_at"] else ""
        scope = ",".join(row["scope"]) if row["scope"] else "policy scope"
        click.echo(f"{row['name']:<24} {row['role']:<9} {row['id']}  {scope}  {state}")


@token.command("revoke")
@click.argument("name")
@pass_ctx
def token_revoke(ctx: Context, name: str) -> None:
    """Revoke the token NAME at once: its queued jobs are canceled, its running jobs stopped."""
    from controller.services.auth import revoke_token

    _, stopped = audited_change(ctx, "token revoke", lambda session: revoke_token(session, name), 200, f"token {name}")
    click.echo(f"token {name} revoked{f'; {len(stopped)} of its jobs stopped' if stopped else ''}", err=True)


@cli.group()
def policy() -> None:
    """The scope policy: what may be scanned and deployed to."""


@policy.command("show")
@pass_ctx
def policy_show(ctx: Context) -> None:
    from controller.services.policy import get_policy, policy_view

    with ctx.db.session() as session:
        click.echo(json.dumps(policy_view(get_policy(session)), indent=2))


@policy.command("set")
@click.option("--scope", "scope", multiple=True, help="A CIDR, address or hostname (repeatable); replaces the scope.")
@click.option("--clear-scope", is_flag=True, help="Empty the scope: refuse every scan and deployment.")
@click.option("--max-prefix-v4", type=int, help="IPv4 networks larger than this prefix need a large-targets token.")
@click.option("--max-prefix-v6", type=int, help="The same for IPv6.")
@click.option("--windows/--no-windows", default=None, help="Allow or forbid Windows deployments.")
@click.option("--token-max-queued", type=int, help="Jobs a non-admin token may have waiting.")
@click.option("--token-max-running", type=int, help="Jobs a non-admin token may have running at once.")
@click.option("--max-scan-timeout", "scan_timeouts", multiple=True, help="ROLE=SECONDS, the largest scan timeout of a role (repeatable).")
@pass_ctx
def policy_set(
    ctx: Context,
    scope: tuple[str, ...],
    clear_scope: bool,
    max_prefix_v4: int | None,
    max_prefix_v6: int | None,
    windows: bool | None,
    token_max_queued: int | None,
    token_max_running: int | None,
    scan_timeouts: tuple[str, ...],
) -> None:
    """Change the policy; options not given keep their values."""
    from controller.services.policy import get_policy, policy_view, update_policy

    changes: dict[str, Any] = {}
    if scope or clear_scope:
        changes["scope"] = [] if clear_scope else list(scope)
    if scan_timeouts:
        with ctx.db.session() as session:
            limits = dict(get_policy(session).max_scan_timeout or {})
        for item in scan_timeouts:
            role, _, seconds = item.partition("=")
            if not seconds.isdigit():
                raise click.ClickException(f"--max-scan-timeout takes ROLE=SECONDS, not {item!r}")
            limits[role] = int(seconds)
        changes["max_scan_timeout"] = limits
    optional = {
        "max_prefix_v4": max_prefix_v4,
        "max_prefix_v6": max_prefix_v6,
        "windows_deployments": windows,
        "token_max_queued": token_max_queued,
        "token_max_running": token_max_running,
    }
    changes.update({k: v for k, v in optional.items() if v is not None})
    view = audited_change(
        ctx, "policy set", lambda session: policy_view(update_policy(session, changes, cli_principal().name)), 200, json.dumps(changes)
    )
    click.echo(json.dumps(view, indent=2))


@cli.group()
def credential() -> None:
    """Stored credentials (encrypted with CLOUDX_CREDENTIALS_KEY)."""


@credential.command("keygen")
def credential_keygen() -> None:
    """Print a new key for CLOUDX_CREDENTIALS_KEY."""
    from controller.store.sealing import keygen

    click.echo(keygen())


@credential.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["ssh_key", "password"]), required=True)
@click.option("--username", help="The login user deployments with this credential use by default.")
@click.option("--scope", "scope", multiple=True, help="Only for hosts in this CIDR or hostname (repeatable).")
@click.option("--port", "ports", type=int, multiple=True, help="Only on this port (repeatable; default 22 for SSH, 5986 for WinRM).")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), help="Read the key or password from this file.")
@pass_ctx
def credential_add(
    ctx: Context, name: str, kind: str, username: str | None, scope: tuple[str, ...], ports: tuple[int, ...], secret_file: str | None
) -> None:
    """Store a credential; without --secret-file the password is prompted for."""
    from pathlib import Path

    from controller.services.credentials import store_credential

    if secret_file:
        secret = Path(secret_file).read_text()
        secret = secret if kind == "ssh_key" else secret.rstrip("\n")
    else:
        secret = click.prompt("Secret", hide_input=True)
    body = {
        "name": name,
        "kind": kind,
        "secret": secret,
        **({"username": username} if username else {}),
        **({"scope": list(scope)} if scope else {}),
        **({"ports": list(ports)} if ports else {}),
    }
    who = cli_principal().name
    detail = f"credential {name} ({kind})"
    audited_change(ctx, "credential add", lambda session: store_credential(session, ctx.config, body, who), 201, detail)
    click.echo(f"credential {name} stored", err=True)


@credential.command("list")
@pass_ctx
def credential_list(ctx: Context) -> None:
    from controller.services.credentials import credential_view, list_credentials

    with ctx.db.session() as session:
        for row in (credential_view(c) for c in list_credentials(session)):
            click.echo(f"{row['name']:<24} {row['kind']:<8} {row['username'] or '-':<16} {row['created_by']}")


@credential.command("delete")
@click.argument("name")
@pass_ctx
def credential_delete(ctx: Context, name: str) -> None:
    from controller.services.credentials import delete_credential

    audited_change(ctx, "credential delete", lambda session: delete_credential(session, name), 200, f"credential {name}")
    click.echo(f"credential {name} deleted", err=True)


@cli.command()
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@pass_ctx
def audit(ctx: Context, limit: int) -> None:
    """The newest entries of the audit log."""
    from controller.store.jsontext import iso

    with ctx.db.session() as session:
        rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))
    for e in rows:
        line = f"{iso(e.at)} {e.actor:<20} {e.method:<6} {e.path:<32} {e.status} {e.outcome} {e.job_id or ''} {e.detail or ''}"
        click.echo(line.rstrip())


@cli.group("host-key")
def host_key() -> None:
    """SSH host keys the controller trusts for deployments."""


@host_key.command("add")
@click.argument("known_hosts_file", type=click.File("r"))
@pass_ctx
def host_key_add(ctx: Context, known_hosts_file: Any) -> None:
    """Trust the keys of KNOWN_HOSTS_FILE ('host keytype key' lines; - for standard input), as an admin."""
    from controller.services.hostkeys import add_admin_keys

    text = known_hosts_file.read()
    who = cli_principal().name
    keys = audited_change(ctx, "host-key add", lambda session: [k.host for k in add_admin_keys(session, text, who)], 200, "host keys")
    click.echo(f"trusted {len(keys)} key(s) of {', '.join(sorted(set(keys)))}", err=True)


@host_key.command("list")
@pass_ctx
def host_key_list(ctx: Context) -> None:
    from controller.services.hostkeys import list_keys

    with ctx.db.session() as session:
        for key in list_keys(session):
            via = f" with {key.credential}" if key.credential else ""
            click.echo(f"{key.host:<32} {key.key_type:<20} {key.source}{via} {key.job_id or key.added_by or ''}")


@host_key.command("delete")
@click.argument("host")
@pass_ctx
def host_key_delete(ctx: Context, host: str) -> None:
    """Stop trusting HOST's keys (a rebuilt host)."""
    from controller.errors import NotFound
    from controller.services.hostkeys import forget_host

    def forget(session: Session) -> int:
        removed = forget_host(session, host)
        if not removed:
            raise NotFound(f"no trusted key for {host}")
        return removed

    audited_change(ctx, "host-key delete", forget, 200, f"host keys of {host}")
    click.echo(f"keys of {host} no longer trusted", err=True)
