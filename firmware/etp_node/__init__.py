"""The BESS node: battery state, energy holds, bid evaluation, audit log, MQTT client, tasks."""
