"""Imports: a scanner's output file, sent as is, becomes a scan record (controller.services.imports)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header

from controller.api.auth import requires
from controller.api.body import doc, query, reply
from controller.api.context import config, db, principal
from controller.errors import ApiError
from controller.schemas.imports import Imported, ImportQuery
from controller.services.imports import CHUNK, check_length, import_scan, too_large

bp = Blueprint("imports", __name__)
FILE = {"schema": {"type": "string", "format": "binary"}}
MEDIA_TYPES = ("application/octet-stream", "application/xml", "text/xml", "application/json", "text/csv", "text/plain")


@bp.post("/imports")
@requires("operator")
@query(ImportQuery)
@doc(
    "import_scan",
    "scans",
    "Import a scan's output file",
    {201: Imported},
    request=(
        "The scanner's output file as is: nmap XML (-oX), masscan JSON (-oJ) or its output's \"Discovered open port\" lines, "
        "or zmap CSV with its header.",
        dict.fromkeys(MEDIA_TYPES, FILE),
    ),
    errors={
        400: "Not the tool's output, a format that is not recognised, entity declarations or external entities, a file "
        "malformed beyond a truncation, or a host the store cannot take (no IP address, a port without a protocol of tcp, "
        "udp, sctp or ip, a state or a number 0-65535, a text longer than its column), named: nothing was stored.",
        413: "The file is larger than CLOUDX_IMPORT_MAX_BYTES (512 MiB by default): nothing was stored.",
        415: "Content-Type is none of application/octet-stream, application/xml, text/xml, application/json, text/csv, text/plain.",
    },
    description="Stores a scan run elsewhere as a scan record (job kind `import`, already ended; never run): its hosts and "
    "ports read with the scanner role's own parsers, the assets updated, the file kept (GET /api/scans/{job_id}/raw). "
    "The target comes from the file and need not lie inside the scope policy; unless nmap's arguments name exactly the "
    "addresses scanned (one address or network), the scan covers only the hosts it reported (`targets_exact: false` in "
    "its summary), and its target is the network where they are. The body is written to disk as it "
    "arrives, under its own limit (CLOUDX_IMPORT_MAX_BYTES), not the JSON bodies' one. A truncated file is stored with "
    "`truncated: true`.",
)
def import_file(query: ImportQuery) -> Any:
    cfg = config()
    if request.mimetype and request.mimetype not in MEDIA_TYPES:
        types = ", ".join(MEDIA_TYPES[1:])
        raise ApiError(f"send the file with Content-Type: application/octet-stream (or {types})", field="body", status=415)
    check_length(cfg, request.content_length)
    request.max_content_length = cfg.IMPORT_MAX_BYTES  # this route's own limit, instead of the JSON bodies' one
    imported = import_scan(db(), cfg, principal().name, _chunks(), query.filename or _disposition_name(), query.tool)
    return reply(Imported, imported, 201)


def _chunks() -> Iterator[bytes]:
    """The body as it arrives, never whole in memory."""
    stream = request.stream
    try:
        while chunk := stream.read(CHUNK):
            yield chunk
    except RequestEntityTooLarge:
        raise too_large(config()) from None


def _disposition_name() -> str | None:
    _, params = parse_options_header(request.headers.get("Content-Disposition", ""))
    return params.get("filename")
