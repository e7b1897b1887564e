"""Host-side firmware tooling: .mpy build, simulated board fleet (pty-bridged), audit reader."""

__all__ = ["audit", "bench", "binaries", "build", "fleet", "ptybridge"]
