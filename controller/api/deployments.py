"""Agent deployments and the SSH host keys the controller trusts."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from controller.api import config, executor, json_object, principal, requires, session
from controller.errors import NotFound, ValidationError
from controller.queue.jobs import iso
from controller.services import hostkeys
from controller.services.deployments import create_deployment, validate_agent_request, validate_deployment_request
from controller.store.models import HostKey

bp = Blueprint("deployments", __name__)


def _submit(request: dict[str, Any], secrets: dict[str, Any]) -> Any:
    run = executor()
    with session() as s:
        job = create_deployment(s, config(), principal(), request, secrets, run.holder_id)
        job_id, status = job.id, job.status
    run.submit(job_id, secrets)
    return jsonify({"job_id": job_id, "status": status}), 202


@bp.post("/deploy/agent")
@requires("operator")
def deploy_agent() -> Any:
    """The original single-target deployment: target, os_type, username, password or ssh_key, agent_name, group, manager_ip."""
    return _submit(*validate_agent_request(json_object()))


@bp.post("/deployments")
@requires("operator")
def deploy_many() -> Any:
    """Deploy to (or remove from) a list of hosts, or an inventory group or pattern."""
    return _submit(*validate_deployment_request(json_object()))


@bp.put("/host-keys")
@requires("admin")
def trust_host_keys() -> Any:
    """Trust SSH host keys, as an admin: `{"known_hosts": "host keytype key\\n..."}` (the only keys that, with
    CLOUDX_KNOWN_HOSTS_FILE and pins of earlier logins, let a stored credential be used on a host)."""
    body = json_object()
    unknown = set(body) - {"known_hosts"}
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    with session() as s:
        return jsonify({"host_keys": [host_key_view(k) for k in hostkeys.add_admin_keys(s, body.get("known_hosts"), principal().name)]})


@bp.delete("/host-keys/<host>")
@requires("admin")
def forget_host_key(host: str) -> Any:
    """Stop trusting a host's keys (after the host was rebuilt); the next deployment pins or is given new ones."""
    with session() as s:
        removed = hostkeys.forget_host(s, host)
    if not removed:
        raise NotFound(f"no trusted key for {host}")
    return jsonify({"host": host, "deleted": removed})


@bp.get("/host-keys")
@requires("viewer")
def host_keys() -> Any:
    with session() as s:
        return jsonify({"host_keys": [host_key_view(k) for k in hostkeys.list_keys(s)]})


def host_key_view(key: HostKey) -> dict[str, Any]:
    return {
        "host": key.host,
        "key_type": key.key_type,
        "public_key": key.public_key,
        "source": key.source,
        "job_id": key.job_id,
        "credential": key.credential,
        "added_by": key.added_by,
        "created_at": iso(key.created_at),
    }
