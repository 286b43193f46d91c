"""Every request body, query string and response of the API, declared once (Pydantic v2).

Validation, the error `{"error", "field"}`, the OpenAPI document (controller.api.openapi generates it from
these models and the routes) and the CLI's payloads all come from here. This layer knows the scanner role's
rules (controller.scanlib), the configuration, the errors and the principal; nothing of the database.
"""

from controller.schemas.base import Query, Request, Response, api_error

__all__ = ["Query", "Request", "Response", "api_error"]
