"""Forms: what a form sent, as the API's models take it, and a refusal's message placed next to its field."""

from __future__ import annotations

from flask import request

from controller.errors import ApiError

FORM_ERROR = "_form"  # a refusal not about one field (scope, quota, a conflict): shown above the form


def form_data(fields: tuple[str, ...]) -> dict[str, str]:
    """The form's fields, stripped (a number field sends text: the models take numeric strings where they take numbers)."""
    return {name: request.form.get(name, "").strip() for name in fields}


def refused(exc: ApiError, fields: tuple[str, ...]) -> dict[str, str]:
    """The API's message, keyed by the form field it names (its own field name, or its first part: request.ports)."""
    field = (getattr(exc, "field", None) or "").split(".")[-1]
    return {field if field in fields else FORM_ERROR: exc.message}
