"""The OpenAPI 3.1 description of the API, served at /api/openapi.json.

Paths carry their /api prefix and the one server is "/", so a client given the controller's address
(http://127.0.0.1:5001) calls the right URLs. Request schemas follow the validators (controller/scans.py,
controller/deployments.py, controller/auth.py, ...): a request they accept is one the server validates,
except where a value names something that must exist (a stored credential, an inventory group). Response
schemas follow the *_view functions. The validators' own constants are imported, so limits stay in step.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from controller.api import PUBLIC, config, requires
from controller.api.scripts import FILE_NAME, OS_DIRS
from controller.config import Config
from controller.principal import ROLES
from controller.queue.jobs import MAX_PAGE
from controller.scanlib import scanner
from controller.services.auth import TOKEN_FORMAT, TOKEN_NAME
from controller.services.credentials import KINDS, MAX_SECRET, USERNAME
from controller.services.credentials import NAME as CREDENTIAL_NAME
from controller.services.deployments import MAX_HOSTS, OS_TYPES
from controller.services.deployments import NAME as AGENT_NAME
from controller.services.monitor import LOCAL_TARGETS, SPIKE_FLOOR
from controller.services.policy import MAX_SCOPE_ENTRIES
from controller.store.models import ACTIVE_STATUSES, FINAL_STATUSES

bp = Blueprint("openapi", __name__)

Schema = dict[str, Any]

JOB_STATUSES = [*ACTIVE_STATUSES, *FINAL_STATUSES]
MAX_ID = 10**18 - 1  # int_arg: at most 18 ASCII digits

# --- patterns (ECMA 262, as JSON Schema reads them; also valid Python) -------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{IPV4})"
# RFC 3986 IPv6address, which is what ipaddress.ip_address accepts (without a zone).
IPV6 = (
    "(?:"
    + "|".join(
        [
            rf"(?:{_H16}:){{6}}{_LS32}",
            rf"::(?:{_H16}:){{5}}{_LS32}",
            rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
            rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
            rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
            rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
        ]
    )
    + ")"
)
CIDR4 = rf"{IPV4}/(?:[0-9]|[12][0-9]|3[0-2])"
CIDR6 = rf"{IPV6}/(?:[0-9]|[1-9][0-9]|1[01][0-9]|12[0-8])"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Labels of 1-63 letters, digits and inner hyphens; the last is not all digits; one trailing dot allowed.
HOSTNAME = rf"(?:{_LABEL}\.)*(?![0-9]+\.?$){_LABEL}\.?"
PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_KEY_LINE = r"(?:\[[A-Za-z0-9.:-]+\]:[0-9]+|[A-Za-z0-9.:-]+) (?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/=]+"
_KNOWN_HOSTS_LINE = rf"[ \t]*(?:#[^\n\r]*|{_KEY_LINE}[ \t]*)?"
NO_NUL = r"^[^\u0000]*$"
ANSIBLE_PATTERN = r"^[A-Za-z0-9_.:*!&,\[\]][A-Za-z0-9_.:*!&,\[\]-]{0,254}$"
# A path segment: Flask's default converter takes no "/", and clients resolve "." and "..".
SEGMENT = r"^(?!\.\.?$)[^/]+$"


# --- schema building blocks ----------------------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """The schema, or null."""
    if "type" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    widened = {**schema, "type": [*types, "null"]}
    if "enum" in schema:
        widened["enum"] = [*schema["enum"], None]
    return widened


def string(pattern: str | None = None, **keywords: Any) -> Schema:
    return {"type": "string", **({"pattern": pattern} if pattern else {}), **keywords}


def text_schema() -> Schema:
    return {"type": "string"}


def integer(minimum: int | None = None, maximum: int | None = None, **keywords: Any) -> Schema:
    bounds = {k: v for k, v in (("minimum", minimum), ("maximum", maximum)) if v is not None}
    return {"type": "integer", **bounds, **keywords}


def array(items: Schema, **keywords: Any) -> Schema:
    return {"type": "array", "items": items, **keywords}


def enum(values: Any, **keywords: Any) -> Schema:
    return {"type": "string", "enum": list(values), **keywords}


def timestamp(**keywords: Any) -> Schema:
    return {"type": "string", "format": "date-time", **keywords}


def obj(properties: dict[str, Schema], required: list[str] | None = None, *, closed: bool = False, **keywords: Any) -> Schema:
    """An object. A response view always sends every property, so by default all are required."""
    schema: Schema = {"type": "object", "properties": properties, "required": list(properties) if required is None else required}
    if closed:
        schema["additionalProperties"] = False
    return {**schema, **keywords}


def one_of_patterns(*patterns: str, **keywords: Any) -> Schema:
    """A string matching one of the (unanchored) patterns."""
    return {"type": "string", "anyOf": [{"pattern": f"^{p}$"} for p in patterns], **keywords}


def given(name: str) -> Schema:
    """The body has `name` and it is not null (the validators treat null as absent)."""
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def at_most_one(*names: str) -> Schema:
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    return {"not": {"anyOf": [{"allOf": [given(a), given(b)]} for a, b in pairs]}}


def paged(key: str, item: str, cursor: str, cursor_schema: Schema) -> Schema:
    return obj({key: array(ref(item)), cursor: nullable(cursor_schema)})


# --- parameters ----------------------------------------------------------------------------------------------


def path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema or string(SEGMENT)}


def query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def limit_param(default: int = 50) -> Schema:
    return query("limit", integer(1, MAX_PAGE, default=default), f"Page size, 1 to {MAX_PAGE}.")


JOB_ID = path_param("job_id", "The job's id (a scan's job_id).")


# --- responses -----------------------------------------------------------------------------------------------

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
    429: ("TooManyRequests", "Too many jobs are already waiting (CLOUDX_MAX_QUEUED_JOBS); retry after Retry-After seconds."),
    503: (
        "Unavailable",
        "The database is unavailable (locked past its busy timeout; Retry-After is sent) or the disk is full; nothing was changed.",
    ),
}


def header(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


def response(description: str, content: dict[str, Any] | None = None, **headers: Schema) -> Schema:
    result: Schema = {"description": description, "headers": {"X-Request-ID": header("X-Request-ID"), **headers}}
    if content is not None:
        result["content"] = content
    return result


def json_response(description: str, schema: Schema) -> Schema:
    return response(description, {"application/json": {"schema": schema}})


def error(status: int, description: str | None = None) -> Schema:
    """The shared error response of a status, with an operation's own explanation."""
    reference: Schema = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    return {**reference, "description": description} if description else reference


