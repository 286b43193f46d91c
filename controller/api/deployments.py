"""Agent deployments and the SSH host keys the controller trusts."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from controller.api.auth import requires
from controller.api.body import body, doc, reply
from controller.api.context import config, executor, principal, session
from controller.errors import NotFound
from controller.schemas.deployments import AgentRequest, DeploymentRequest, DeployRequest, HostKeyDeleted, HostKeys, TrustHostKeys
from controller.schemas.scans import Submitted
from controller.services import hostkeys
from controller.services.deployments import create_deployment

bp = Blueprint("deployments", __name__)
QUEUED = {429: None, 503: "See Unavailable; also when the job could not be stored."}


def _submit(request: DeployRequest) -> Any:
    run = executor()
    with session() as s:
        job, secrets = create_deployment(s, config(), principal(), request, run.holder_id)
        job_id, status = job.id, job.status
    run.submit(job_id, secrets)
    return reply(Submitted, {"job_id": job_id, "status": status}, 202)


@bp.post("/deploy/agent")
@requires("operator")
@body(AgentRequest)
@doc(
    "deploy_agent",
    "deployments",
    "Deploy the agent to one host",
    {202: Submitted},
    errors={**QUEUED, 400: "The input is not valid, or the stored credential does not exist or cannot be opened."},
    description="The original single-target deployment. The target must lie inside the scope policy.",
)
def deploy_agent(body: AgentRequest) -> Any:
    return _submit(body)


@bp.post("/deployments")
@requires("operator")
@body(DeploymentRequest)
@doc(
    "create_deployment",
    "deployments",
    "Deploy the agent to (or remove it from) hosts or an inventory pattern",
    {202: Submitted},
    errors={
        **QUEUED,
        400: "The input is not valid, no inventory host matches limit, or the stored credential does not exist or cannot be opened.",
        409: "coverage: no asset of the network is without the agent, or more than 1000 are.",
    },
    description="One of hosts (addresses or hostnames), limit (inventory hosts) or coverage (the assets of a network seen up without "
    "the agent, GET /api/coverage). Every host reached must lie inside the scope policy.",
)
def deploy_many(body: DeployRequest) -> Any:
    return _submit(body)


@bp.put("/host-keys")
@requires("admin")
@body(TrustHostKeys)
@doc(
    "trust_host_keys",
    "deployments",
    "Trust SSH host keys (an admin's word)",
    {200: HostKeys},
    description="A key given here replaces a key of the same type for that host. Stored credentials are used only "
    "on hosts whose key an admin added, CLOUDX_KNOWN_HOSTS_FILE lists, or an earlier successful deployment "
    "without that credential pinned.",
)
def trust_host_keys(body: TrustHostKeys) -> Any:
    with session() as s:
        return reply(HostKeys, {"host_keys": hostkeys.add_admin_keys(s, body, principal().name)})


@bp.delete("/host-keys/<host>")
@requires("admin")
@doc(
    "forget_host_key",
    "deployments",
    "Stop trusting a host's SSH keys",
    {200: HostKeyDeleted},
    errors={404: "No trusted key for this host."},
    description="After a host was rebuilt: the next deployment pins its new keys (or is given them).",
)
def forget_host_key(host: str) -> Any:
    with session() as s:
        removed = hostkeys.forget_host(s, host)
    if not removed:
        raise NotFound(f"no trusted key for {host}")
    return reply(HostKeyDeleted, {"host": host, "deleted": removed})


@bp.get("/host-keys")
@requires("viewer")
@doc("list_host_keys", "deployments", "The SSH host keys the controller trusts", {200: HostKeys})
def host_keys() -> Any:
    with session() as s:
        return reply(HostKeys, {"host_keys": hostkeys.list_keys(s)})
