"""CPython battery simulator (the firmware core over CPython MQTT) for load tests and benches."""

from hub.sim.fleet import SimConfig, SimFleet

__all__ = ["SimConfig", "SimFleet"]