def error_responses(cfg: Config) -> dict[str, Schema]:
    extra = {
        401: {"WWW-Authenticate": header("WWW-Authenticate")},
        429: {"Retry-After": header("Retry-After")},
        503: {"Retry-After": header("Retry-After-Optional")},
    }
    described = {
        413: f"The request body is larger than {cfg.MAX_CONTENT_LENGTH} bytes (CLOUDX_MAX_CONTENT_LENGTH).",
        429: f"{cfg.MAX_QUEUED_JOBS} jobs are already waiting (CLOUDX_MAX_QUEUED_JOBS); retry after Retry-After seconds.",
    }
    return {
        name: response(described.get(status, text), {"application/json": {"schema": ref("Error")}}, **extra.get(status, {}))
        for status, (name, text) in ERRORS.items()
    }


# --- operations ----------------------------------------------------------------------------------------------


def operation(
    operation_id: str,
    tag: str,
    role: str,
    summary: str,
    responses: dict[int, Schema],
    *,
    errors: dict[int, str | None] | None = None,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    description: str = "",
) -> Schema:
    """One operation. Protected ones answer 401, 403 and 503 (the token is looked up); bodies add 400 and 413.

    `responses` are the operation's own; `errors` the shared error responses it adds (with an optional
    explanation of when).
    """
    statuses: dict[int, str | None] = {}
    if role != PUBLIC:
        statuses.update({401: None, 403: None, 503: None})
    if body is not None:
        statuses.update({400: None, 413: None})
    statuses.update(errors or {})
    access = "Public: no token needed." if role == PUBLIC else f"Requires the `{role}` role (or a higher one)."
    result: Schema = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": f"{description}\n\n{access}" if description else access,
        "x-required-role": role,
    }
    if role == PUBLIC:
        result["security"] = []
    if parameters:
        result["parameters"] = parameters
    if body is not None:
        result["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    merged = {**{status: error(status, text) for status, text in statuses.items()}, **responses}
    result["responses"] = {str(status): merged[status] for status in sorted(merged)}
    return result


def _paths(cfg: Config) -> dict[str, Any]:
    submitted = json_response("Accepted: the job is queued.", ref("Submitted"))
    queued = {429: None, 503: "See Unavailable; also when the job could not be stored."}
    return {
        "/api/health": {
            "get": operation(
                "health",
                "system",
                PUBLIC,
                "Liveness and database check",
                {200: json_response("The service and its database answer.", ref("Health"))},
                errors={503: "The database does not answer."},
            )
        },
        "/api/ping": {
            "get": operation("ping", "system", PUBLIC, "Ping", {200: json_response("Pong.", ref("Pong"))}),
        },
        "/api/sync-status": {
            "get": operation(
                "sync_status",
                "system",
                "viewer",
                "The sync heartbeat",
                {
                    200: json_response(
                        "active when the heartbeat file is recent, inactive (with the reason) otherwise.", ref("SyncStatus")
                    ),
                    500: json_response("The heartbeat file exists but cannot be read as a heartbeat.", ref("SyncError")),
                },
                description="Reads the heartbeat file written by `cloudx heartbeat` (CLOUDX_SYNC_HEARTBEAT_FILE).",
            )
        },
        "/api/system-monitor": {
            "get": operation(
                "system_monitor",
                "system",
                "viewer",
                "CPU, memory, disk and network of this machine, or ping latency of a host",
                {
                    200: json_response(
                        "Local metrics (kind local) with a short history, or ICMP round trips to the target (kind ping).",
                        {"oneOf": [ref("LocalMonitor"), ref("PingMonitor")]},
                    ),
                    503: json_response(
                        "The database is unavailable, or this process may not send ICMP (kind ping, status unavailable).",
                        {"anyOf": [ref("Error"), ref("PingUnavailable")]},
                    ),
                },
                errors={400: "target is not a host address or name.", 403: None},
                parameters=[
                    query(
                        "target",
                        {"anyOf": [enum(sorted(LOCAL_TARGETS)), ref("Host")], "default": "local"},
                        "`local` (or empty, localhost, 127.0.0.1, ::1) for this machine; otherwise one host (not a network), "
                        "which must be inside the scope policy.",
                    )
                ],
            )
        },
        "/api/scans": {
            "get": operation(
                "list_scans",
                "scans",
                "viewer",
                "Scans, newest first",
                {200: json_response("A page of scans; pass next_before as before for the next one.", ref("ScanPage"))},
                errors={400: "limit or before is not valid."},
                parameters=[limit_param(), query("before", integer(0, MAX_ID), "List scans with a smaller id (next_before).")],
            ),
            "post": operation(
                "submit_scan",
                "scans",
                "operator",
                "Submit a scan",
                {202: submitted},
                errors=queued,
                body=ref("ScanRequest"),
                description="Queues a scan job. The target must lie inside the scope policy (and the token's scope).",
            ),
        },
        "/api/scans/{job_id}": {
            "parameters": [JOB_ID],
            "get": operation(
                "get_scan",
                "scans",
                "viewer",
                "A scan with its results",
                {200: json_response("The scan, its hosts and ports.", ref("ScanDetail"))},
                errors={404: "No scan with this job_id."},
            ),
            "delete": operation(
                "delete_scan",
                "scans",
                "operator",
                "Delete a scan",
                {200: json_response("Deleted, with its job, events and files.", ref("Deleted"))},
                errors={404: "No scan with this job_id.", 409: "The scan is still stopping after 30 s; try again shortly."},
                description="Stops the scan if it is active (waiting up to 30 s), then deletes it with its job, events and files.",
            ),
        },
        "/api/scans/{job_id}/stop": {
            "parameters": [JOB_ID],
            "post": operation(
                "stop_scan",
                "scans",
                "operator",
                "Stop a scan",
                {202: json_response("A queued scan is canceled at once, a running one is asked to stop.", ref("StopRequested"))},
                errors={404: "No scan with this job_id.", 409: "The scan has already ended."},
            ),
        },
        "/api/scans/{job_id}/raw": {
            "parameters": [JOB_ID],
            "get": operation(
                "download_scan_raw",
                "scans",
                "viewer",
                "The scanner's raw output file",
                {
                    200: response(
                        "nmap XML, masscan JSON or zmap CSV, as an attachment.",
                        {media: {} for media in ("application/xml", "application/json", "text/csv", "application/octet-stream")},
                        **{"Content-Disposition": header("Content-Disposition")},
                    )
                },
                errors={404: "No scan with this job_id, or it has no raw output (yet)."},
            ),
        },
        "/api/jobs": {
            "get": operation(
                "list_jobs",
                "jobs",
                "viewer",
                "Jobs, newest first",
                {200: json_response("A page of jobs; pass next_cursor as cursor for the next one.", ref("JobPage"))},
                errors={400: "limit, status or cursor is not valid."},
                parameters=[
                    limit_param(),
                    query("cursor", string(), "next_cursor of the previous page (opaque)."),
                    query("status", enum(["", *JOB_STATUSES]), "Only jobs with this status (empty: any)."),
                    query("kind", string(), "Only jobs of this kind (scan, deploy)."),
                ],
            )
        },
        "/api/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": operation(
                "get_job", "jobs", "viewer", "A job", {200: json_response("The job.", ref("Job"))}, errors={404: "No such job."}
            ),
        },
        "/api/jobs/{job_id}/events": {
            "parameters": [JOB_ID],
            "get": operation(
                "list_job_events",
                "jobs",
                "viewer",
                "A job's Ansible events, in order",
                {200: json_response("A page of events; pass next_after as after for the next one.", ref("EventPage"))},
                errors={400: "limit or after is not valid.", 404: "No such job."},
                parameters=[
                    limit_param(100),
                    query("after", integer(0, MAX_ID, default=0), "Events with a larger counter (next_after)."),
                    query("event", string(), "Only events of this type (e.g. runner_on_ok)."),
                    query("host", string(), "Only events of this host."),
                ],
                description="Poll with after = the last counter seen until job_status is final and the last counter is final_counter.",
            ),
        },
        "/api/jobs/{job_id}/hosts": {
            "parameters": [JOB_ID],
            "get": operation(
                "list_job_hosts",
                "jobs",
                "viewer",
                "A job's per-host counts",
                {200: json_response("Per-host counts from the play recap.", ref("HostSummaries"))},
                errors={404: "No such job."},
            ),
        },
        "/api/jobs/{job_id}/cancel": {
            "parameters": [JOB_ID],
            "post": operation(
                "cancel_job",
                "jobs",
                "operator",
                "Cancel a job",
                {202: json_response("A queued job is canceled at once, a running one is asked to stop.", ref("Job"))},
                errors={404: "No such job.", 409: "The job has already ended (other than canceled)."},
            ),
        },
        "/api/deploy/agent": {
            "post": operation(
                "deploy_agent",
                "deployments",
                "operator",
                "Deploy the agent to one host",
                {202: submitted},
                errors={**queued, 400: "The input is not valid, or the stored credential does not exist or cannot be opened."},
                body=ref("AgentRequest"),
                description="The original single-target deployment. The target must lie inside the scope policy.",
            )
        },
        "/api/deployments": {
            "post": operation(
                "create_deployment",
                "deployments",
                "operator",
                "Deploy the agent to (or remove it from) hosts or an inventory pattern",
                {202: submitted},
                errors={
                    **queued,
                    400: "The input is not valid, no inventory host matches limit, or the stored credential does not exist "
                    "or cannot be opened.",
                },
                body=ref("DeploymentRequest"),
                description="Every host reached must lie inside the scope policy.",
            )
        },
        "/api/host-keys": {
            "get": operation(
                "list_host_keys",
                "deployments",
                "viewer",
                "The SSH host keys the controller trusts",
                {200: json_response("Host keys, by host and key type.", obj({"host_keys": array(ref("HostKey"))}))},
            ),
            "put": operation(
                "trust_host_keys",
                "deployments",
                "admin",
                "Trust SSH host keys (an admin's word)",
                {200: json_response("The keys now trusted.", obj({"host_keys": array(ref("HostKey"))}))},
                body=obj({"known_hosts": ref("KnownHosts")}, ["known_hosts"], closed=True),
                description="A key given here replaces a key of the same type for that host. Stored credentials are used only "
                "on hosts whose key an admin added, CLOUDX_KNOWN_HOSTS_FILE lists, or an earlier successful deployment "
                "without that credential pinned.",
            ),
        },
        "/api/host-keys/{host}": {
            "parameters": [path_param("host", "The host as known_hosts names it: an address, or [address]:port.")],
            "delete": operation(
                "forget_host_key",
                "deployments",
                "admin",
                "Stop trusting a host's SSH keys",
                {
                    200: json_response(
                        "How many keys were removed.", obj({"host": {"type": "string"}, "deleted": integer(1)}, ["host", "deleted"])
                    )
                },
                errors={404: "No trusted key for this host."},
                description="After a host was rebuilt: the next deployment pins its new keys (or is given them).",
            ),
        },
        "/api/scripts": {
            "get": operation(
                "list_scripts",
                "scripts",
                "viewer",
                "The standalone agent scripts",
                {200: json_response("File names per operating system.", ref("ScriptList"))},
            )
        },
        "/api/scripts/{os_dir}/{name}": {
            "parameters": [
                path_param("os_dir", "The operating system.", enum(OS_DIRS)),
                path_param("name", "A file name from GET /api/scripts.", string(rf"^(?!.*\.\.){FILE_NAME.pattern[1:]}")),
            ],
            "get": operation(
                "get_script",
                "scripts",
                "viewer",
                "Download an agent script",
                {
                    200: response(
                        "The script, as an attachment.",
                        {"text/plain": {"schema": string()}},
                        **{"Content-Disposition": header("Content-Disposition")},
                    )
                },
                errors={400: "os_dir or name is not valid.", 404: "No such script."},
            ),
        },
        "/api/tokens": {
            "get": operation(
                "list_tokens",
                "admin",
                "admin",
                "API tokens",
                {200: json_response("Every token, revoked ones included.", obj({"tokens": array(ref("Token"))}))},
            ),
            "post": operation(
                "create_token",
                "admin",
                "admin",
                "Create an API token",
                {201: json_response("The token; its text (token) is in this response only.", ref("NewToken"))},
                errors={409: "A token with this name exists."},
                body=ref("TokenRequest"),
            ),
        },
        "/api/tokens/{name}": {
            "parameters": [path_param("name", "The token's name or id.")],
            "delete": operation(
                "revoke_token",
                "admin",
                "admin",
                "Revoke an API token",
                {
                    200: json_response(
                        "The revoked token (revoking twice is harmless) and the jobs it had queued (canceled) or running (stopped).",
                        ref("RevokedToken"),
                    )
                },
                errors={404: "No token with this name."},
            ),
        },
        "/api/policy": {
            "get": operation("get_policy", "admin", "operator", "The scope policy", {200: json_response("The policy.", ref("Policy"))}),
            "put": operation(
                "update_policy",
                "admin",
                "admin",
                "Change the scope policy",
                {200: json_response("The policy after the change.", ref("Policy"))},
                body=ref("PolicyChange"),
                description="Changes the given fields; the others keep their values.",
            ),
        },
        "/api/credentials": {
            "get": operation(
                "list_credentials",
                "admin",
                "operator",
                "Stored credentials (never their secrets)",
                {200: json_response("Stored credentials, by name.", obj({"credentials": array(ref("Credential"))}))},
            ),
            "post": operation(
                "create_credential",
                "admin",
                "admin",
                "Store a credential",
                {201: json_response("The stored credential (without its secret).", ref("Credential"))},
                errors={
                    400: "The input is not valid, or the controller has no valid CLOUDX_CREDENTIALS_KEY (field credential).",
                    409: "A credential with this name exists.",
                },
                body=ref("CredentialRequest"),
                description="The secret is encrypted with CLOUDX_CREDENTIALS_KEY (AES-256-GCM) and never returned.",
            ),
        },
        "/api/credentials/{name}": {
            "parameters": [path_param("name", "The credential's name.")],
            "delete": operation(
                "delete_credential",
                "admin",
                "admin",
                "Delete a stored credential",
                {200: json_response("Deleted.", obj({"name": string(), "deleted": {"const": True}}))},
                errors={404: "No credential with this name."},
            ),
        },
        "/api/audit": {
            "get": operation(
                "list_audit",
                "admin",
                "admin",
                "The audit log, newest first",
                {200: json_response("A page of entries; pass next_before as before for the next one.", ref("AuditPage"))},
                errors={400: "limit or before is not valid."},
                parameters=[limit_param(), query("before", integer(0, MAX_ID), "Entries with a smaller id (next_before).")],
                description="Every mutating request (POST, PUT, DELETE), whatever its outcome.",
            )
        },
        "/api/openapi.json": {
            "get": operation(
                "get_openapi",
                "system",
                PUBLIC,
                "This document",
                {200: json_response("The OpenAPI 3.1 description of the API.", obj({"openapi": string(), "info": {}, "paths": {}}))},
            )
        },
    }


