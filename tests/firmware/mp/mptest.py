"""Minimal test runner for scripts run by the MicroPython unix port (no pytest there)."""

import sys


def run(tests):
    """Run every (name, function) pair; print PASS/FAIL lines and a summary; exit 1 on failure."""
    failed = 0
    for name, func in tests:
        try:
            func()
            print("PASS", name)
        except Exception as exc:  # report and continue
            failed += 1
            print("FAIL", name, type(exc).__name__, exc)
            sys.print_exception(exc) if hasattr(sys, "print_exception") else None
    print("SUMMARY passed=%d failed=%d" % (len(tests) - failed, failed))
    sys.exit(1 if failed else 0)


def collect(namespace):
    """(name, function) for every global named test_* in definition order."""
    return sorted(
        [(k, v) for k, v in namespace.items() if k.startswith("test_") and callable(v)],
        key=lambda item: item[0],
    )


def tmp_dir(name):
    """A fresh directory under $ETP_TEST_TMP (set by the pytest wrapper) for this test."""
    import os

    base = os.getenv("ETP_TEST_TMP") or "/tmp"
    path = base + "/" + name
    try:
        os.mkdir(path)
    except OSError:
        for entry in os.listdir(path):
            os.remove(path + "/" + entry)
    return path


class FakeClock:
    """A settable millisecond wall clock shared by the node and the test's senders."""

    def __init__(self, start=1795500000000):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, ms):
        """Move the clock forward by ms."""
        self.now += ms
