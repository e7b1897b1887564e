"""Container health probe: GET /health/ready on this hub's own gateway (ETP_HTTP_PORT), over
HTTPS when the hub serves HTTPS (decided by the hub's own rule, hub/security/tls.py).

Exit status 0 when the hub answers ready (broker connected, store started), 1 otherwise, with
one line saying why. Used by deploy/Dockerfile's HEALTHCHECK."""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from hub.security.tls import local_gateway_url, plan_site_tls
from hub.settings import Settings


def probe_url(settings: Settings, https: bool) -> str:
    """The ready probe's URL: the gateway's own address (loopback for a wildcard bind)."""
    return local_gateway_url(settings, https) + "/health/ready"


def main() -> int:
    """Probe once; print the outcome."""
    settings = Settings()
    if not settings.http_enabled:
        print("healthy: the gateway is disabled (ETP_HTTP_ENABLED=false), nothing to probe")
        return 0
    try:
        https = plan_site_tls(settings).gateway_https
    except Exception as exc:  # the hub itself refuses to start with this configuration
        print(f"unhealthy: {exc}")
        return 1
    context = None
    if https:
        # The probe talks to its own process: it checks readiness, not the certificate's
        # names (the operator's certificate need not name the loopback address).
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    url = probe_url(settings, https)
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            print(f"healthy: {url} answered {response.status}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {url} answered {exc.code}")
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