# --- component schemas ---------------------------------------------------------------------------------------


def _value_schemas() -> dict[str, Schema]:
    """Addresses, names and secrets, as the validators accept them."""
    return {
        "Host": one_of_patterns(
            IPV4, IPV6, HOSTNAME, minLength=1, maxLength=253, description="One host: an IPv4 or IPv6 address or a hostname."
        ),
        "Target": one_of_patterns(
            IPV4,
            IPV6,
            CIDR4,
            CIDR6,
            HOSTNAME,
            minLength=1,
            maxLength=253,
            description="An IPv4/IPv6 address, a CIDR network or a hostname; never starts with '-', no whitespace or shell characters.",
        ),
        "Secret": string(NO_NUL, minLength=1, maxLength=MAX_SECRET, description="A non-empty string without NUL characters."),
        "PrivateKey": string(
            r"^[ \t\n\r\f\v]*-----BEGIN [^\u0000]*PRIVATE KEY-----[^\u0000]*$",
            minLength=1,
            maxLength=MAX_SECRET,
            description="A private key in PEM or OpenSSH format.",
        ),
        "Username": string(USERNAME.pattern, description="Letters, digits, _ . - and \\ (1-64 characters)."),
        "KnownHosts": {
            "anyOf": [
                string(rf"^{_KNOWN_HOSTS_LINE}(?:\r?\n{_KNOWN_HOSTS_LINE})*$"),
                array(string(rf"^[ \t]*(?:#[\s\S]*|{_KEY_LINE}[ \t]*)?$")),
            ],
            "description": "SSH host keys to trust, as known_hosts text or a list of lines: 'host keytype base64key' "
            "(host or [host]:port; ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521); blank lines and # comments are ignored.",
        },
    }


