"""Exports of a scan's stored results: the query string (controller.services.export writes the files)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.schemas.base import Query

ExportFormat = Literal["json", "jsonl", "csv"]
EXPORT_FORMATS: tuple[str, ...] = ExportFormat.__args__  # type: ignore[attr-defined]


class ExportQuery(Query):
    messages = {"format": f"format must be one of: {', '.join(EXPORT_FORMATS)}"}

    format: ExportFormat = Field(
        default="json",
        description="json: one document {scan, hosts}; jsonl: one host with its ports per line; csv: a header row, then one row "
        "per port (a host without ports has one row with empty port columns).",
    )
