"""Exports: a scan's stored results as a download (JSON, JSON lines or CSV), streamed."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from controller.api.auth import requires
from controller.api.body import doc, query
from controller.api.context import db, session
from controller.schemas.export import ExportQuery
from controller.services.export import CSV_COLUMNS, export_chunks, open_export

bp = Blueprint("exports", __name__)

HOSTS_REF = {"$ref": "#/components/schemas/ScanHost"}
MEDIA = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"scan": {"$ref": "#/components/schemas/Scan"}, "hosts": {"type": "array", "items": HOSTS_REF}},
            "required": ["scan", "hosts"],
        }
    },
    "application/x-ndjson": {"schema": {"type": "string", "description": "One ScanHost JSON object per line."}},
    "text/csv": {"schema": {"type": "string", "description": f"A header row ({', '.join(CSV_COLUMNS)}), then one row per port."}},
}


@bp.get("/scans/<job_id>/export")
@requires("viewer")
@query(ExportQuery)
@doc(
    "export_scan",
    "scans",
    "Export a scan's results",
    {200: ("The scan's hosts and ports as an attachment (scan-<job_id>.json, .jsonl or .csv), streamed.", MEDIA)},
    errors={400: "format is not json, jsonl or csv.", 404: "No scan with this job_id."},
    description="Streams the stored hosts and ports of the scan. json: one document {scan, hosts} (the scan as GET "
    "/api/scans/<job_id> shows it, without results); jsonl: one host with its ports per line; csv (UTF-8, RFC 4180, CRLF): "
    "one row per port, a host without ports on one row with empty port columns, hostnames joined with a space, and a "
    "cell that a spreadsheet would run as a formula (first character =, +, -, @, tab or carriage return) prefixed with '. "
    "A scan still queued or running exports what is stored: no hosts until its results are stored when it ends.",
)
def export_scan(job_id: str, query: ExportQuery) -> Any:
    with session() as s:
        export = open_export(s, job_id, query.format)
    # The body reads its batches in sessions of its own: nothing of this request's context is needed meanwhile.
    response = Response(export_chunks(db(), export), content_type=export.content_type)
    response.headers.set("Content-Disposition", "attachment", filename=export.filename)
    return response
