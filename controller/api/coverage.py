"""Agent coverage: which hosts the scans see have the agent."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from controller.api.auth import requires
from controller.api.body import doc, query, reply
from controller.api.context import session
from controller.schemas.coverage import CoverageQuery, CoverageReport
from controller.services.coverage import coverage

bp = Blueprint("coverage", __name__)


@bp.get("/coverage")
@requires("viewer")
@query(CoverageQuery)
@doc(
    "get_coverage",
    "assets",
    "Agent coverage",
    {200: CoverageReport},
    errors={400: "network, unseen_days or limit is not valid."},
    description="Assets seen up without the agent, hosts with the agent no scan has seen for unseen_days days, and hosts "
    "whose latest deployment failed: counts and lists, from the controller's own records. Deploy to the uncovered ones with "
    'POST /api/deployments {"coverage": {"network": ...}, ...}.',
)
def get_coverage(query: CoverageQuery) -> Any:
    with session() as s:
        return reply(CoverageReport, coverage(s, query.network, query.unseen_days, query.limit))