def _ports(needed: bool, allowed: bool, single: bool) -> Schema:
    """What ports/port may be for one scan type."""
    if not allowed:
        return {"enum": [None, ""], "description": "This scan type takes no ports."}
    one = f"^{PORT}$"
    choices = [
        integer(1, 65535),
        string(one if single else f"^{PORT}(?:,{PORT})*$", maxLength=1024),
        array({"anyOf": [integer(1, 65535), string(one)]}, minItems=1, maxItems=1 if single else 170),
    ]
    return {"anyOf": choices if needed else [{"enum": [None, ""]}, *choices]}


def _scan_request(cfg: Config) -> Schema:
    targets = {
        "nmap": ref("Target"),
        "zmap": one_of_patterns(IPV4, CIDR4, HOSTNAME, maxLength=253, description="zmap scans IPv4 targets only."),
        "masscan": one_of_patterns(IPV4, IPV6, CIDR4, CIDR6, description="masscan needs an address or a network, not a hostname."),
    }
    variants = []
    for tool, types in scanner.SCAN_TYPES.items():
        for scan_type, (text, needed, allowed) in types.items():
            ports = _ports(needed, allowed, single=tool == "zmap")
            variant: Schema = {
                "title": f"{tool} {scan_type}",
                "description": text,
                "properties": {
                    "tool": {"const": tool},
                    "scan_type": {"const": scan_type},
                    "target": targets[tool],
                    "ports": ports,
                    "port": ports,
                },
            }
            if needed:
                variant["anyOf"] = [{"required": ["ports"]}, {"required": ["port"]}]
            variants.append(variant)
    ports_text = (
        "A port number, a list of them, or a string like 22,80 (the server also accepts ranges such as 1000-2000, low to high, "
        "and spaces). zmap tcp_syn needs exactly one port, masscan tcp_scan/udp_scan need ports, icmp_echo and ping_scan take none."
    )
    any_ports = {
        "anyOf": [{"enum": [None, ""]}, integer(1, 65535), string(maxLength=1024), array({"type": ["integer", "string"]}, minItems=1)]
    }
    return obj(
        {
            "tool": enum(scanner.SCAN_TYPES),
            "scan_type": enum(dict.fromkeys(t for types in scanner.SCAN_TYPES.values() for t in types), description="Depends on tool."),
            "target": ref("Target"),
            "ports": {**any_ports, "description": ports_text},
            "port": {**any_ports, "description": "Another name for ports; give one of them."},
            "timeout": integer(1, cfg.SCAN_MAX_TIMEOUT, default=cfg.SCAN_TIMEOUT, description="Seconds."),
        },
        ["tool", "scan_type", "target"],
        closed=True,
        oneOf=variants,
        **{"not": {"required": ["port", "ports"]}},
    )


