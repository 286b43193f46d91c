"""The webhook sender: a thread of each `cloudx serve` process that queues the events of ended jobs and delivers the
outbox (controller.services.webhooks claims each row once, whatever the number of processes).

A delivery checks the URL again, resolves the host once, checks every address it resolves to, and connects to a checked
address itself (no second lookup a rebinding DNS server could answer differently), with the URL's name as Host header,
TLS SNI and the name the certificate must match. Redirects are not followed; connect and read timeouts bound it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import logging
import os
import socket
import threading
import time
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError, SSLError

from controller.config import Config
from controller.errors import ApiError
from controller.services.background import Periodic
from controller.services.webhooks import (
    Address,
    Allow,
    Attempt,
    Claimed,
    Refused,
    Target,
    check_addresses,
    check_url,
    claim,
    literal,
    queue_ended_jobs,
    record,
    signing_secret,
)
from controller.store.database import Database
from controller.store.models import Webhook

log = logging.getLogger("cloudx.webhooks")

# Outbox rows one tick delivers at most (one at a time: a slow receiver holds up only this process's sender).
PER_TICK = 100
# What is read of a receiver's answer: its status is what counts.
ANSWER_BYTES = 65536
USER_AGENT = "cloudx-webhooks/1"


def resolve(host: str, port: int) -> list[Address]:
    """Every address the host resolves to, once (the addresses connected to are these, checked)."""
    found: list[Address] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """X-Cloudx-Signature: sha256=hex(HMAC-SHA256(secret, "<timestamp>.<body>"))."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def headers_for(claimed: Claimed, target: Target, secret: str | None, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(now if now is not None else time.time()))
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Cloudx-Event": claimed.event,
        "X-Cloudx-Delivery": claimed.id,
        "X-Cloudx-Attempt": str(claimed.attempt),
        "X-Cloudx-Timestamp": timestamp,
    }
    if secret is not None:
        headers["X-Cloudx-Signature"] = signature(secret, timestamp, body)
    return headers


# Addresses of one name tried at most, one connect timeout each: with the read timeout, they bound an attempt.
MAX_ADDRESSES = 3


def attempt_seconds(config: Config) -> float:
    """The longest one attempt may take, all of it (a receiver that answers a byte at a time is cut off at this)."""
    return MAX_ADDRESSES * config.WEBHOOK_CONNECT_TIMEOUT + config.WEBHOOK_READ_TIMEOUT


def _connection(target: Target, address: Address, config: Config) -> HTTPConnection:
    timeout = config.WEBHOOK_CONNECT_TIMEOUT  # the socket's until the request is sent; then the read timeout (_answer)
    if target.scheme == "https":
        # Connected to the checked address; the certificate must still be the URL's name's.
        return HTTPSConnection(
            str(address), target.port, timeout=timeout, server_hostname=target.host, assert_hostname=target.host, cert_reqs="CERT_REQUIRED"
        )
    return HTTPConnection(str(address), target.port, timeout=timeout)


