"""Scans stored as the runner stores them: a scan submitted through the API, the scanner role's result files
(summary.json, hosts.jsonl) written where the role's fetch puts them, then the real store path."""

from __future__ import annotations

import io
import json
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from controller.scanlib import scanner
from controller.services.scans import results_root, store_results
from controller.store.models import Job


def nmap_hosts(xml: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The hosts and run information of an nmap XML document, parsed as the role parses it."""
    info: dict[str, Any] = {}
    hosts = list(scanner.parse_nmap_xml(io.BytesIO(xml.encode()), info))
    return hosts, info


UNSET: Any = object()


def store_scan(
    app: Flask,
    client: FlaskClient,
    hosts: list[dict[str, Any]],
    target: str,
    tool: str = "nmap",
    scan_type: str = "default",
    ports: str | None = None,
    probed: Any = UNSET,
    state: str = "completed",
    status: str = "successful",
) -> str:
    """A scan of `target` whose scanner reported `hosts`, its job ended as `status`; its job id. `probed` is what the
    summary says was probed (by default as the role reports it: nmap's own list, or the ports masscan and zmap were
    given; None: a scan stored before summaries said)."""
    body = {"target": target, "tool": tool, "scan_type": scan_type, **({"ports": ports} if ports else {})}
    response = client.post("/api/scans", json=body)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    config = app.extensions["cloudx.config"]
    directory = results_root(config, job_id) / job_id / "scanner1"
    directory.mkdir(parents=True)
    summary = {"state": state, "tool": tool, "scan_type": scan_type, "target": target, "ports": ports, "files": {}}
    if probed is UNSET:
        probed = {"udp" if scan_type in ("udp", "udp_scan") else "tcp": ports} if ports else {}
    if probed is not None:
        summary["probed"] = probed
    (directory / "summary.json").write_text(json.dumps(summary))
    (directory / "hosts.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hosts))
    database = app.extensions["cloudx.db"]
    stored = store_results(database, config, job_id, status, None)[0]
    assert stored == status or state != "completed", stored  # a timed-out scan's job ends as timeout
    with database.session() as session:
        session.get(Job, job_id).status = status
    return job_id