def _deploy_requests() -> dict[str, Schema]:
    agent_name = string(AGENT_NAME.pattern)
    common = {
        "os_type": enum(OS_TYPES),
        "username": nullable(ref("Username")),
        "password": nullable(ref("Secret")),
        "ssh_key": nullable(ref("PrivateKey")),
        "credential": nullable(string(CREDENTIAL_NAME.pattern, description="The name of a stored credential.")),
        "become_password": nullable(ref("Secret")),
        "enrollment_password": nullable(ref("Secret")),
        "group": nullable({**agent_name, "description": "The agent group."}),
        "manager_ip": nullable({**ref("Host"), "description": "The manager's address."}),
        "known_hosts": nullable(ref("KnownHosts")),
    }
    one_login = at_most_one("password", "ssh_key", "credential")
    # Windows hosts are reached over WinRM, with a password.
    windows = {"if": {"required": ["os_type"], "properties": {"os_type": {"const": "windows"}}}, "then": {"not": given("ssh_key")}}
    agent = obj(
        {
            "target": ref("Host"),
            **common,
            "agent_name": nullable(agent_name),
            "port": nullable(integer(1, 65535, description="The SSH (or WinRM) port.")),
        },
        ["target", "os_type"],
        closed=True,
        allOf=[
            one_login,
            windows,
            {"anyOf": [given("password"), given("ssh_key"), given("credential")]},
            {"anyOf": [given("username"), given("credential")]},
        ],
        description="One host; a login (password, ssh_key or a stored credential) and a username (or a credential that has one).",
    )
    many = obj(
        {
            "hosts": nullable(array(ref("Host"), minItems=1, maxItems=MAX_HOSTS)),
            "limit": nullable(string(ANSIBLE_PATTERN, description="An inventory group or Ansible host pattern, e.g. linux or web*:&prod.")),
            "state": enum(["present", "absent"], default="present", description="present deploys, absent removes the agent."),
            **common,
            "os_type": enum(OS_TYPES, description="Required with hosts; linux by default with limit."),
        },
        [],
        closed=True,
        allOf=[
            {"oneOf": [given("hosts"), given("limit")]},
            {"if": given("hosts"), "then": {"required": ["os_type"]}},
            one_login,
            windows,
        ],
        description="Either hosts (addresses or hostnames) or limit (inventory hosts). Without a login the inventory's is used.",
    )
    return {"AgentRequest": agent, "DeploymentRequest": many}


