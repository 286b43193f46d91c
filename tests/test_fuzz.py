"""Property-based fuzzing (schemathesis) of the served API from its own OpenAPI description.

Every operation gets valid and invalid generated requests, with an admin token, and three promises are checked:
no 5xx (not_a_server_error), a request the document allows is accepted (positive_data_acceptance) and one it
forbids is refused (negative_data_rejection); responses must match the document too.

The service runs with no executor and no scope, so whatever the fuzzer gets accepted is only queued: nothing is
scanned, deployed, pinged or resolved (the scope check refuses with 403 before any of that). Changing the policy
is left out for the same reason, and revoking tokens because the fuzzer could revoke its own.

The cloudx-* formats are drawn from tests/support/fuzz_formats.py: values the API's own rules accept. Valid data
may still be refused for state the document cannot express (see EXPECTED and STATE_REFUSALS); a 400 for a valid
body is schema drift and fails.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core import NotSet
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance, response_schema_conformance

from controller.store.sealing import keygen
from tests.support import fuzz_formats
from tests.support.service import Service

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 30
# Valid data refused for state the document cannot express: a job, token, credential, host key or script that
# does not exist (404), the scope policy (403: this service has none), a name that is taken or a job that is
# already over (409), the job queue (429). Each operation allows only those of these its document lists.
STATE_STATUSES = {403, 404, 409, 429}
# Invalid data is refused as such: 400, or 413 for a body over the limit; 404 or 405 when the path itself is what
# is invalid (no such route). Never 2xx, nor 403: that means the body passed validation.
REJECTIONS = ["400", "413"]
PATH_REJECTIONS = ["404", "405"]
# The few 400s that valid data does get, narrowly: (method, path, field, start of the error). Each depends on
# state no schema can express. Anything else that answers 400 to valid data is drift.
STATE_REFUSALS = [
    # A stored credential is named by the request; whether one of that name exists is the database's business.
    ("POST", "/api/deploy/agent", "credential", "no stored credential "),
    ("POST", "/api/deployments", "credential", "no stored credential "),
    # Which hosts an inventory pattern matches is the inventory's business (the fuzzer's patterns match none).
    ("POST", "/api/deployments", "limit", "no inventory host matches "),
    # known_hosts may name only hosts the deployment reaches: the hosts of an inventory pattern are not in the
    # request (checked after the scope, so only with a scope policy).
    ("POST", "/api/deployments", "known_hosts", "known_hosts line for "),
    # A schedule's request is checked as its POST would be: the same state-dependent refusals, named request.<field>.
    ("POST", "/api/schedules", "request.credential", "no stored credential "),
    ("POST", "/api/schedules", "request.limit", "no inventory host matches "),
    ("POST", "/api/schedules", "request.known_hosts", "known_hosts line for "),
    # Which webhook URLs may be plain http or reach non-public addresses is CLOUDX_WEBHOOK_ALLOW's business.
    ("POST", "/api/webhooks", "url", "url refused: "),
    # The cursor is opaque: only next_cursor of an earlier page is one.
    ("GET", "/api/jobs", "cursor", "cursor is not valid"),
]


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service(
        tmp_path_factory.mktemp("fuzz"), scope=(), CLOUDX_EXECUTOR_ENABLED="0", CLOUDX_CREDENTIALS_KEY=keygen(), CLOUDX_MAX_QUEUED_JOBS="0"
    )
    service.start()
    yield service
    service.stop()
    log = (service.tmp_path / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


def _config(document: dict[str, Any]) -> SchemathesisConfig:
    """Expected statuses per operation, from the statuses its own document lists."""
    operations = []
    for path, methods in document["paths"].items():
        for op in methods.values():
            documented = {int(status) for status in op["responses"] if status.isdigit()}
            accepted = ["2xx", *(str(s) for s in sorted(documented & STATE_STATUSES))]
            rejected = REJECTIONS + (PATH_REJECTIONS if "{" in path else [])
            checks = {
                "positive_data_acceptance": {"expected-statuses": accepted},
                "negative_data_rejection": {"expected-statuses": rejected},
            }
            operations.append({"include-operation-id": op["operationId"], "checks": checks})
    # Authentication is not what is fuzzed here (tests/test_auth.py): every request carries the admin token.
    return SchemathesisConfig.from_dict({"generation": {"with-security-parameters": False}, "operations": operations})


class Oracle:
    """Whether a generated request is valid by the document, with the cloudx-* formats checked by the API's rules.

    schemathesis labels a request positive or negative by how it drew it; with formats it cannot check (it takes
    every custom format as violated when it drops one) and a oneOf whose branches name different formats, a label
    can be wrong. The checks below judge by this oracle instead of the label where the two disagree.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.counts: Counter[str] = Counter()
        self._validators: dict[tuple[str, str, str], Any] = {}

    def _validator(self, case: schemathesis.Case, where: str, schema: dict[str, Any]) -> Any:
        key = (case.operation.method, case.operation.path, where)
        if key not in self._validators:
            self._validators[key] = fuzz_formats.validator_for(self.document, schema)
        return self._validators[key]

    def _check(self, case: schemathesis.Case, where: str, schema: dict[str, Any], value: Any) -> bool:
        if isinstance(value, bytes):  # raw bytes (schemathesis's syntax fuzzing): valid only as JSON text
            try:
                value = json.loads(value)
            except ValueError:
                return False
        try:
            return bool(self._validator(case, where, schema).is_valid(value))
        except ValueError:  # not a JSON value at all
            return False

    def valid(self, case: schemathesis.Case) -> bool | None:
        """True or False for a body or parameters in cloudx-* formats (None: nothing for the oracle to judge)."""
        op = self.document["paths"][case.operation.path][case.operation.method.lower()]
        verdicts: list[bool] = []
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if schema is not None and not isinstance(case.body, NotSet):
            verdicts.append(self._check(case, "body", schema, case.body))
        for param in op.get("parameters", []):
            if "cloudx-" not in json.dumps(param["schema"]):
                continue
            values = {"query": case.query, "path": case.path_parameters}.get(param["in"]) or {}
            if param["name"] in values:
                verdicts.append(self._check(case, param["name"], param["schema"], values[param["name"]]))
        return all(verdicts) if verdicts else None


