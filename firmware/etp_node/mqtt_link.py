"""The link below MQTT: the socket, and TLS (mqtts://) with its client context.

Loaded, used and dropped (firmware.etp_node.unload): at boot to make the TLS context (one ~3 KB
block, made while the heap is in one piece and kept), and at each connect to open the socket,
before the session setup code (mqtt_connect) loads: the TLS handshake, a connect's largest
use of heap, then runs with only this code loaded.
"""

import socket


def ca_der(data):
    """DER bytes of a CA certificate given as DER or PEM (the port's TLS takes DER only)."""
    if data.startswith(b"-----BEGIN"):
        from binascii import a2b_base64

        body = [line.strip() for line in data.split(b"\n")]
        return a2b_base64(b"".join(line for line in body if line and not line.startswith(b"-")))
    return data


def tls_context(ca_file=None):
    """The TLS client context: verifies the broker against ca_file (PEM or DER on flash), else
    encrypts without authenticating the broker (frames are HMAC-signed end to end anyway)."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        context.verify_mode = ssl.CERT_REQUIRED
        with open(ca_file, "rb") as handle:
            context.load_verify_locations(cadata=ca_der(handle.read()))
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def open_socket(client):
    """A connected blocking socket (wrapped in TLS for mqtts://) with the client's timeout."""
    address = socket.getaddrinfo(client.host, client.port, 0, socket.SOCK_STREAM)[0][-1]
    sock = socket.socket()
    try:
        sock.settimeout(client.timeout_s)
        sock.connect(address)
        try:  # no Nagle (IPPROTO_TCP=6, TCP_NODELAY=1): a PUBACK and a reply go out at once
            sock.setsockopt(6, 1, 1)
        except OSError:
            pass  # ports without the option work, just slower on back-to-back packets
        if client.tls:
            if client.tls_context is None:  # boot could not make it (e.g. the CA file)
                client.tls_context = tls_context(client.ca_file)  # kept for reconnects
            sock = client.tls_context.wrap_socket(sock, server_hostname=client.host)
    except BaseException:
        sock.close()
        raise
    return sock
