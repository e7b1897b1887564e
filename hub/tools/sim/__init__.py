"""CPython battery simulator (the firmware core over CPython MQTT) for load tests and benches."""

from hub.tools.sim.fleet import SimConfig, SimFleet

__all__ = ["SimConfig", "SimFleet"]
