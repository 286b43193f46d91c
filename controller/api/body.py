"""Body and query parsing: a view declares its request models, and receives them validated.

A thin decorator over Pydantic's own validation (not apiflask, spectree or flask-openapi3): those bring their
own error bodies, their own JSON parsing and their own documentation routes, and the API keeps its strict JSON
(no NaN, no duplicate keys, bounded nesting), its `{"error", "field"}` 400 and its request gate. The models
are plain Pydantic, so the OpenAPI document is generated from them (controller.api.openapi) all the same.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from flask import jsonify, request

from controller.api.context import config
from controller.errors import ValidationError
from controller.schemas.base import Response

View = TypeVar("View", bound=Callable[..., Any])


class Parser(Protocol):
    @classmethod
    def parse(cls, data: Any, **context: Any) -> Any: ...


@dataclass
class Doc:
    """What the OpenAPI document says of a view besides its models."""

    operation_id: str
    tag: str
    summary: str
    responses: dict[int, Any]  # status -> a Response model, a list of alternatives, or a media-type dict
    description: str = ""
    errors: dict[int, str | None] = field(default_factory=dict)
    body: Any = None
    query: Any = None
    # A body that is not a JSON model (a file sent as is): (description, media-type dict), as a response's.
    request: tuple[str, dict[str, Any]] | None = None
    path: dict[str, dict[str, Any]] = field(default_factory=dict)  # a path parameter's schema, where not any segment


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers could read a duplicated key differently; refuse it instead of picking one.
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate[:64]!r}")
    return body


def json_object() -> dict[str, Any]:
    """The request's JSON body, which must be one object of strict JSON (no NaN, no duplicate keys)."""
    if not request.is_json:
        raise ValidationError("send a JSON object with Content-Type: application/json", field="body")
    try:
        body = json.loads(request.get_data(cache=True), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValidationError("the request body is nested too deeply", field="body") from None
    except ValueError as exc:
        raise ValidationError(f"the request body is not valid JSON: {str(exc)[:200]}", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", field="body")
    return body


def _doc(view: Any) -> Doc:
    doc: Doc | None = getattr(view, "_cloudx_doc", None)
    if doc is None:
        raise TypeError(f"{view.__name__}: put @doc(...) below @body/@query")
    return doc


def body(model: type[Parser]) -> Callable[[View], View]:
    """Validate the JSON body into `model` and pass it to the view as `body`."""

    def wrap(view: View) -> View:
        _doc(view).body = model

        @functools.wraps(view)
        def validated(*args: Any, **kwargs: Any) -> Any:
            return view(*args, body=model.parse(json_object(), config=config()), **kwargs)

        return validated  # type: ignore[return-value]

    return wrap


def query(model: type[Parser]) -> Callable[[View], View]:
    """Validate the query string into `model` and pass it to the view as `query`."""

    def wrap(view: View) -> View:
        _doc(view).query = model

        @functools.wraps(view)
        def validated(*args: Any, **kwargs: Any) -> Any:
            return view(*args, query=model.parse(request.args.to_dict(), config=config()), **kwargs)

        return validated  # type: ignore[return-value]

    return wrap


def doc(operation_id: str, tag: str, summary: str, responses: dict[int, Any], **more: Any) -> Callable[[View], View]:
    """The view's operation in the OpenAPI document (its role comes from @requires, its models from @body/@query)."""

    def mark(view: View) -> View:
        view._cloudx_doc = Doc(operation_id, tag, summary, responses, **more)  # type: ignore[attr-defined]
        return view

    return mark


def reply(model: type[Response], source: Any, status: int = 200) -> Any:
    """The view's answer: `source` (an ORM object, a row or a mapping) as `model`."""
    return jsonify(model.dump(source)), status
