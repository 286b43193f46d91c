"""Agent deployments and the SSH host keys the controller trusts."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import delete, select

from controller.api import config, executor, json_object, principal, requires, session
from controller.deployments import create_deployment, validate_agent_request, validate_deployment_request
from controller.errors import NotFound
from controller.jobs import iso
from controller.models import HostKey

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


@bp.delete("/host-keys/<host>")
@requires("admin")
def forget_host_key(host: str) -> Any:
    """Stop trusting a host's keys (after the host was rebuilt); the next deployment pins or is given new ones."""
    with session() as s:
        removed = s.execute(delete(HostKey).where(HostKey.host == host)).rowcount
    if not removed:
        raise NotFound(f"no trusted key for {host}")
    return jsonify({"host": host, "deleted": removed})


@bp.get("/host-keys")
@requires("viewer")
def host_keys() -> Any:
    with session() as s:
        keys = s.scalars(select(HostKey).order_by(HostKey.host, HostKey.key_type))
        return jsonify(
            {
                "host_keys": [
                    {
                        "host": k.host,
                        "key_type": k.key_type,
                        "public_key": k.public_key,
                        "source": k.source,
                        "job_id": k.job_id,
                        "created_at": iso(k.created_at),
                    }
                    for k in keys
                ]
            }
        )
