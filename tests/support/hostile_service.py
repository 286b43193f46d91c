"""A test host's service whose banner carries markup, for tests that check scanned data is shown escaped.

nmap's service detection (scan types "intense", nmap -A, and -sV) reads an FTP banner through its own match lines
(/usr/share/nmap/nmap-service-probes) into the fields the scanner role stores (ScanPort.product and .version):

    220 vsFTPd <markup> ready...                       -> product "vsftpd", version EXPECTED_VERSION
    220 AXIS <markup> FTP Network Print Server V1.0    -> product EXPECTED_PRODUCT, version "1.0"

nmap keeps < > " as they are (escaped only in its XML) but drops a product or version longer than 79 characters,
hence one port per field. A host name cannot carry markup from a real scan: nmap 7.93 replaces every character of a
reverse-DNS or /etc/hosts name outside [A-Za-z0-9.+=:_~*-] with '*'. So the host name comes from an imported file
instead: HOSTILE_NMAP_XML (POST /api/imports) has HOSTILE_HOSTNAMES and the same ports as a live scan of this service.

    host = lab.add_host()
    stop = start_hostile_service(host, 2121, product_port=2122)
    try: ...scan host.address with nmap intense, ports "2121,2122"...
    finally: stop()

Run by path (as start_hostile_service does) it is the server itself: python3 hostile_service.py ADDRESS PORT [PORT].
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.testhosts import TestHost

BANNER_SCRIPT = '<script>alert("xss-banner")</script>'
BANNER_IMG = '"><img src=x onerror=alert(1)>'
BANNER_MARKUP = (BANNER_SCRIPT, BANNER_IMG)
EXPECTED_VERSION = f"{BANNER_SCRIPT} {BANNER_IMG}"  # the version port's version; its product is "vsftpd"
EXPECTED_PRODUCT = f"AXIS {BANNER_IMG} print server ftpd"  # the product port's product; its version is "1.0"
VERSION_BANNER = f"220 vsFTPd {EXPECTED_VERSION} ready...\r\n"
PRODUCT_BANNER = f"220 AXIS {BANNER_IMG} FTP Network Print Server V1.0 ready\r\n"

HOSTILE_HOSTNAMES = ('<script>alert("xss-host")</script>', '"><img src=x onerror=alert(2)>.example')
HOSTILE_NMAP_XML = Path(__file__).parents[1] / "fixtures" / "hostile-nmap.xml"  # host 198.18.251.2, ports 2121, 2122


def start_hostile_service(host: TestHost, port: int, product_port: int | None = None) -> Callable[[], None]:
    """Serve VERSION_BANNER on `port` (and PRODUCT_BANNER on `product_port`) at the host's address, inside its network
    namespace; returns a function that stops the server (Lab.close() kills it too)."""
    argv = ["ip", "netns", "exec", host.netns, sys.executable, __file__, host.address, str(port)]
    argv += [str(product_port)] if product_port else []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd="/tmp")
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"hostile service on {host.name} did not start")

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    return stop


def _answer(conn: socket.socket, banner: bytes) -> None:
    """The banner, then "500" to whatever nmap's scripts send (ftp-anon, ftp-syst), until they hang up."""
    with conn:
        try:
            conn.settimeout(10)
            conn.sendall(banner)
            while conn.recv(4096):
                conn.sendall(b"500 Command not understood.\r\n")
        except OSError:
            pass


def _serve(sock: socket.socket, banner: bytes) -> None:
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_answer, args=(conn, banner), daemon=True).start()


def main(address: str, port: int, product_port: int | None = None) -> None:
    threads = []
    for number, banner in ((port, VERSION_BANNER), (product_port, PRODUCT_BANNER)):
        if number:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, number))
            sock.listen(64)
            threads.append(threading.Thread(target=_serve, args=(sock, banner.encode()), daemon=True))
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