# A scan request's errors name ports when the value was given as port.
ALIASES = {"ports": "port"}


def _value(case: schemathesis.Case, field: str) -> Any:
    """The value a field names; a field of a nested object (request.ports of a schedule) is looked up in it, under
    the name it was given (port for ports)."""
    head, _, rest = field.partition(".")
    for values in (case.body, case.query, case.path_parameters):
        if isinstance(values, dict) and head in values:
            value = values[head]
            if rest and isinstance(value, dict):
                return value.get(rest, value.get(ALIASES.get(rest, rest)))
            return value
    return None


def _integral_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, list):
        return any(_integral_float(item) for item in value)
    return isinstance(value, dict) and any(_integral_float(item) for item in value.values())


def _error(response: Response) -> tuple[str, str]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return "", ""
    return (str(body.get("field")), str(body.get("error"))) if isinstance(body, dict) else ("", "")


class Fuzzer:
    """Runs the generated requests of one operation and mode, and keeps every distinct failure with the first request
    that showed it: the search goes on after a failure, so one run reports all of an operation's drift."""

    def __init__(self, service: Service, document: dict[str, Any]) -> None:
        self.service = service
        self.oracle = Oracle(document)
        self.counts = self.oracle.counts
        self.failures: dict[tuple[str, ...], str] = {}
        self.calls = 0

    def accepts_valid_data(self, ctx: CheckContext, response: Response, case: schemathesis.Case) -> bool | None:
        """positive_data_acceptance, for data that is valid (the oracle's word), less STATE_REFUSALS."""
        if not case.meta or not case.meta.generation.mode.is_positive:
            return None
        if self.oracle.valid(case) is False:
            self.counts["positive label, invalid by the formats"] += 1
            return None
        field, error = _error(response)
        method, path = case.operation.method.upper(), case.operation.path
        if response.status_code == 400 and any(
            (method, path, field) == refusal[:3] and error.startswith(refusal[3]) for refusal in STATE_REFUSALS
        ):
            self.counts[f"400 for state: {method} {path} {field}"] += 1
            return None
        if response.status_code == 400 and _integral_float(_value(case, field)):
            # JSON Schema counts 5.0 as an integer; the API's strict models (the "strict types") refuse it,
            # and no JSON Schema keyword tells 5.0 from 5. Only this field of this request is let through.
            self.counts["400 for an integral float"] += 1
            return None
        self.counts["valid"] += 1
        return positive_data_acceptance(ctx, response, case)

    def refuses_invalid_data(self, ctx: CheckContext, response: Response, case: schemathesis.Case) -> bool | None:
        """negative_data_rejection, for data that is invalid (the oracle's word where it has one)."""
        if not case.meta or not case.meta.generation.mode.is_negative:
            return None
        if self.oracle.valid(case) is True:
            self.counts["negative label, valid by the formats"] += 1
            return None
        self.counts["invalid"] += 1
        return negative_data_rejection(ctx, response, case)

    def run(self, operation: Any, mode: GenerationMode) -> None:
        checks = (not_a_server_error, response_schema_conformance, self.accepts_valid_data, self.refuses_invalid_data)

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],  # nothing raises, so nothing to shrink
        )
        def call(case: schemathesis.Case) -> None:
            self.calls += 1
            response = case.call(
                base_url=self.service.url.removesuffix("/api"), headers={"Authorization": f"Bearer {self.service.token}"}, timeout=60
            )
            for check in checks:
                try:
                    case.validate_response(response, checks=[check])
                except (Failure, FailureGroup) as exc:
                    found = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
                    self.failures.setdefault(_key(case, mode, check.__name__, response, found), _describe(found, case, response))

        try:
            call()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid form.
            assert mode is GenerationMode.NEGATIVE, operation.label

    def report(self) -> str:
        return "\n".join(f"{' | '.join(key)}:\n    {text}" for key, text in sorted(self.failures.items()))


