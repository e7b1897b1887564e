"""Transport: the hub's MQTT client and link (reconnects, bounded intake), the embedded broker.

Import the modules themselves (`hub.transport.link`, `hub.transport.broker`): the broker module
also runs as the broker's child process (`python -m hub.transport.broker`), so this package
imports nothing eagerly.
"""
