"""The TLS client context (mqtts://): made once at boot, while the heap is in one piece.

Loaded by boot.py and dropped at once (firmware.etp_node.unload); a connect loads it again only
when boot could not make the context (e.g. an unreadable CA file), so the socket code a
connect loads (mqtt_link.py) stays small beside the TLS handshake.
"""


def ca_der(data):
    """DER bytes of a CA certificate given as DER or PEM (the port's TLS takes DER only)."""
    if data.startswith(b"-----BEGIN"):
        from binascii import a2b_base64

        body = [line.strip() for line in data.split(b"\n")]
        return a2b_base64(b"".join(line for line in body if line and not line.startswith(b"-")))
    return data


def tls_context(ca_file=None):
    """The TLS client context: verifies the broker against ca_file (PEM or DER on flash), else
    encrypts without authenticating the broker (frames are HMAC-signed end to end anyway).

    Made with the port's built-in `tls` module, not `ssl`: ssl.py only wraps tls's context in a
    Python class, and importing it keeps its module, class and name table (~1.1 KB) for good.
    """
    try:
        import tls
    except ImportError:  # a port without the tls module: ssl's context takes cadata by name
        import ssl as tls
    context = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    if ca_file:
        context.verify_mode = tls.CERT_REQUIRED
        with open(ca_file, "rb") as handle:
            cadata = ca_der(handle.read())
        if tls.__name__ == "tls":
            context.load_verify_locations(cadata)  # the built-in takes it positionally only
        else:
            context.load_verify_locations(cadata=cadata)
    else:
        context.verify_mode = tls.CERT_NONE
    return context
