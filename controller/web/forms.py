"""Forms: what a form sent, as the API's models take it, and a refusal's message placed next to its field."""

from __future__ import annotations

from typing import Any

from flask import g, request

from controller.api.context import config
from controller.errors import ApiError, ValidationError
from controller.schemas.base import Query
from controller.schemas.deployments import PASTED_SECRETS
from controller.schemas.types import QUERY_DIGITS

FORM_ERROR = "_form"  # a refusal not about one field (scope, quota, a conflict): shown above the form


# Fields whose value is a secret: sent exactly as typed (a password may begin or end with a space; the API keeps it).
SECRET_FIELDS = frozenset((*PASTED_SECRETS, "secret", "token"))


def form_data(fields: tuple[str, ...]) -> dict[str, str]:
    """The form's fields, stripped of surrounding spaces (but secrets, kept as typed)."""
    return {name: request.form.get(name, "") if name in SECRET_FIELDS else request.form.get(name, "").strip() for name in fields}


def refused(exc: ApiError, fields: tuple[str, ...]) -> dict[str, str]:
    """The API's message, keyed by the form field it names (its own field name, or its first part: request.ports)."""
    g.error = exc.message  # the audit entry of the request says why it was refused
    field = (getattr(exc, "field", None) or "").split(".")[-1]
    return {field if field in fields else FORM_ERROR: exc.message}


def number(text: str) -> int | str:
    """A number field's text as the JSON number it stands for; other text as is (the model refuses it, naming the field)."""
    return int(text) if QUERY_DIGITS.fullmatch(text) else text


def submitted(given: dict[str, str], required: tuple[str, ...] = (), numbers: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a model is given of a form: the fields filled in (and the required ones, so the model names them), and
    digits as the number they spell (the models are strict; anything else goes as typed, for the model's message)."""
    return {k: number(v) if k in numbers else v for k, v in given.items() if v != "" or k in required}


def parsed_query(model: type[Query], defaults: dict[str, str] | None = None, ignored: tuple[str, ...] = ()) -> tuple[Any, str | None]:
    """The page's query string (but the `ignored` parameters) as the API's model reads it; a bad one is shown, with the
    first page instead."""
    given = {k: v for k, v in request.args.items() if k not in ignored and v != ""}  # a GET form sends its empty fields
    try:
        return model.parse({**(defaults or {}), **given}, config=config()), None
    except ValidationError as exc:
        g.query_refused = exc.message  # the page says so with a 400 (pages.page), as the API would
        return model.parse(defaults or {}, config=config()), exc.message