def _admin_requests() -> dict[str, Schema]:
    scope = array(ref("Target"), maxItems=MAX_SCOPE_ENTRIES, description="CIDR networks, addresses and hostnames.")
    return {
        "TokenRequest": obj(
            {
                "name": string(TOKEN_NAME.pattern),
                "role": enum(ROLES),
                "scope": nullable({**scope, "description": "Narrows the policy scope for this token; null: the policy scope."}),
                "allow_large_targets": {
                    "type": "boolean",
                    "default": False,
                    "description": "May scan networks larger than the policy allows.",
                },
                "expires_in": {
                    "anyOf": [string(r"^[1-9][0-9]{0,5}[smhd]$"), integer(1, 315360000)],
                    "description": "Lifetime: 30d, 12h, 90m, 3600s or seconds (at most 3650 days); none: no expiry.",
                },
                "max_queued": nullable(integer(0, 10000, description="Jobs it may have waiting; null: the policy's token_max_queued.")),
                "max_running": nullable(integer(0, 10000, description="Jobs it may run at once; null: the policy's token_max_running.")),
            },
            ["name", "role"],
            closed=True,
        ),
        "PolicyChange": obj(
            {
                "scope": scope,
                "max_prefix_v4": integer(0, 32, description="IPv4 networks with a shorter prefix need a token allowed large targets."),
                "max_prefix_v6": integer(0, 128, description="The same for IPv6."),
                "windows_deployments": {"type": "boolean"},
                "token_max_queued": integer(0, 10000, description="Jobs a non-admin token may have waiting."),
                "token_max_running": integer(0, 10000, description="Jobs a non-admin token may have running at once."),
                "max_scan_timeout": obj(
                    {"operator": integer(1, 10**7), "admin": integer(1, 10**7)},
                    [],
                    closed=True,
                    description="Largest scan timeout per role (never above CLOUDX_SCAN_MAX_TIMEOUT).",
                ),
            },
            [],
            closed=True,
            minProperties=1,
        ),
        "CredentialRequest": obj(
            {
                "name": string(CREDENTIAL_NAME.pattern),
                "kind": enum(KINDS),
                "username": nullable(ref("Username")),
                "secret": ref("Secret"),
                "scope": nullable({**scope, "description": "Only for hosts inside these networks and names; null: anywhere."}),
                "ports": nullable(
                    array(integer(1, 65535), minItems=1, maxItems=64, description="Only on these ports; null: 22 for SSH, 5986 for WinRM.")
                ),
            },
            ["name", "kind", "secret"],
            closed=True,
            **{"if": {"properties": {"kind": {"const": "ssh_key"}}}, "then": {"properties": {"secret": ref("PrivateKey")}}},
        ),
    }


