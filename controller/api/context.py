"""What a request's code reaches through the app: configuration, database, executor and the caller."""

from __future__ import annotations

from typing import Any

from flask import current_app, g

from controller.config import Config
from controller.principal import Principal
from controller.queue.local import Executor
from controller.store.database import Database


def config() -> Config:
    return current_app.extensions["cloudx.config"]


def db() -> Database:
    return current_app.extensions["cloudx.db"]


def executor() -> Executor:
    return current_app.extensions["cloudx.executor"]


def principal() -> Principal:
    """The caller of this request (set by the gate)."""
    return g.principal


def session() -> Any:
    """A request's database session, committed when the block ends without error."""
    return db().session()
