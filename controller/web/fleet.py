"""The fleet: the assets the scans have seen, agent coverage, and a deployment of the agent to the uncovered hosts."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request, url_for

from controller.api.auth import requires
from controller.api.context import config, executor, principal, session
from controller.errors import ApiError
from controller.schemas.assets import AssetQuery
from controller.schemas.coverage import CoverageQuery
from controller.schemas.deployments import DeploymentRequest
from controller.schemas.types import OS_TYPES
from controller.services.assets import assets_page
from controller.services.coverage import coverage
from controller.services.credentials import credential_view, list_credentials
from controller.services.deployments import create_deployment
from controller.web.forms import form_data, parsed_query, refused
from controller.web.gate import can
from controller.web.pages import done, page

bp = Blueprint("fleet", __name__)
# The deploy form: the coverage's network, then the fields of POST /api/deployments a stored credential goes with.
DEPLOY_FIELDS = ("network", "os_type", "credential", "username", "manager_ip", "group", "become_password", "enrollment_password")
PASTED = ("become_password", "enrollment_password")  # never sent back into the form
FILTERS = ("network", "port", "service", "seen_since", "unseen_days", "limit")


def _fleet(errors: dict[str, str], given: dict[str, str], status: int = 200) -> Any:
    assets_query, assets_error = parsed_query(AssetQuery)
    coverage_query, coverage_error = parsed_query(CoverageQuery, ignored=("limit",))
    filter_errors = [message for message in (assets_error, coverage_error) if message]
    q = assets_query  # its limit is the assets' page size: the coverage lists keep theirs
    with session() as s:
        assets, next_cursor = assets_page(s, q.limit, q.cursor, q.network, q.port, q.service, q.since)
        report = coverage(s, coverage_query.network, coverage_query.unseen_days, coverage_query.limit)
        # The credentials GET /api/credentials lists (an operator's): names and kinds, never their secrets.
        credentials = [credential_view(c) for c in list_credentials(s)] if can("operator") else []
    filters = {name: request.args.get(name, "").strip() for name in FILTERS}
    return page(
        "fleet.html",
        "fleet",
        status,
        assets=assets,
        next_cursor=next_cursor,
        filters=filters,
        filter_error="; ".join(dict.fromkeys(filter_errors)) or None,  # a bad network: one message, not each model's
        report=report,
        credentials=credentials,
        os_types=OS_TYPES,
        errors=errors,
        given=given,
    )


@bp.get("/fleet")
@requires("viewer")
def index() -> Any:
    return _fleet({}, {"network": request.args.get("network", "").strip(), "os_type": "linux"})


def _deploy_body(given: dict[str, str]) -> dict[str, Any]:
    """The form as POST /api/deployments takes it: the network as coverage, the empty fields left out."""
    fields = {k: v for k, v in given.items() if v != "" and k != "network"}
    return {"coverage": {"network": given["network"]}, **fields}


@bp.post("/fleet/deploy")
@requires("operator")
def deploy() -> Any:
    """Deploy the agent to the assets of a network seen up without it: the same request and path as POST /api/deployments."""
    given = form_data(DEPLOY_FIELDS)
    run = executor()
    try:
        body = DeploymentRequest.parse(_deploy_body(given), config=config())
        with session() as s:
            job, secrets = create_deployment(s, config(), principal(), body, run.holder_id)
            job_id = job.id
    except ApiError as exc:
        errors = refused(exc, (*DEPLOY_FIELDS, "coverage"))
        if "coverage" in errors:  # the coverage's own refusals (its network, nothing uncovered) are about the network field
            errors["network"] = errors.pop("coverage")
        return _fleet(errors, {k: v for k, v in given.items() if k not in PASTED}, exc.status)
    run.submit(job_id, secrets)
    g.audit_job_id = job_id
    return done(url_for("web.jobs.show", job_id=job_id), "deploy-submitted")
