"""An SSH server under the tests' control (paramiko) that records every password and key it is offered.

It plays the hostile host of the security probe: any address and port an operator could point a deployment
at. It accepts no login; it only answers the SSH handshake with its own host key and writes down what the
client sends.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import paramiko


class _Recorder(paramiko.ServerInterface):
    def __init__(self, server: RecordingSshd) -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        with self.server.lock:
            self.server.passwords.append((username, password))
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: Any) -> int:
        with self.server.lock:
            self.server.public_keys.append((username, key.get_base64()))
        return paramiko.AUTH_FAILED


class RecordingSshd:
    def __init__(self, address: str = "127.0.0.1") -> None:
        self.key = paramiko.Ed25519Key.from_private_key_file(_make_key())
        self.passwords: list[tuple[str, str]] = []
        self.public_keys: list[tuple[str, str]] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.create_server((address, 0), backlog=64)
        self.address, self.port = self.sock.getsockname()[:2]
        self._stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def known_hosts_line(self) -> str:
        """This server's key as a known_hosts line for the address and port it listens on."""
        return f"[{self.address}]:{self.port} {self.key.get_name()} {self.key.get_base64()}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.key)
        try:
            transport.start_server(server=_Recorder(self))
            transport.accept(timeout=20)
        except (paramiko.SSHException, EOFError, OSError):
            pass
        finally:
            transport.close()

    def close(self) -> None:
        self._stopping.set()
        self.sock.close()


def _make_key() -> str:
    import subprocess
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="cloudx-sshd-")) / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return str(path)
