"""Cloud-X controller: runs playbooks through ansible-runner and serves jobs, events and scans over HTTP."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from controller.config import Config
from controller.store.database import Database

if TYPE_CHECKING:
    from flask import Flask

    from controller.queue.local import Executor


def create_app(config: Config | None = None, **overrides: Any) -> Flask:
    """The application factory. Executors start with `start_executor` (the `serve` command does it)."""
    from flask import Flask  # here: job workers import this package and need no web framework

    config = config or Config.from_env(**overrides)
    app = Flask(__name__, static_folder=None)
    app.config.from_object(config)
    app.config["MAX_CONTENT_LENGTH"] = config.MAX_CONTENT_LENGTH
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["cloudx.config"] = config
    db = Database(config.DATABASE_URL, config.DB_BUSY_TIMEOUT)
    db.upgrade()
    app.extensions["cloudx.db"] = db
    from controller.queue.local import make_executor

    app.extensions["cloudx.executor"] = make_executor(config, db)

    from controller.api import init_app as init_api

    init_api(app)
    from controller.web import init_app as init_web

    init_web(app)
    # FLASK_DEBUG (development): the controller's debug lines too.
    logging.getLogger("cloudx").setLevel(logging.DEBUG if config.FLASK_DEBUG else logging.INFO)
    return app


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is reachable from this machine only (names other than localhost are not
    trusted to be: they may resolve elsewhere)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def debugger_allowed(config: Config, host: str) -> bool:
    """Werkzeug's interactive debugger runs code for whoever reaches it: only with FLASK_DEBUG, only on loopback."""
    return config.FLASK_DEBUG and is_loopback(host)


def start_executor(app: Flask) -> Executor:
    """Start the executor, and the scheduler that feeds it (unless switched off); stop both with stop_executor."""
    executor: Executor = app.extensions["cloudx.executor"]
    config: Config = app.extensions["cloudx.config"]
    if not config.EXECUTOR_ENABLED:
        logging.getLogger("cloudx").warning("CLOUDX_EXECUTOR_ENABLED is off: jobs are queued here but not run, nor schedules started")
        return executor
    executor.start()
    background = []
    if config.SCHEDULER_ENABLED:
        from controller.services.scheduler import Scheduler

        background.append(Scheduler(config, app.extensions["cloudx.db"], executor))
    from controller.services.webhook_sender import WebhookSender

    background.append(WebhookSender(config, app.extensions["cloudx.db"]))
    if config.RETENTION_DAYS > 0:
        from controller.services.retention import Pruner

        background.append(Pruner(config, app.extensions["cloudx.db"]))
    for service in background:
        service.start()
    app.extensions["cloudx.background"] = background
    return executor


def stop_executor(app: Flask) -> None:
    """Stop the background threads (scheduled runs first), then the executor (its running jobs record why they stopped)."""
    streams = app.extensions.get("cloudx.streams")
    if streams is not None:  # open streams end now, not after waitress's wait for their threads
        streams.shutdown()
    for service in app.extensions.pop("cloudx.background", []):
        service.shutdown()
    app.extensions["cloudx.executor"].shutdown()
