"""schemathesis against the served /openapi.json: no 5xx, and only documented statuses."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.app.conftest import AUTH

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@pytest.fixture
def served_schema(server, clean):
    return schemathesis.from_uri(server.url + "/openapi.json", base_url=server.url)


schema = schemathesis.from_pytest_fixture("served_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_honours_its_contract(case):
    # With the token, generated writes reach validation and storage, not just the 401 path.
    case.call_and_validate(headers=AUTH, checks=CHECKS)


@schema.include(path_regex="^/api/v1/alerts").parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_a_wrong_token_only_answers_documented_statuses(case):
    # schemathesis would otherwise invent raw header bytes that uvicorn's HTTP parser
    # rejects before the app runs; a well-formed wrong token exercises the app's 401 path.
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.call_and_validate(headers={"Authorization": "Bearer wrong-token-0000000000"},
                           checks=CHECKS)
