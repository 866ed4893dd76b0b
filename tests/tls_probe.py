"""Talking TLS to a port by hand: who answers there, and whether it lets a client in.

Ray's gRPC servers speak HTTP/2 over TLS: after the handshake a server that
accepted the client answers HTTP/2's opening bytes with a SETTINGS frame; one
that refused the client's certificate (TLS 1.3) sends an alert or closes at
the first read.
"""
from __future__ import annotations

import socket
import ssl
from typing import Optional

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_FRAME = b"\x04"  # the frame type byte of an HTTP/2 frame header


def tls_exchange(port: int, cafile: str, cert: Optional[tuple[str, str]]) -> tuple[str, bytes]:
    """A TLS handshake to 127.0.0.1:port verified against `cafile`, then HTTP/2's opening
    bytes: (the server certificate's common name, the first bytes it answers)."""
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    if cert:
        context.load_cert_chain(*cert)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            subject = dict(pair for rdn in conn.getpeercert()["subject"] for pair in rdn)
            conn.sendall(HTTP2_PREFACE)
            return subject["commonName"], conn.recv(9)  # the server's first frame header, if it accepted us


def refusal(port: int, cafile: str, cert: Optional[tuple[str, str]]) -> str:
    """How the server at `port` refused us; '' if it let us in."""
    try:
        _, answer = tls_exchange(port, cafile, cert)
    except (ssl.SSLError, ConnectionResetError) as error:
        return str(error)
    return "" if answer else "closed without a word"


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses something listens on at `port` (0.0.0.0: every interface)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # TCP_LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found
