"""The link below MQTT: the socket, wrapped in TLS for mqtts://.

Loaded at each connect, used and dropped (firmware.etp_node.unload) before the session setup
code (mqtt_connect) loads: the TLS handshake, a connect's largest use of heap, runs with only
this code loaded. The TLS context was made at boot (tls_setup.py).
"""

import gc
import socket


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
        context = client.tls
        if context:
            if context is True or isinstance(context, str):  # boot could not make it (CA file?)
                from firmware.etp_node import tls_setup, unload

                try:  # kept for reconnects
                    context = client.tls = tls_setup.tls_context(None if context is True
                                                                 else context)
                finally:
                    del tls_setup
                    unload("tls_setup")
            gc.collect()  # the handshake needs blocks of up to ~520 bytes: free what is garbage
            sock = context.wrap_socket(sock, server_hostname=client.host)
    except BaseException:
        sock.close()
        raise
    return sock
