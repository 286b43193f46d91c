"""The OpenAPI 3.1 document, generated from the routes and the models, served at /api/openapi.json.

Each view declares its role (@requires), its request models (@body, @query) and its operation (@doc: id, tag,
summary, response models, the errors it adds); the JSON Schemas are the models' own (Pydantic's
model_json_schema). Values checked by the scanner role's rules carry a `format` naming the rule (cloudx-target,
cloudx-host, cloudx-ports, ...) instead of a copy of it as a regular expression.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from controller.api.auth import PUBLIC, requires, role_of
from controller.api.body import Doc, doc
from controller.api.context import config
from controller.config import Config
from controller.schemas.base import Request, Response
from controller.schemas.system import Error

bp = Blueprint("openapi", __name__)
Schema = dict[str, Any]

ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The input is not valid: `error` says why, `field` names the offending field (or `body`)."),
    401: ("Unauthorized", "No token, an Authorization header that is not `Bearer <token>`, or a token that is not valid or was revoked."),
    403: (
        "Forbidden",
        "The token's role is below the role this operation needs (roles rank viewer < operator < admin); for scans, "
        "deployments and remote monitoring also a target outside the scope policy, or no policy at all.",
    ),
    404: ("NotFound", "Nothing with that id or name."),
    409: ("Conflict", "The request conflicts with the current state."),
    413: ("PayloadTooLarge", "The request body is larger than the limit (CLOUDX_MAX_CONTENT_LENGTH)."),
    415: ("UnsupportedMediaType", "The request body's Content-Type is not one this operation takes."),
    429: ("TooManyRequests", "Too many jobs are already waiting (CLOUDX_MAX_QUEUED_JOBS); retry after Retry-After seconds."),
    503: (
        "Unavailable",
        "The database is unavailable (locked past its busy timeout; Retry-After is sent) or the disk is full; nothing was changed.",
    ),
}
PATH_PARAMS = {
    "address": "An IPv4 or IPv6 address.",
    "job_id": "The job's id (a scan's job_id).",
    "host": "The host as known_hosts names it: an address, or [address]:port.",
    "name": "The name of the token or credential.",
    "os_dir": "The operating system.",
    "schedule_id": "The schedule's id or its name.",
    "webhook_id": "The webhook's id.",
}
# A path segment: Flask's default converter takes no "/", and clients resolve "." and "..".
SEGMENT = r"^(?!\.\.?$)[^/]+$"
DESCRIPTION = """Runs Ansible playbooks (network scans, agent deployments) as jobs and serves jobs, events and scan results.

**Authentication.** Send `Authorization: Bearer <token>` (tokens come from `cloudx token create` or POST /api/tokens).
Roles rank viewer < operator < admin; each operation names the least role it needs (`x-required-role`). Health, ping and
this document are public.

**Errors.** Every error body is `{"error": string, "field"?: string}`; `field` names the offending input. A 500 adds
`request_id`. 401 comes with WWW-Authenticate, 429 (job queue full) and 503 (database unavailable) with Retry-After.