def _view_schemas() -> dict[str, Schema]:
    """What the views send back."""
    text, maybe_text, maybe_int, maybe_time = string(), nullable(string()), nullable(integer()), nullable(timestamp())
    status = enum(JOB_STATUSES)
    scan = {
        "id": integer(),
        "job_id": text,
        "tool": text,
        "target": text,
        "scan_type": text,
        "ports": maybe_text,
        "status": status,
        "status_reason": maybe_text,
        "progress": integer(0, 100),
        "created_at": timestamp(),
        "updated_at": timestamp(),
    }
    port = obj(
        {
            "protocol": text,
            "port": integer(),
            "state": text,
            "reason": maybe_text,
            "service": maybe_text,
            "product": maybe_text,
            "version": maybe_text,
        }
    )
    host = obj(
        {"address": text, "status": text, "reason": maybe_text, "hostnames": array(string()), "mac": maybe_text, "ports": array(port)}
    )
    results = obj({"summary": nullable({"type": "object", "description": "The scanner's summary.json."}), "hosts": array(host)})
    token = {
        "id": text,
        "name": text,
        "role": enum(ROLES),
        "scope": nullable(array(string())),
        "allow_large_targets": {"type": "boolean"},
        "created_by": text,
        "created_at": timestamp(),
        "last_used_at": maybe_time,
        "revoked_at": maybe_time,
        "expires_at": maybe_time,
        "max_queued": maybe_int,
        "max_running": maybe_int,
    }
    point = obj({"value": {"type": "number"}, "timestamp": timestamp(), "spike": {"type": "boolean"}})
    counts = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
    return {
        "Error": obj(
            {"error": text, "field": text, "request_id": string(description="Only on 500: quote it when reporting the error.")},
            ["error"],
            closed=True,
        ),
        "Health": obj({"status": {"const": "ok"}, "database": {"const": "ok"}}),
        "Pong": obj({"status": {"const": "pong"}}),
        "SyncStatus": obj(
            {
                "status": enum(["active", "inactive"]),
                "reason": text,
                "last_heartbeat": text,
                "age_seconds": {"type": "number"},
                "max_age_seconds": integer(),
            },
            ["status"],
        ),
        "SyncError": obj({"status": {"const": "error"}, "error": text, "request_id": text}, ["error"]),
        "LocalMonitor": obj(
            {
                "target": {"const": "local"},
                "kind": {"const": "local"},
                "metrics": obj({name: array(point) for name in SPIKE_FLOOR}, description="Up to 60 recent samples per metric."),
            }
        ),
        "PingMonitor": obj(
            {
                "target": text,
                "address": string(description="The address pinged: the one the scope check approved."),
                "kind": {"const": "ping"},
                "status": enum(["reachable", "unreachable"]),
                "latency_ms": array(
                    obj(
                        {"value": nullable({"type": "number"}), "timestamp": timestamp(), "spike": {"type": "boolean"}, "error": maybe_text}
                    )
                ),
                "loss_percent": {"type": "number", "minimum": 0, "maximum": 100},
            }
        ),
        "PingUnavailable": obj(
            {"target": text, "address": text, "kind": {"const": "ping"}, "status": {"const": "unavailable"}, "error": text}
        ),
        "Submitted": obj({"job_id": text, "status": status}),
        "StopRequested": obj({"job_id": text, "status": status, "cancel_requested": {"const": True}}),
        "Deleted": obj({"job_id": text, "deleted": {"const": True}}),
        "Scan": obj(scan),
        "ScanDetail": obj({**scan, "results": results}),
        "ScanPage": paged("scans", "Scan", "next_before", integer()),
        "Job": obj(
            {
                "id": text,
                "kind": string(description="scan or deploy."),
                "playbook": text,
                "limit": maybe_text,
                "status": status,
                "status_reason": maybe_text,
                "rc": maybe_int,
                "progress": integer(0, 100),
                "cancel_requested": {"type": "boolean"},
                "extra_vars": {"type": "object", "description": "Secrets are redacted."},
                "timeout": integer(),
                "final_counter": maybe_int,
                "node": {**maybe_text, "description": "The executor node that took the job: local@HOST, or a Celery worker's name."},
                "created_by": maybe_text,
                "created_at": timestamp(),
                "started_at": maybe_time,
                "finished_at": maybe_time,
                "updated_at": timestamp(),
            }
        ),
        "JobPage": paged("jobs", "Job", "next_cursor", string()),
        "Event": obj(
            {
                "counter": integer(),
                "uuid": maybe_text,
                "parent_uuid": maybe_text,
                "event": text,
                "host": maybe_text,
                "task": maybe_text,
                "play": maybe_text,
                "stdout": maybe_text,
                "created": maybe_text,
                "event_data": {"type": "object"},
            }
        ),
        "EventPage": obj(
            {
                "job_id": text,
                "job_status": status,
                "final_counter": maybe_int,
                "events": array(ref("Event")),
                "next_after": maybe_int,
            }
        ),
        "HostSummaries": obj({"job_id": text, "hosts": array(obj({"host": text, **{name: integer() for name in counts}}))}),
        "HostKey": obj(
            {
                "host": text,
                "key_type": text,
                "public_key": text,
                "source": text,
                "job_id": maybe_text,
                "credential": maybe_text,
                "added_by": maybe_text,
                "created_at": timestamp(),
            }
        ),
        "ScriptList": obj({os_dir: array(string()) for os_dir in OS_DIRS}, [], closed=True),
        "Token": obj(token),
        "RevokedToken": obj({**token, "stopped_jobs": array(string(), description="Its queued (canceled) and running (stopped) jobs.")}),
        "NewToken": obj({**token, "token": string(TOKEN_FORMAT.pattern, description="The bearer token; shown once.")}),
        "Policy": obj(
            {
                "scope": array(string()),
                "max_prefix_v4": integer(0, 32),
                "max_prefix_v6": integer(0, 128),
                "windows_deployments": {"type": "boolean"},
                "token_max_queued": integer(0),
                "token_max_running": integer(0),
                "max_scan_timeout": {"type": "object", "additionalProperties": integer(1)},
                "updated_by": maybe_text,
                "updated_at": maybe_time,
            }
        ),
        "Credential": obj(
            {
                "name": text,
                "kind": enum(KINDS),
                "username": maybe_text,
                "scope": nullable(array({"type": "string"})),
                "ports": nullable(array(integer())),
                "created_by": text,
                "created_at": timestamp(),
            }
        ),
        "AuditEntry": obj(
            {
                "id": integer(),
                "at": timestamp(),
                "request_id": maybe_text,
                "client_request_id": maybe_text,
                "count": integer(1, description="Requests this entry stands for (unauthenticated denials are aggregated)."),
                "actor": text,
                "role": nullable(enum(ROLES)),
                "remote_addr": maybe_text,
                "method": text,
                "path": text,
                "action": maybe_text,
                "status": integer(),
                "outcome": enum(["ok", "denied", "refused", "error"]),
                "job_id": maybe_text,
                "detail": maybe_text,
            }
        ),
        "AuditPage": paged("entries", "AuditEntry", "next_before", integer()),
    }


