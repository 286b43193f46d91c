"""Agent coverage: the assets the scans see, against the hosts the deployments reached."""

from __future__ import annotations

from pydantic import Field

from controller.schemas.base import Query, Response
from controller.schemas.types import Cidr, MaybeTimestamp, PageSize, Timestamp, query_int


class CoverageQuery(Query):
    messages = {
        "unseen_days": "unseen_days must be an integer from 0 to 3650",
    }

    network: Cidr | None = Field(default=None, description="Only hosts inside this network.")
    unseen_days: query_int(0, 3650) = Field(  # type: ignore[valid-type]
        default=7, description="Hosts with the agent that no scan has seen up for this many days are listed as unseen."
    )
    limit: PageSize = Field(default=100, description="The longest each list gets (the counts are complete).")


class CoverageCounts(Response):
    assets: int = Field(description="Assets seen up.")
    with_agent: int = Field(description="Hosts whose latest successful deployment installed the agent.")
    covered: int
    uncovered: int
    unseen: int
    failed: int


class Uncovered(Response):
    address: str
    hostnames: list[str]
    last_seen: Timestamp
    removed: MaybeTimestamp = Field(description="When the agent was removed, if it ever was.")


class Unseen(Response):
    address: str
    installed: Timestamp
    last_seen: MaybeTimestamp = Field(description="When a scan last saw it up (null: never).")


class FailedDeployment(Response):
    address: str
    at: MaybeTimestamp
    job_id: str
    error: str | None


class CoverageReport(Response):
    network: str | None
    unseen_days: int
    counts: CoverageCounts
    uncovered: list[Uncovered] = Field(description="Assets seen up without the agent.")
    unseen: list[Unseen] = Field(description="Hosts with the agent that no scan has seen up for unseen_days days.")
    failed: list[FailedDeployment] = Field(description="Hosts whose latest deployment failed or did not reach them.")
