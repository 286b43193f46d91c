"""The base classes of every request and response model, and the one translation of a model's errors.

Requests are strict (`"5"` is not an integer, `true` is not 1) and closed (unknown fields are refused and named);
the error is the API's own `{"error": ..., "field": ...}`: controller.errors.ValidationError, HTTP 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticError

from controller.errors import ValidationError


class Request(BaseModel):
    """A request body: strict types, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid")
    # The message for a field that is missing or of the wrong type (pydantic's own words otherwise).
    messages: ClassVar[dict[str, str]] = {}

    @classmethod
    def parse(cls, data: Any, **context: Any) -> Self:
        """The validated request, or ValidationError naming the field."""
        if not isinstance(data, Mapping):
            raise ValidationError("the request body must be a JSON object", field="body")
        if cls.model_config.get("extra") == "forbid" and (unknown := sorted(set(data) - set(cls.model_fields))):
            # Named here, not by pydantic: a key it cannot read as text (a lone surrogate) must still be named.
            raise ValidationError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
        try:
            return cls.model_validate(dict(data), context=context or None)
        except PydanticError as exc:
            raise api_error(exc, cls.messages) from None

    @classmethod
    def coerce(cls, data: Self | Mapping[str, Any], **context: Any) -> Self:
        """A model as is, or a mapping (the CLI's options) validated into one."""
        return data if isinstance(data, cls) else cls.parse(data, **context)


class Query(Request):
    """A query string: the same rules, but unknown parameters are ignored (as any HTTP server does)."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Response(BaseModel):
    """A response body, read from ORM objects or rows (from_attributes)."""

    model_config = ConfigDict(from_attributes=True)
    # Views dump the model, so every field is sent (null ones too) and the document marks them all required;
    # a body built by hand that leaves out what does not apply says False.
    sends_every_field: ClassVar[bool] = True

    @classmethod
    def dump(cls, source: Any) -> dict[str, Any]:
        """The JSON-ready view of an ORM object, a row or a mapping."""
        return cls.model_validate(source).model_dump(mode="json")


def api_error(exc: PydanticError, messages: Mapping[str, str]) -> ValidationError:
    """The first error of a model as the API's ValidationError; unknown fields first, all of them named."""
    errors = exc.errors(include_url=False)
    unknown = sorted({str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden"})
    if unknown:
        return ValidationError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    error = errors[0]
    field = str(error["loc"][0]) if error["loc"] else "body"
    if error["type"] == "value_error":
        cause = error.get("ctx", {}).get("error")
        field = getattr(cause, "field", None) or field
        return ValidationError(getattr(cause, "message", None) or messages.get(field) or str(cause), field=field)
    return ValidationError(messages.get(field) or f"{field}: {error['msg'].lower()}", field=field)
