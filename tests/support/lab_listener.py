"""Services of a test host, run inside its network namespace: TCP listeners, an HTTP server, UDP sockets.

python3 lab_listener.py --tcp 22,8080 --http 8080 --udp-echo 5353 --udp-silent 5354
"""

from __future__ import annotations

import argparse
import http.server
import selectors
import socket
import threading


def ports(value: str) -> list[int]:
    return [int(p) for p in value.split(",") if p]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--backlog", type=int, default=64)
    parser.add_argument("--tcp", type=ports, default=[])
    parser.add_argument("--http", type=ports, default=[])
    parser.add_argument("--udp-echo", type=ports, default=[])
    parser.add_argument("--udp-silent", type=ports, default=[])
    args = parser.parse_args()
    for port in args.http:
        server = http.server.ThreadingHTTPServer((args.bind, port), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    selector = selectors.DefaultSelector()
    for port in args.tcp:
        if port in args.http:
            continue
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.bind, port))
        sock.listen(args.backlog)
        selector.register(sock, selectors.EVENT_READ, "tcp")
    for port in args.udp_echo + args.udp_silent:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((args.bind, port))
        selector.register(sock, selectors.EVENT_READ, "echo" if port in args.udp_echo else "silent")
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if key.data == "tcp":
                conn, _ = sock.accept()
                conn.close()
            else:
                data, peer = sock.recvfrom(65535)
                if key.data == "echo":
                    sock.sendto(data or b"\n", peer)


if __name__ == "__main__":
    main()
