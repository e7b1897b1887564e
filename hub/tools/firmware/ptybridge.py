"""A pseudo-terminal that behaves like a board's USB serial port, for a simulated board.

The board runs main.py (the node); its console goes to the pty (and to stdout, the board's
log). Ctrl-C on the pty interrupts the node and leaves a REPL, as on a board; the REPL is the
unix port on an inner pty, bytes pass through both ways, so `mpremote connect <pty> fs cp |
exec | run | soft-reset | reset` work. The unix port exits on soft reset: the bridge prints
"soft reboot" and starts it again (back in raw REPL if it was, else running main.py, as a board
does). `machine.reset()` (mpremote reset) restarts the node. Run as
`python -m hub.tools.firmware.ptybridge --flash DIR --link PATH [--heap 80K]`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import pty
import selectors
import signal
import subprocess
import sys
import tty
from pathlib import Path

from hub.tools.firmware.binaries import micropython_binary

SIMLIB = Path(__file__).parent / "simlib"
CTRL_A, CTRL_B, CTRL_C = 0x01, 0x02, 0x03
SOFT_REBOOT = b"MPY: soft reboot\r\n"
RESET_MARKER = ".etp_reset"


class Bridge:
    """Owns the outer pty and whichever process (node or REPL) the board is running."""

    def __init__(self, flash: Path, link: Path, heap: str):
        self.flash = flash
        self.link = link
        self.heap = heap
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(os.ttyname(self._slave))
        self.proc: subprocess.Popen | None = None
        self.proc_out: int | None = None  # fd we read the running process's output from
        self.mode = "node"
        self.ready = True
        self.seen = b""
        self.pending = b""
        self.raw = False
        self.running = True
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.master, selectors.EVENT_READ, "outer")

    # --- processes -------------------------------------------------------------------------
    def _spawn(self, mode: str) -> None:
        self._drop_proc_fd()
        binary = micropython_binary()
        if mode == "node":
            read_fd, write_fd = os.pipe()
            self.proc = subprocess.Popen(
                [binary, "-X", f"heapsize={self.heap}", "main.py"],
                cwd=self.flash,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
            )
            os.close(write_fd)
            self.proc_out = read_fd
        else:
            inner_master, inner_slave = pty.openpty()
            tty.setraw(inner_slave)  # no \n -> \r\n translation: bytes as a UART sends them
            env = dict(os.environ, MICROPYPATH=f":.frozen:{SIMLIB}")
            self.proc = subprocess.Popen(
                [binary, "-X", f"heapsize={self.heap}"],
                cwd=self.flash,
                stdin=inner_slave,
                stdout=inner_slave,
                stderr=inner_slave,
                env=env,
                start_new_session=True,
            )
            os.close(inner_slave)
            self.proc_out = inner_master
        self.mode = mode
        self.ready = mode == "node"
        self.seen = b""
        self.sel.register(self.proc_out, selectors.EVENT_READ, "proc")

    def _drop_proc_fd(self) -> None:
        if self.proc_out is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.proc_out)
            with contextlib.suppress(OSError):
                os.close(self.proc_out)
            self.proc_out = None

    def _stop_proc(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._pump_proc()  # last words (a traceback after Ctrl-C)

    # --- byte moving -----------------------------------------------------------------------
    def _to_outer(self, data: bytes) -> None:
        """Write to the serial line; like a UART nobody listens to, excess is lost."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master, data)

    def _pump_proc(self) -> None:
        if self.proc_out is None:
            return
        try:
            data = os.read(self.proc_out, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the inner pty's process is gone
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._drop_proc_fd()
            return
        if self.mode == "node":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        elif not self.ready:
            # The REPL flushes its input when it starts: hold the host's bytes until the
            # prompt shows, then hand them over.
            self.seen = (self.seen + data)[-16:]
            if b">>> " in self.seen:
                self.ready = True
                if self.pending:
                    self._to_inner(self.pending)
                    self.pending = b""
        self._to_outer(data)

    def _to_inner(self, data: bytes) -> None:
        if self.proc_out is not None:
            with contextlib.suppress(OSError):
                os.write(self.proc_out, data)

    def _on_outer(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return
        if self.mode == "node":
            if CTRL_C in data:  # interrupt main.py, leave a REPL
                rest = data[data.rindex(CTRL_C) + 1 :]
                self._stop_proc(signal.SIGINT)
                self._spawn("repl")
                self.pending = b""
                data = rest  # what the host sent after Ctrl-C is for the REPL
            else:
                return
        for byte in data:
            if byte == CTRL_A:
                self.raw = True
            elif byte == CTRL_B:
                self.raw = False
        if self.ready:
            self._to_inner(data)
        else:
            self.pending += data

    def _on_exit(self) -> None:
        """The running process ended: reboot the way a board would."""
        self._pump_proc()
        marker = self.flash / RESET_MARKER
        if self.mode == "repl" and marker.exists():
            marker.unlink()
            self.raw = False
            self._spawn("node")  # hard reset: main.py runs
        elif self.mode == "repl":
            self._to_outer(SOFT_REBOOT)
            if self.raw:
                self._spawn("repl")
                self.pending = bytes((CTRL_A,)) + self.pending  # back into raw REPL
            else:
                self._spawn("node")
        else:
            self._spawn("repl")  # main.py ended or crashed: the board sits in its REPL

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT."""
        self._spawn("node")
        while self.running:
            for key, _ in self.sel.select(timeout=0.05):
                if key.data == "outer":
                    self._on_outer()
                else:
                    self._pump_proc()
            if self.proc is not None and self.proc.poll() is not None and self.running:
                self._on_exit()

    def close(self) -> None:
        """Stop the board and remove the pty link."""
        self.running = False
        self._stop_proc()
        self._drop_proc_fd()
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def main(argv: list[str] | None = None) -> None:
    """Command line: run one simulated board behind a pty."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flash", required=True, type=Path, help="the board's flash directory")
    parser.add_argument("--link", required=True, type=Path, help="symlink to create to the pty")
    parser.add_argument("--heap", default="80K", help="MicroPython heap size")
    args = parser.parse_args(argv)
    bridge = Bridge(args.flash.resolve(), args.link, args.heap)

    def stop(signum: int, frame: object) -> None:
        bridge.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        bridge.run()
    finally:
        bridge.close()


if __name__ == "__main__":
    main()
