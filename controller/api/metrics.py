"""GET /metrics: Prometheus metrics of jobs, events, scans, schedules and the API's requests (services.metrics)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from controller.api.auth import requires
from controller.api.body import doc
from controller.api.context import db
from controller.services.metrics import CONTENT_TYPE, DatabaseCollector, exposition

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@requires("viewer")
@doc(
    "metrics",
    "system",
    "Prometheus metrics",
    {200: ("Prometheus text format 0.0.4.", {"text/plain": {"schema": {"type": "string"}}})},
    description="Jobs by kind and status, job duration and start and first-event latency (histograms), events stored, event "
    "batch latency, scans by tool, schedule runs and missed runs, and API requests by route and status with their latency. "
    "The same figures from every API process (`cloudx serve --processes N`) and with either executor. Scrape with a viewer token.",
)
def metrics() -> Any:
    collector = current_app.extensions.get("cloudx.metrics")
    if collector is None:
        collector = current_app.extensions.setdefault("cloudx.metrics", DatabaseCollector(db()))
    return Response(exposition(collector), content_type=CONTENT_TYPE)