**Requests.** Bodies are JSON objects (Content-Type: application/json); unknown fields are refused (POST /api/imports
takes a scanner's output file as is). Every response carries X-Request-ID (the server's id; yours comes back as
X-Client-Request-ID). Pages are newest first for scans, jobs and the audit log, and oldest first for events; pass the
next_* value of a page to get the following one (null: no more). Values in a `cloudx-*` format follow the scanner
role's rules (module_utils/cloudx_scanner.py)."""
TAGS = {
    "system": "Health, heartbeat, monitoring and this document.",
    "scans": "Network scans (nmap, masscan, zmap) and their results, imported ones too.",
    "assets": "The hosts the stored scans have seen, their ports now and how they changed.",
    "jobs": "Every playbook run, its events and per-host counts.",
    "deployments": "Agent deployments and trusted SSH host keys.",
    "schedules": "Scans and deployments started at times a cron expression or an interval gives.",
    "webhooks": "HTTP endpoints told of job and scan events (signed, retried), and every delivery attempt.",
    "scripts": "Standalone agent scripts for hosts installed by hand.",
    "admin": "Tokens, the scope policy, stored credentials and the audit log.",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _models(docs: list[Doc]) -> list[type[BaseModel]]:
    """Every model the operations name (request variants included), once each."""
    found: dict[str, type[BaseModel]] = {"Error": Error}
    for d in docs:
        candidates = [*(getattr(d.body, "variants", None) or ([d.body] if d.body else []))]
        for value in d.responses.values():
            candidates += value if isinstance(value, list) else [value]
        for model in candidates:
            if isinstance(model, type) and issubclass(model, BaseModel):
                found.setdefault(model.__name__, model)
    return list(found.values())


def _schemas(models: list[type[BaseModel]], cfg: Config) -> dict[str, Schema]:
    modes = [(m, "validation" if issubclass(m, Request) else "serialization") for m in models]
    _, top = models_json_schema(modes, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schemas: dict[str, Schema] = top.get("$defs", {})
    for name, model in ((m.__name__, m) for m in models):
        if issubclass(model, Response) and model.sends_every_field and name in schemas:
            # A view sends every field, null ones included.
            schemas[name]["required"] = list(schemas[name].get("properties", {}))
    for name in ("ScanSchedule", "DeploymentSchedule", "SchedulePatch"):  # this configuration's shortest interval
        every = schemas.get(name, {}).get("properties", {}).get("every_seconds", {})
        for branch in every.get("anyOf", []):
            if branch.get("type") == "integer":
                branch["minimum"] = cfg.SCHEDULE_MIN_INTERVAL
    timeout = schemas.get("ScanRequest", {}).get("properties", {}).get("timeout")
    if timeout is not None:  # limits of this configuration
        timeout["default"] = cfg.SCAN_TIMEOUT
        for branch in timeout.get("anyOf", []):
            if branch.get("type") == "integer":
                branch["maximum"] = cfg.SCAN_MAX_TIMEOUT
    return schemas


def _content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _response(description: str, content: Schema | None = None, **headers: Schema) -> Schema:
    result: Schema = {"description": description, "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}, **headers}}
    if content is not None:
        result["content"] = content
    return result


def _own_response(value: Any) -> Schema:
    """A response model, alternatives of models, or (description, content) of a file or another document."""
    if isinstance(value, tuple):
        description, content = value
        extra = {} if "application/json" in content else {"Content-Disposition": {"$ref": "#/components/headers/Content-Disposition"}}
        return _response(description, content, **extra)
    if isinstance(value, list):
        text = " Or: ".join((m.__doc__ or m.__name__).strip() for m in value)
        key = "anyOf" if Error in value else "oneOf"
        return _response(text, _content({key: [ref(m.__name__) for m in value]}))
    return _response((value.__doc__ or value.__name__).strip().splitlines()[0], _content(ref(value.__name__)))


def _parameters(rule: str, d: Doc) -> list[Schema]:
    params = []
    for name in re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule):
        schema = d.path.get(name) or {"type": "string", "pattern": SEGMENT}
        params.append({"name": name, "in": "path", "required": True, "description": PATH_PARAMS.get(name, name), "schema": schema})
    if d.query is not None:
        properties = d.query.model_json_schema()["properties"]
        for name, schema in properties.items():
            described = {k: v for k, v in schema.items() if k not in ("title", "description")}
            text = schema.get("description", name)
            params.append({"name": name, "in": "query", "required": False, "description": text, "schema": described})
    return params


def operation(rule: str, role: str, d: Doc) -> Schema:
    """One operation. Protected ones answer 401, 403 and 503 (the token is looked up); bodies add 400 and 413."""
    statuses: dict[int, str | None] = {}
    if role != PUBLIC:
        statuses.update({401: None, 403: None, 503: None})
    if d.body is not None or d.request is not None:
        statuses.update({400: None, 413: None})
    if d.query is not None:
        statuses[400] = None
    statuses.update(d.errors)
    access = "Public: no token needed." if role == PUBLIC else f"Requires the `{role}` role (or a higher one)."
    result: Schema = {
        "operationId": d.operation_id,
        "tags": [d.tag],
        "summary": d.summary,
        "description": f"{d.description}\n\n{access}" if d.description else access,
        "x-required-role": role,
    }
    if role == PUBLIC:
        result["security"] = []
    if params := _parameters(rule, d):
        result["parameters"] = params
    if body := _request_body(d):
        result["requestBody"] = body
    responses = {status: _error(status, text) for status, text in statuses.items()}
    responses.update({status: _own_response(value) for status, value in d.responses.items()})
    result["responses"] = {str(status): responses[status] for status in sorted(responses)}
    return result


def _request_body(d: Doc) -> Schema | None:
    """A JSON model's body (or one of its variants), or a body sent as is (a file: its description and media types)."""
    if d.request is not None:
        description, content = d.request
        return {"required": True, "description": description, "content": content}
    if d.body is None:
        return None
    variants = getattr(d.body, "variants", None)
    schema = {"oneOf": [ref(v.__name__) for v in variants]} if variants else ref(d.body.__name__)
    return {"required": True, "content": _content(schema)}


def _error(status: int, description: str | None) -> Schema:
    reference: Schema = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    return {**reference, "description": description} if description else reference


def _error_responses(cfg: Config) -> dict[str, Schema]:
    extra = {
        401: {"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}},
        429: {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
        503: {"Retry-After": {"$ref": "#/components/headers/Retry-After-Optional"}},
    }
    described = {
        413: f"The request body is larger than {cfg.MAX_CONTENT_LENGTH} bytes (CLOUDX_MAX_CONTENT_LENGTH).",
        429: f"{cfg.MAX_QUEUED_JOBS} jobs are already waiting (CLOUDX_MAX_QUEUED_JOBS); retry after Retry-After seconds.",
    }
    return {
        name: _response(described.get(status, text), _content(ref("Error")), **extra.get(status, {}))
        for status, (name, text) in ERRORS.items()
    }


HEADERS: dict[str, Schema] = {
    "X-Request-ID": {
        "description": "The server's own id of the request (unique; the audit entry's request_id). A valid X-Request-ID "
        "sent by the client (letters, digits, . _ : -, up to 64) comes back as X-Client-Request-ID.",
        "required": True,
        "schema": {"type": "string"},
    },
    "WWW-Authenticate": {
        "description": 'Bearer realm="cloudx" (with error="invalid_token" for a bad token).',
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": {"description": "Seconds to wait before trying again.", "required": True, "schema": {"type": "integer", "minimum": 0}},
    "Retry-After-Optional": {
        "description": "Seconds to wait before trying again, when waiting helps.",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    "Content-Disposition": {"description": "attachment; filename=...", "required": True, "schema": {"type": "string"}},
}


def spec(app: Flask, settings: Config | None = None) -> dict[str, Any]:
    """The OpenAPI document of the app's routes; limits that depend on the configuration come from `settings`."""
    cfg = settings or Config()
    paths: dict[str, dict[str, Schema]] = {}
    docs: list[Doc] = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        d: Doc | None = getattr(view, "_cloudx_doc", None)
        if d is None:
            continue  # not an API route (static files)
        docs.append(d)
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = operation(rule.rule, role_of(view), d)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cloud-X controller", "version": "1", "description": DESCRIPTION},
        "servers": [{"url": "/", "description": "This controller (paths include /api)."}],
        "security": [{"bearer": []}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API token: cx_<id>_<secret>."}},
            "schemas": _schemas(_models(docs), cfg),
            "responses": _error_responses(cfg),
            "headers": HEADERS,
        },
    }


OPENAPI_RESPONSE = (
    "The OpenAPI 3.1 description of the API.",
    _content(
        {"type": "object", "properties": {"openapi": {"type": "string"}, "info": {}, "paths": {}}, "required": ["openapi", "info", "paths"]}
    ),
)


@bp.get("/openapi.json")
@requires(PUBLIC)
@doc("get_openapi", "system", "This document", {200: OPENAPI_RESPONSE})
def openapi() -> Any:
    cache = current_app.extensions.setdefault("cloudx.openapi", {})
    if "document" not in cache:
        cache["document"] = spec(current_app, config())  # type: ignore[arg-type]
    return jsonify(cache["document"])
