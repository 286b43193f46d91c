"""Assets: the hosts the stored scans have seen, over time."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from controller.api.auth import requires
from controller.api.body import doc, query, reply
from controller.api.context import session
from controller.schemas.assets import AssetDetail, AssetPage, AssetQuery
from controller.services.assets import assets_page, get_asset

bp = Blueprint("assets", __name__)


@bp.get("/assets")
@requires("viewer")
@query(AssetQuery)
@doc(
    "list_assets",
    "assets",
    "Assets, in address order",
    {200: AssetPage},
    errors={400: "A filter, limit or cursor is not valid."},
    description="Every host a stored scan reported, with its open ports now. Keyset pages: pass next_cursor as cursor.",
)
def list_assets(query: AssetQuery) -> Any:
    with session() as s:
        # The hot path: views built by hand (services.assets.assets_page), encoded without a model.
        assets, next_cursor = assets_page(s, query.limit, query.cursor, query.network, query.port, query.service, query.since)
        return jsonify({"assets": assets, "next_cursor": next_cursor})


@bp.get("/assets/<address>")
@requires("viewer")
@doc(
    "get_asset",
    "assets",
    "One asset: its ports, their history and the scans that saw it",
    {200: AssetDetail},
    errors={400: "address is not an IP address.", 404: "No asset with this address."},
    path={"address": {"type": "string", "format": "cloudx-address", "minLength": 2, "maxLength": 64}},
)
def asset(address: str) -> Any:
    with session() as s:
        return reply(AssetDetail, get_asset(s, address))
