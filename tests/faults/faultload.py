"""Task functions for the fault-injection tests (imported by launchers via PYTHONPATH)."""

import time


def nap(i, seconds):
    time.sleep(seconds)
    return i


def identity(i):
    return i
