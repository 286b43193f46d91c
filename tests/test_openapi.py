"""The OpenAPI description: served without a token, a valid OpenAPI 3.1 document, and in step with the app's routes and roles."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

from controller.api import PUBLIC

METHODS = {"get", "put", "post", "delete", "patch"}


def anonymous(app: Flask) -> FlaskClient:
    """A client that sends no Authorization header (the app's own test client may send a token)."""
    return FlaskClient(app, app.response_class)


@pytest.fixture
def document(app: Flask) -> dict[str, Any]:
    response = anonymous(app).get("/api/openapi.json")
    assert "HTTP_AUTHORIZATION" not in response.request.environ
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.is_json
    return response.get_json()


def app_routes(app: Flask) -> dict[tuple[str, str], str]:
    """(OpenAPI path, method) -> endpoint, for every route the app registers (but the dashboard's HTML pages)."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("web."):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes[(path, method.lower())] = rule.endpoint
    return routes


def spec_operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def schemas_in(node: Any) -> Iterator[Any]:
    """Every JSON Schema the document holds (components and inline), however deep."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema":
                yield value
            elif key == "schemas" and isinstance(value, dict):
                yield from value.values()
            yield from schemas_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from schemas_in(value)


def test_document_is_valid_openapi_31(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    operations = [result.ok() for result in schema.get_all_operations()]  # raises on an operation that does not resolve
    assert len(operations) == sum(1 for _ in spec_operations(document))
    for item in schemas_in(document):
        Draft202012Validator.check_schema(item)
    ids = [op["operationId"] for _, _, op in spec_operations(document)]
    assert len(ids) == len(set(ids))


def test_every_route_is_described_and_nothing_else(app: Flask, document: dict[str, Any]) -> None:
    routes = set(app_routes(app))
    described = {(path, method) for path, method, _ in spec_operations(document)}
    assert routes - described == set(), "routes missing from the spec"
    assert described - routes == set(), "stale operations in the spec"
    assert [server["url"] for server in document["servers"]] == ["/"]  # paths carry /api: a base URL is enough


def test_roles_and_security_match_the_views(app: Flask, document: dict[str, Any]) -> None:
    routes = app_routes(app)
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearer": []}]
    for path, method, op in spec_operations(document):
        role = getattr(app.view_functions[routes[(path, method)]], "_cloudx_role", "admin")
        assert op["x-required-role"] == role, (method, path)
        assert f"`{role}`" in op["description"] or role == PUBLIC, (method, path)
        if role == PUBLIC:
            assert op["security"] == [], (method, path)
            assert "401" not in op["responses"], (method, path)
        else:
            assert op.get("security", document["security"]) == [{"bearer": []}], (method, path)
            assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_public_routes_need_no_token(app: Flask, document: dict[str, Any]) -> None:
    client = anonymous(app)
    for path, method, op in spec_operations(document):
        if op["x-required-role"] == PUBLIC:
            assert client.open(path, method=method.upper()).status_code == 200, path
        elif "{" not in path and method == "get":
            response = client.get(path)
            assert response.status_code == 401, path
            assert "WWW-Authenticate" in response.headers
