"""A WinRM HTTPS endpoint under the tests' control that records what a client sends it (no Windows needed).

It plays a Windows host's WinRM listener on port 5986 of a loopback address, with a server certificate
issued by a throwaway test CA. It answers POST /wsman the way Windows does for Negotiate: 401 without
credentials, an NTLM challenge (type 2) for an NTLM negotiate message (type 1), and 401 again for the
authenticate message (type 3): no login ever succeeds. Every TLS handshake and every request is recorded
(method, path, headers with Authorization, body length, the NTLM message types), so a test can tell a
client that never got past the certificate check (handshake failures, no request) from one that sent
credentials.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import socket
import ssl
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

WINRM_PORT = 5986
NTLM_SIGNATURE = b"NTLMSSP\x00"
# The server's NTLM identity in its challenge (target info), as a Windows member server would name itself.
NETBIOS_DOMAIN, NETBIOS_COMPUTER = "CLOUDXTEST", "WIN-TEST"
DNS_DOMAIN, DNS_COMPUTER = "cloudx.test", "win-test.cloudx.test"


class TestCA:
    """A throwaway CA (TEST ONLY, valid for a day) and a server certificate it issued for one IP address."""

    def __init__(self, directory: Path, address: str, name: str = "Cloud-X WinRM test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (TEST ONLY)")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # keyCertSign, cRLSign
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        server = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),  # digitalSignature, keyEncipherment
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_path = directory / "winrm-test-ca.pem"
        self.cert_path = directory / "winrm-server.pem"
        self.key_path = directory / "winrm-server.key"
        self.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        self.key_path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        os.chmod(self.key_path, 0o600)


def ntlm_message(token: bytes) -> bytes | None:
    """The NTLM message in an Authorization token: raw NTLM, or inside a SPNEGO token (its first NTLMSSP)."""
    at = token.find(NTLM_SIGNATURE)
    return token[at:] if at >= 0 else None


def ntlm_type(message: bytes) -> int | None:
    return struct.unpack_from("<I", message, 8)[0] if len(message) >= 12 else None


def _field(message: bytes, offset: int) -> bytes:
    length, _, at = struct.unpack_from("<HHI", message, offset)
    return message[at : at + length]


def authenticate_names(message: bytes) -> dict[str, str]:
    """The names an NTLM authenticate message (type 3) carries in the clear (UTF-16LE): domain, user, workstation."""
    try:
        return {
            "domain": _field(message, 28).decode("utf-16-le"),
            "user": _field(message, 36).decode("utf-16-le"),
            "workstation": _field(message, 44).decode("utf-16-le"),
        }
    except (struct.error, UnicodeDecodeError):
        return {}


def _av_pair(av_id: int, value: bytes) -> bytes:
    return struct.pack("<HH", av_id, len(value)) + value


def challenge_message(negotiate: bytes) -> bytes:
    """An NTLM challenge (type 2, MS-NLMP 2.2.1.2) answering a negotiate message, as a Windows server sends it."""
    requested = struct.unpack_from("<I", negotiate, 12)[0] if len(negotiate) >= 16 else 0
    # Offered whatever the client asks for: UNICODE, REQUEST_TARGET, SIGN, SEAL, NTLM, ALWAYS_SIGN,
    # EXTENDED_SESSIONSECURITY, VERSION, 128, KEY_EXCH, 56; always TARGET_TYPE_DOMAIN and TARGET_INFO.
    offered = 0x00000001 | 0x00000004 | 0x00000010 | 0x00000020 | 0x00000200 | 0x00008000 | 0x00080000
    offered |= 0x02000000 | 0x20000000 | 0x40000000 | 0x80000000
    flags = (requested & offered) | 0x00000001 | 0x00000200 | 0x00010000 | 0x00800000
    target = NETBIOS_DOMAIN.encode("utf-16-le")
    filetime = int((time.time() + 11644473600) * 10_000_000)
    info = b"".join(
        [
            _av_pair(2, NETBIOS_DOMAIN.encode("utf-16-le")),
            _av_pair(1, NETBIOS_COMPUTER.encode("utf-16-le")),
            _av_pair(4, DNS_DOMAIN.encode("utf-16-le")),
            _av_pair(3, DNS_COMPUTER.encode("utf-16-le")),
            _av_pair(7, struct.pack("<Q", filetime)),
            _av_pair(0, b""),
        ]
    )
    header_length = 56
    header = NTLM_SIGNATURE + struct.pack("<I", 2)
    header += struct.pack("<HHI", len(target), len(target), header_length)
    header += struct.pack("<I", flags) + os.urandom(8) + b"\x00" * 8
    header += struct.pack("<HHI", len(info), len(info), header_length + len(target))
    header += bytes([10, 0]) + struct.pack("<H", 20348) + b"\x00\x00\x00\x0f"  # Windows Server 2022, NTLM revision 15
    assert len(header) == header_length
    return header + target + info


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # NTLM authenticates a connection: keep it open between the messages
    server: _TLSServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> tuple[dict[str, Any], bytes]:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        authorization = self.headers.get("Authorization")
        entry: dict[str, Any] = {
            "method": self.command,
            "path": self.path,
            "headers": list(self.headers.items()),
            "authorization": authorization,
            "scheme": authorization.split(" ", 1)[0] if authorization else None,
            "body_length": len(body),
            "ntlm_type": None,
        }
        message = None
        if authorization and " " in authorization:
            try:
                message = ntlm_message(base64.b64decode(authorization.split(" ", 1)[1].strip(), validate=True))
            except ValueError:
                message = None
        if message is not None:
            entry["ntlm_type"] = ntlm_type(message)
            if entry["ntlm_type"] == 3:
                entry["ntlm_names"] = authenticate_names(message)
        with self.server.recorder.lock:
            self.server.recorder.requests.append(entry)
            self.server.recorder.raw.append(str(self.requestline).encode() + str(self.headers).encode() + body + (message or b""))
        return entry, message or b""

    def _answer(self, status: int, authenticate: list[str], body: bytes = b"") -> None:
        self.send_response(status)
        for value in authenticate:
            self.send_header("WWW-Authenticate", value)
        self.send_header("Server", "Microsoft-HTTPAPI/2.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        entry, message = self._record()
        if self.path.split("?", 1)[0].lower() != "/wsman":
            self._answer(404, [])
        elif entry["ntlm_type"] == 1:
            self._answer(401, [f"{entry['scheme']} {base64.b64encode(challenge_message(message)).decode()}"])
        else:  # no credentials, or an authenticate message: refused, as for a wrong password
            self._answer(401, ["Negotiate", "Kerberos"])

    def do_GET(self) -> None:
        self._record()
        self._answer(405, [])

    do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_GET


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, recorder: RecordingWinrm, address: tuple[str, int], context: ssl.SSLContext) -> None:
        self.recorder = recorder
        self.context = context
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, in the connection's own thread: a failed one is recorded, never served.
        with self.recorder.lock:
            self.recorder.connections += 1
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self.recorder.lock:
                self.recorder.handshake_failures.append(str(exc))
            return
        try:
            with self.recorder.lock:
                self.recorder.handshakes += 1
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that goes away mid-request is no test failure


def free_address(port: int = WINRM_PORT, first: int = 86, last: int = 254) -> str:
    """A loopback address 127.0.0.N (N from `first`) whose `port` is free."""
    for n in range(first, last + 1):
        address = f"127.0.0.{n}"
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
            return address
    raise RuntimeError(f"no 127.0.0.{first}-{last} address has port {port} free")


class RecordingWinrm:
    """A recording WinRM HTTPS listener on <address>:5986 with a certificate from its own test CA."""

    def __init__(self, directory: Path, address: str | None = None, port: int = WINRM_PORT) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.connections = 0
        self.handshakes = 0
        self.handshake_failures: list[str] = []
        for attempt in range(5):
            self.address = address or free_address(port)
            self.ca = TestCA(directory, self.address)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.ca.cert_path, self.ca.key_path)
            try:
                self.httpd = _TLSServer(self, (self.address, port), context)
                break
            except OSError:
                if address or attempt == 4:
                    raise
        self.port = port
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    @property
    def ca_path(self) -> Path:
        return self.ca.ca_path

    def wsman_posts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["method"] == "POST" and r["path"].split("?", 1)[0].lower() == "/wsman"]

    def ntlm_types(self) -> list[int]:
        with self.lock:
            return [r["ntlm_type"] for r in self.requests if r["ntlm_type"] is not None]

    def saw(self, secret: str) -> bool:
        """Whether `secret` appeared in any request (line, headers, body, decoded NTLM message), UTF-8 or UTF-16LE."""
        needles = (secret.encode(), secret.encode("utf-16-le"))
        with self.lock:
            return any(n in blob for blob in self.raw for n in needles)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)
