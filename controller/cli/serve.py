"""`cloudx serve` (the API, with its executor) and `cloudx worker` (a Celery worker)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from controller.cli.context import LOG_LEVELS, Context, cli, pass_ctx
from controller.config import Config
from controller.store.database import Database

# `cloudx serve` (waitress): connections that never finish a request must not keep other clients out.
SERVE_USE_POLL = True  # poll(), not select(): select() cannot watch file descriptors above FD_SETSIZE (1024)
SERVE_CONNECTION_LIMIT = 4096  # open connections per process before waitress stops accepting (its 100 fell to 105 idle sockets)
SERVE_CHANNEL_TIMEOUT = 20  # seconds a connection without a running request may send nothing before it is closed (waitress: 120)
SERVE_CLEANUP_INTERVAL = 5  # seconds between waitress's sweeps for such connections (its 30 would let them stay 150 s)
SERVE_BACKLOG = 1024  # connections the kernel queues until waitress accepts them
SERVE_FD_RESERVE = 256  # file descriptors kept out of the connection limit: database, logs, job processes and their pipes


@cli.command()
@click.option("--host", help="Address to listen on (default CLOUDX_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port (default CLOUDX_PORT or 5001).")
@click.option("--threads", type=int, default=8, show_default=True, help="Request threads per process.")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True, help="API processes sharing the port.")
def serve(host: str | None, port: int | None, threads: int, processes: int) -> None:
    """Run the API and the job executor."""
    import socket

    # One line per request (request id first) and per job event worth noting, on stderr (FLASK_DEBUG: and debug lines).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    host, port = host or config.HOST, port or config.PORT
    if config.FLASK_DEBUG:
        _serve_debug(config, host, port, processes)
        return
    try:
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=SERVE_BACKLOG)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    click.echo(f"cloudx: serving on http://{host}:{port} (database {config.database_shown})", err=True)
    with _metrics_directory():
        if processes == 1:
            _serve_process(config, listener, threads)
            return
        _serve_processes(config, listener, threads, processes)


@contextlib.contextmanager
def _metrics_directory() -> Any:
    """prometheus-client's multiprocess directory, shared by the API processes (GET /metrics reports them all):
    PROMETHEUS_MULTIPROC_DIR if set (emptied first, as its documentation asks), else a new one, removed at the end."""
    import shutil
    import tempfile

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="cloudx-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(directory, ignore_errors=True)


def _serve_processes(config: Config, listener: Any, threads: int, processes: int) -> None:
    # Python spends the CPU of a request under one GIL: more processes on one port use more cores. Each runs
    # its own executor; claims are atomic across processes, and a job with credentials runs only in the
    # process that received them.
    database = Database(config.DATABASE_URL, config.DB_BUSY_TIMEOUT)
    database.upgrade()  # once, before the processes start (they would race to create the schema)
    database.dispose()
    children = []
    supervisor = os.getpid()
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                # A supervisor killed outright (SIGKILL, OOM) must not leave API processes holding the port.
                from controller.queue.launch import PR_SET_PDEATHSIG, prctl

                prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
                if os.getppid() != supervisor:  # it died before the line above
                    return
                _serve_process(config, listener, threads)
            except BaseException:
                logging.getLogger("cloudx").exception("API process failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    listener.close()
    _supervise(children)


def _not_served(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The application of the reloader's watching process, which never serves (its child does)."""
    raise RuntimeError("the reloader's parent process does not serve requests")


def _serve_debug(config: Config, host: str, port: int, processes: int) -> None:
    """FLASK_DEBUG, for development: Werkzeug's server in one process, restarted when a source file changes.
    Its interactive debugger runs code for whoever reaches it, so it runs on a loopback address only."""
    from werkzeug.serving import is_running_from_reloader, run_simple

    from controller.app import create_app, debugger_allowed, start_executor, stop_executor

    debugger = debugger_allowed(config, host)
    options: dict[str, Any] = {"use_reloader": True, "use_debugger": debugger, "threaded": True}
    if not is_running_from_reloader():  # the watching process: it says how it serves, then starts the child
        if processes > 1:
            click.echo("cloudx: FLASK_DEBUG serves in one process: --processes is ignored", err=True)
        if not debugger:
            click.echo(
                f"cloudx: FLASK_DEBUG: {host} is not a loopback address, so the interactive debugger is off "
                "(debug logging and the reloader are on)",
                err=True,
            )
        click.echo(f"cloudx: FLASK_DEBUG: development server on http://{host}:{port} (database {config.database_shown})", err=True)
        try:
            run_simple(host, port, _not_served, **options)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        return
    app = create_app(config)
    start_executor(app)
    try:
        run_simple(host, port, app, **options)
    finally:  # the reloader ends this process (SystemExit) when a file changes; Ctrl-C too
        stop_executor(app)


