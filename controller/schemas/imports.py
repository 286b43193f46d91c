"""Imports of scans run elsewhere: the query string of POST /api/imports and its response (controller.services.imports)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from controller.schemas.base import Query, Response
from controller.schemas.jobs import JobStatus

ImportTool = Literal["nmap", "masscan", "zmap"]


class ImportQuery(Query):
    tool: ImportTool | None = Field(
        default=None,
        description="The tool that wrote the file; without it the format is detected (nmap XML, masscan JSON or output, zmap CSV). "
        "A file that is not this tool's output is refused.",
    )
    filename: str | None = Field(
        default=None,
        max_length=1024,
        description="The file's name, kept as the scan's source (its last path component, plain characters only); "
        "else the filename of Content-Disposition.",
    )
    messages: ClassVar[dict[str, str]] = {
        "tool": "tool must be one of: nmap, masscan, zmap",
        "filename": "filename must be a string of at most 1024 characters",
    }


class Imported(Response):
    """The imported scan: a scan record like any other (GET /api/scans/{job_id})."""

    job_id: str
    tool: str
    scan_type: str
    target: str
    ports: str | None
    source: str = Field(description="The imported file's name.")
    status: JobStatus = Field(description="successful, or failed when the file says the scan failed.")
    hosts: int = Field(ge=0, description="Hosts stored.")
    truncated: bool = Field(description="The file stopped early: the hosts complete in it were stored.")