def _key(case: schemathesis.Case, mode: GenerationMode, check: str, response: Response, found: tuple[Failure, ...]) -> tuple[str, ...]:
    """What makes a failure distinct: for a response that breaks the document, its status and what breaks; for
    a request judged otherwise than the document, the mode, the field the error names and the error's gist."""
    status = str(response.status_code)
    if check == "response_schema_conformance":
        return (case.operation.label, check, status, found[0].message.split("\n", 1)[0][:80])
    field, error = _error(response)
    return (case.operation.label, check, mode.value, status, field, error.split("'", 1)[0].split(":", 1)[0][:60])


def _describe(found: tuple[Failure, ...], case: schemathesis.Case, response: Response) -> str:
    request = {"query": case.query, "path": case.path_parameters, "body": case.body}
    sent = {k: v for k, v in request.items() if v and not isinstance(v, NotSet)}
    lines = [f"{f.title}: {' '.join(f.message.split())[:200]}" for f in found]
    lines.append("request: " + json.dumps(sent, default=repr)[:500])
    lines.append(f"response: {response.status_code} {response.content.decode(errors='replace')[:240]}")
    return "\n    ".join(lines)


def test_api_answers_as_documented(fuzz_service: Service) -> None:
    """Every operation, MAX_EXAMPLES valid and MAX_EXAMPLES invalid generated requests each."""
    fuzz_formats.register()
    document = requests.get(f"{fuzz_service.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document, config=_config(document))
    # Changing the policy could put fuzzed addresses in scope; revoking could revoke the fuzzer's own token.
    schema = schema.exclude(method="PUT", path="/api/policy").exclude(method="DELETE", path="/api/tokens/{name}")
    # A stream of every job's changes never ends (tests/test_streams.py follows it).
    schema = schema.exclude(method="GET", path="/api/stream")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    fuzzer = Fuzzer(fuzz_service, document)
    for operation, mode in itertools.product(operations, GenerationMode):
        fuzzer.run(operation, mode)
    assert not fuzzer.failures, f"{len(fuzzer.failures)} distinct failure(s); {dict(fuzzer.counts)}\n{fuzzer.report()}"
    assert fuzzer.calls > MAX_EXAMPLES * len(operations)
    # The checks judged real data, not only labels: many valid and many invalid requests each.
    assert fuzzer.counts["valid"] > 5 * len(operations) and fuzzer.counts["invalid"] > 5 * len(operations), fuzzer.counts
    served = (fuzz_service.tmp_path / "serve.log").read_text(errors="replace")
    assert served.count("cloudx.api:") >= fuzzer.calls
