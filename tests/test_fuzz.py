"""Property-based fuzzing (schemathesis) of the served API from its own OpenAPI description: no 5xx.

The service runs with no executor and no scope, so whatever the fuzzer gets accepted is only queued:
nothing is scanned, deployed or resolved. Changing the policy is left out for the same reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from controller.store.sealing import keygen
from tests.support.service import Service

pytestmark = pytest.mark.integration


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


def test_api_never_answers_5xx(fuzz_service: Service) -> None:
    """Every operation, 25 valid and 25 invalid generated requests each, with an admin token."""
    schema = schemathesis.openapi.from_url(f"{fuzz_service.url}/openapi.json")
    # Changing the policy could put fuzzed addresses in scope; revoking could revoke the fuzzer's own token.
    schema = schema.exclude(method="PUT", path="/api/policy").exclude(method="DELETE", path="/api/tokens/{name}")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    calls = 0
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
        def call(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(
                base_url=fuzz_service.url.removesuffix("/api"),
                headers={"Authorization": f"Bearer {fuzz_service.token}"},
                checks=[not_a_server_error, response_schema_conformance],
                timeout=60,
            )

        try:
            call()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid form.
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert calls > 20 * len(operations)
    served = (fuzz_service.tmp_path / "serve.log").read_text(errors="replace")
    assert served.count("cloudx.api:") >= calls