def _cut(connection: HTTPConnection) -> None:
    """The watchdog: an attempt past its time has its socket shut, which ends whatever read or write waits on it."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def post(target: Target, addresses: list[Address], body: bytes, headers: dict[str, str], config: Config) -> Attempt:
    """POST the body to the first address that accepts a connection (all of them checked), within attempt_seconds."""
    started = time.perf_counter()
    deadline = started + attempt_seconds(config)
    error = "no address"
    for address in addresses[:MAX_ADDRESSES]:
        connection = _connection(target, address, config)
        watchdog = threading.Timer(max(0.0, deadline - time.perf_counter()), _cut, args=(connection,))
        watchdog.start()
        try:
            try:
                connection.request("POST", target.path, body=body, headers=headers)
            except (NewConnectionError, ConnectTimeoutError) as exc:
                error = f"could not connect to {address} port {target.port}: {_reason(exc)}"
                continue
            return _answer(connection, started, deadline, config)
        except SSLError as exc:
            return _failed(started, f"TLS: {_reason(exc)}")
        except (HTTPError, OSError, http.client.HTTPException) as exc:  # the last: an answer cut off or not HTTP
            if time.perf_counter() >= deadline:
                return _failed(started, f"no complete answer within {attempt_seconds(config):g} s")
            return _failed(started, _reason(exc))
        finally:
            watchdog.cancel()
            connection.close()
    return _failed(started, error)


def _answer(connection: HTTPConnection, started: float, deadline: float, config: Config) -> Attempt:
    if connection.sock is not None:
        connection.sock.settimeout(config.WEBHOOK_READ_TIMEOUT)
    try:
        response = connection.getresponse()
    except (TimeoutError, ReadTimeoutError):
        return _failed(started, f"no answer within {config.WEBHOOK_READ_TIMEOUT:g} s")
    latency = round((time.perf_counter() - started) * 1000)
    status = response.status
    location = response.headers.get("Location")
    response.read(ANSWER_BYTES)
    response.close()
    if 200 <= status < 300:
        return Attempt(True, status_code=status, latency_ms=latency)
    why = f"HTTP {status}" + (f": a redirect (to {location[:200]!r}) is not followed" if 300 <= status < 400 else "")
    return Attempt(False, status_code=status, latency_ms=latency, error=why)


def _failed(started: float, error: str) -> Attempt:
    return Attempt(False, latency_ms=round((time.perf_counter() - started) * 1000), error=error[:1000])


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None) or exc
    return str(inner)[:500]


class WebhookSender(Periodic):
    name = "webhook-sender"

    def __init__(self, config: Config, db: Database, holder: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.db = db
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.allow = Allow.parse(config.WEBHOOK_ALLOW)

    @property
    def lease(self) -> float:
        """Longer than one attempt can take (a few addresses tried, then the answer), so a live sender keeps its row."""
        return attempt_seconds(self.config) + 30

    def interval(self) -> float:
        return self.config.WEBHOOK_POLL_SECONDS

    def tick(self) -> int:
        """Queue the events of jobs that ended, then deliver what is due; how many attempts were made."""
        queue_ended_jobs(self.db)
        attempts = 0
        while attempts < PER_TICK and not self.stopping:
            claimed = claim(self.db, self.holder, self.lease)
            if claimed is None:
                break
            attempt = self.deliver(claimed)
            outcome = record(self.db, self.config, self.holder, claimed, attempt)
            attempts += 1
            log.log(
                logging.INFO if attempt.delivered else logging.WARNING,
                "webhook %s: %s of job %s, attempt %d: %s%s",
                claimed.webhook_id,
                claimed.event,
                claimed.job_id,
                claimed.attempt,
                outcome,
                f" ({attempt.error})" if attempt.error else "",
            )
        return attempts

    def deliver(self, claimed: Claimed) -> Attempt:
        """One attempt: every check first, then one POST; nothing is connected to before the address is checked."""
        with self.db.session() as session:
            webhook = session.get(Webhook, claimed.webhook_id)
            if webhook is None:
                return Attempt(False, error="the webhook was deleted")
            url = webhook.url
            try:
                secret = signing_secret(self.config, webhook)
            except ApiError as exc:
                return Attempt(False, error=f"not signed, not sent: {exc.message}")
        try:
            target = check_url(url, self.allow)
            address = literal(target.host)
            addresses = [address] if address is not None else resolve(target.host, target.port)
            check_addresses(target.host, addresses, self.allow)
        except Refused as exc:
            return Attempt(False, refused=True, error=exc.message)
        except (OSError, UnicodeError) as exc:  # socket.gaierror: the name does not resolve (now)
            return Attempt(False, error=f"{_host_of(url)} does not resolve: {exc}"[:1000])
        body = claimed.body.encode()
        return post(target, addresses, body, headers_for(claimed, target, secret, body), self.config)


def _host_of(url: str) -> str:
    return urlsplit(url).hostname or "the host"