def _headers() -> dict[str, Schema]:
    return {
        "X-Request-ID": {
            "description": "The server's own id of the request (unique; the audit entry's request_id). A valid X-Request-ID "
            "sent by the client (letters, digits, . _ : -, up to 64) comes back as X-Client-Request-ID.",
            "required": True,
            "schema": string(),
        },
        "WWW-Authenticate": {
            "description": 'Bearer realm="cloudx" (with error="invalid_token" for a bad token).',
            "required": True,
            "schema": string(),
        },
        "Retry-After": {"description": "Seconds to wait before trying again.", "required": True, "schema": integer(0)},
        "Retry-After-Optional": {
            "description": "Seconds to wait before trying again, when waiting helps.",
            "required": False,
            "schema": integer(0),
        },
        "Content-Disposition": {"description": "attachment; filename=...", "required": True, "schema": string()},
    }


DESCRIPTION = """Runs Ansible playbooks (network scans, agent deployments) as jobs and serves jobs, events and scan results.

**Authentication.** Send `Authorization: Bearer <token>` (tokens come from `cloudx token create` or POST /api/tokens).
Roles rank viewer < operator < admin; each operation names the least role it needs (`x-required-role`). Health, ping and
this document are public.

**Errors.** Every error body is `{"error": string, "field"?: string}`; `field` names the offending input. A 500 adds
`request_id`. 401 comes with WWW-Authenticate, 429 (job queue full) and 503 (database unavailable) with Retry-After.

**Requests.** Bodies are JSON objects (Content-Type: application/json); unknown fields are refused. Every response
carries X-Request-ID (the server's id; yours comes back as X-Client-Request-ID). Pages are newest first for scans,
jobs and the audit log, and oldest first for events; pass the next_* value of a page to get the following one (null:
no more)."""


def spec(settings: Config | None = None) -> dict[str, Any]:
    """The OpenAPI document; limits that depend on the configuration come from `settings` (default: built-in)."""
    cfg = settings or Config()
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cloud-X controller", "version": "1", "description": DESCRIPTION},
        "servers": [{"url": "/", "description": "This controller (paths include /api)."}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "system", "description": "Health, heartbeat, monitoring and this document."},
            {"name": "scans", "description": "Network scans (nmap, masscan, zmap) and their results."},
            {"name": "jobs", "description": "Every playbook run, its events and per-host counts."},
            {"name": "deployments", "description": "Agent deployments and trusted SSH host keys."},
            {"name": "scripts", "description": "Standalone agent scripts for hosts installed by hand."},
            {"name": "admin", "description": "Tokens, the scope policy, stored credentials and the audit log."},
        ],
        "paths": _paths(cfg),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token: cx_<id>_<secret>."},
            },
            "schemas": {
                **_value_schemas(),
                "ScanRequest": _scan_request(cfg),
                **_deploy_requests(),
                **_admin_requests(),
                **_view_schemas(),
            },
            "responses": error_responses(cfg),
            "headers": _headers(),
        },
    }


@bp.get("/openapi.json")
@requires(PUBLIC)
def openapi() -> Any:
    return jsonify(spec(config()))