def _serve_process(config: Config, listener: Any, threads: int) -> None:
    import resource

    import waitress

    from controller.app import create_app, start_executor, stop_executor

    # Every open connection is a file descriptor: take the soft limit up to the hard one, and keep the
    # connection limit below it (accept() failing with EMFILE would leave waitress spinning on the listener).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else SERVE_CONNECTION_LIMIT + SERVE_FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            logging.getLogger("cloudx").warning("cannot raise the open files limit from %d to %d: %s", soft, wanted, exc)
    connection_limit = SERVE_CONNECTION_LIMIT
    if soft != resource.RLIM_INFINITY and soft - SERVE_FD_RESERVE < connection_limit:
        connection_limit = max(16, soft - SERVE_FD_RESERVE)
        logging.getLogger("cloudx").warning(
            "open files limit %d: at most %d connections per process (raise `ulimit -n` for %d)",
            soft,
            connection_limit,
            SERVE_CONNECTION_LIMIT,
        )
    app = create_app(config)
    start_executor(app)

    def shutdown(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    try:
        waitress.serve(app, **waitress_options(config, listener, threads, connection_limit))
    except KeyboardInterrupt:
        pass
    finally:
        stop_executor(app)


def waitress_options(config: Config, listener: Any, threads: int, connection_limit: int) -> dict[str, Any]:
    """What `cloudx serve` runs waitress with. Its body limit is the largest the app takes (an import's,
    CLOUDX_IMPORT_MAX_BYTES, or the JSON bodies' cap): waitress's own default (1 GiB) would refuse a larger import,
    and a smaller limit stops waitress buffering more than the app will read."""
    return {
        "sockets": [listener],
        # Live streams hold a thread each for as long as they are open: they get threads of their own.
        "threads": threads + config.STREAM_MAX,
        "ident": "cloudx",
        "asyncore_use_poll": SERVE_USE_POLL,
        "connection_limit": connection_limit,
        "channel_timeout": SERVE_CHANNEL_TIMEOUT,
        "cleanup_interval": SERVE_CLEANUP_INTERVAL,
        "backlog": SERVE_BACKLOG,
        "max_request_body_size": max(config.MAX_CONTENT_LENGTH, config.IMPORT_MAX_BYTES),
        # Waitress reads ahead on a connection while its request runs, and so sees a live stream's client go away
        # (waitress.client_disconnected): its slot comes back at once, not at its next failed write.
        "channel_request_lookahead": 1,
        # Behind a TLS proxy: the request's scheme (and so the session cookie's Secure flag) from X-Forwarded-Proto.
        **(
            {"trusted_proxy": config.TRUSTED_PROXY, "trusted_proxy_headers": {"x-forwarded-proto", "x-forwarded-for"}}
            if config.TRUSTED_PROXY
            else {}
        ),
    }


def _supervise(children: list[int]) -> None:
    """Wait for the API processes; SIGTERM or SIGINT, or one of them ending, stops them all."""
    stopping = threading.Event()

    def stop(*_: Any) -> None:
        stopping.set()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = False
    remaining = set(children)
    while remaining:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        if not stopping.is_set():
            failed = True
            logging.getLogger("cloudx").error("API process %d ended (status %d): stopping the others", pid, status)
            stop()
    if failed:
        sys.exit(1)


@cli.command()
@click.option("--name", default="cloudx@%h", show_default=True, help="Worker name, unique in the cluster (%h: this host's name).")
@click.option("--queues", "-Q", help="Comma-separated queues (default: CLOUDX_CELERY_QUEUE and CLOUDX_CELERY_SCAN_QUEUE).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 256), help="Jobs run at once (default CLOUDX_MAX_CONCURRENT_JOBS).")
@click.option("--loglevel", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO", show_default=True)
@pass_ctx
def worker(ctx: Context, name: str, queues: str | None, concurrency: int | None, loglevel: str) -> None:
    """Run jobs sent through Celery (CLOUDX_EXECUTOR=celery on the API; CELERY_BROKER_URL, DATABASE_URL here)."""
    from controller.queue.celery_executor import QUEUE_NAME, Worker

    config = ctx.config
    names = (queues or f"{config.CELERY_QUEUE},{config.CELERY_SCAN_QUEUE}").split(",")
    bad = [q for q in names if not QUEUE_NAME.fullmatch(q)]
    if bad:
        raise click.ClickException(f"queue name {bad[0]!r} is not valid: letters, digits, _ . - (at most 64)")
    if not re.fullmatch(r"[A-Za-z0-9_.%-]{1,64}@[A-Za-z0-9_.%-]{1,253}", name):
        raise click.ClickException(f"worker name {name!r} is not valid: NAME@HOST (letters, digits, _ . -; %h for this host)")
    from sqlalchemy.exc import OperationalError

    # Workers never open stored credentials (the API does, and hands them over sealed): a shared .env's
    # CLOUDX_CREDENTIALS_KEY is not kept in this process.
    worker = Worker(config.model_copy(update={"CREDENTIALS_KEY": ""}))
    try:
        worker.db.upgrade()
    except OperationalError as exc:
        raise click.ClickException(f"cannot reach the database at {config.database_shown}: {exc.orig}") from None
    worker.main(name, sorted(set(names), key=names.index), concurrency or config.MAX_CONCURRENT_JOBS, loglevel.upper())
