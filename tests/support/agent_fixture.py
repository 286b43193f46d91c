"""Builds the TEST FIXTURE wazuh-agent package (see fixtures/agent-package/README.md) and a fake manager."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent.parent / "fixtures" / "agent-package" / "root"
VERSION = "4.9.2"

CONTROL = f"""Package: wazuh-agent
Version: {VERSION}-1
Architecture: all
Maintainer: Cloud-X tests <tests@invalid>
Depends: python3, systemd
Section: admin
Priority: optional
Description: TEST FIXTURE stand-in for the Wazuh agent
 Built by the Cloud-X test suite; never install it outside its test hosts.
"""

POSTINST = """#!/bin/sh
set -e
getent group wazuh >/dev/null || groupadd --system wazuh
getent passwd wazuh >/dev/null || useradd --system -g wazuh -d /var/ossec -s /usr/sbin/nologin wazuh
chown -R root:wazuh /var/ossec
chmod 0750 /var/ossec /var/ossec/etc /var/ossec/active-response/bin
chmod 0770 /var/ossec/logs /var/ossec/var/run
"""

POSTRM = """#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -rf /var/ossec
  getent passwd wazuh >/dev/null && userdel wazuh || true
  getent group wazuh >/dev/null && groupdel wazuh || true
fi
"""


def build_package(directory: Path) -> tuple[Path, str]:
    """The .deb and its sha256."""
    root = directory / "pkgroot"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(SOURCE, root)
    for sub in ("etc", "logs", "var/run", "active-response/bin", "queue"):
        (root / "var/ossec" / sub).mkdir(parents=True, exist_ok=True)
    (root / "var/ossec/etc/ossec.conf").write_text(
        "<ossec_config>\n  <client><server><address>MANAGER_IP</address></server></client>\n</ossec_config>\n"
    )
    (root / "var/ossec/etc/client.keys").write_text("")
    for tool in ("agent-auth", "wazuh-agentd", "wazuh-control"):
        (root / "var/ossec/bin" / tool).chmod(0o755)
    debian = root / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(CONTROL)
    (debian / "conffiles").write_text("")
    for name, text in (("postinst", POSTINST), ("postrm", POSTRM)):
        (debian / name).write_text(text)
        (debian / name).chmod(0o755)
    package = directory / f"wazuh-agent_{VERSION}-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(package)], check=True, capture_output=True)
    return package, hashlib.sha256(package.read_bytes()).hexdigest()


class FakeManager:
    """Answers the first line of Wazuh enrollment on TCP; records every request."""

    def __init__(self, address: str, port: int = 1515, password: str | None = None) -> None:
        self.requests: list[str] = []
        self.password = password
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(16)
        self.next_id = 1
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile().readline().strip()
                self.requests.append(line)
                if self.password is not None and not line.startswith(f"OSSEC PASS: {self.password} "):
                    conn.sendall(b"ERROR: Invalid password\n")
                    continue
                name = line.split("A:'", 1)[1].split("'", 1)[0] if "A:'" in line else "unknown"
                conn.sendall(f"OSSEC K:'{self.next_id:03d} {name} any {'0' * 64}'\n".encode())
                self.next_id += 1

    def close(self) -> None:
        self.sock.close()


def signed_repository(directory: Path, package: Path, key_name: str = "Cloud-X test repository") -> tuple[Path, Path]:
    """An APT repository holding `package`, signed with a fresh key: (repository root, armoured public key)."""
    gnupg = directory / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(gnupg), "PATH": "/usr/bin:/bin"}

    def gpg(*argv: str) -> None:
        subprocess.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "", *argv], env=env, check=True)

    gpg("--quick-gen-key", key_name, "ed25519", "sign", "never")
    public_key = directory / "repo-key.asc"
    gpg("--armor", "--output", str(public_key), "--export", key_name)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    root = directory / "repo"
    pool = root / "pool" / "main"
    pool.mkdir(parents=True)
    shutil.copy(package, pool / package.name)
    index = root / "dists" / "stable" / "main" / f"binary-{arch}"
    index.mkdir(parents=True)
    packages = subprocess.run(["apt-ftparchive", "packages", "pool"], cwd=root, capture_output=True, text=True, check=True).stdout
    (index / "Packages").write_text(packages)
    options = [
        f"-oAPT::FTPArchive::Release::{k}={v}"
        for k, v in (("Suite", "stable"), ("Codename", "stable"), ("Architectures", arch), ("Components", "main"))
    ]
    release = subprocess.run(["apt-ftparchive", *options, "release", "dists/stable"], cwd=root, capture_output=True, text=True, check=True)
    dists = root / "dists" / "stable"
    (dists / "Release").write_text(release.stdout)
    gpg("--local-user", key_name, "--clearsign", "--output", str(dists / "InRelease"), str(dists / "Release"))
    # gpg started an agent for this key ring; it would outlive the tests.
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)
    return root, public_key


def serve_directory(directory: Path, address: str, port: int = 8000) -> Any:
    """A static HTTP server for a directory, on one address; returns the server (call shutdown())."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer((address, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
