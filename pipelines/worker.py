"""Entry point of the converter's local worker processes (DirectRunner with --num-workers N).

    python /path/to/pipelines/worker.py --watch-pid PID [--quiet]

Runs Beam's SDK harness (`apache_beam.runners.worker.sdk_worker_main`, configured through the
environment by the runner, as in Beam's own multi_processing mode) in a process that never outlives
the converter PID: the kernel kills it when its parent dies (PR_SET_PDEATHSIG, when the converter
is the direct parent), and a watch thread exits it within `WATCH_INTERVAL` seconds of the
converter's end (any ancestry, any platform with /proc or kill(pid, 0)). Without the watch, a
converter killed with SIGKILL could leave workers behind, waiting for a runner that is gone.

`--quiet` (the converter's default) sends the worker's Python-level stderr to /dev/null: Beam's
harness prints every failed bundle's traceback there, while the same error reaches the converter
through the Fn API and is reported once, as one line when it is a full disk or a denied write.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

WATCH_INTERVAL = 0.5
ORPHANED = 70  # exit status of a worker whose converter is gone


def command_line(parent_pid: int, quiet: bool = True) -> str:
    """The shell command that starts one worker watching `parent_pid`. It runs this file (not
    `-m`, which would put the working directory, and any `pipelines` folder there, first on the
    path), so the worker imports this same `pipelines` and `medgan_tf` (see `_import_root`)."""
    return (f"exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} "
            f"--watch-pid {int(parent_pid)}" + (" --quiet" if quiet else ""))


def _import_root() -> None:
    """Run as a file, sys.path[0] is this folder; make it the folder holding `pipelines` instead."""
    root = str(Path(__file__).resolve().parent.parent)
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    if root not in sys.path:
        sys.path.insert(0, root)


def start_time(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks (so a reused PID reads differently), None
    once it is gone or a zombie. Without /proc: "alive" while kill(pid, 0) succeeds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "alive"
    return None if fields[0] in ("Z", "X") else fields[19]


def watch_parent(pid: int, interval: float = WATCH_INTERVAL) -> None:
    """Exit this process when process `pid` ends (see the module docstring)."""
    if os.getppid() == pid and sys.platform.startswith("linux"):
        # The "parent" of PR_SET_PDEATHSIG is the thread that started us: Beam's run_worker
        # thread, which waits for this process until it exits, so it never fires early.
        try:
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (AttributeError, OSError):
            pass
        if os.getppid() != pid:  # the converter died before prctl took effect
            os._exit(ORPHANED)
    identity = start_time(pid)
    if identity is None:
        os._exit(ORPHANED)

    def watch() -> None:
        while start_time(pid) == identity:
            time.sleep(interval)
        os._exit(ORPHANED)

    threading.Thread(target=watch, name="watch-converter", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pipelines/worker.py", description=__doc__.split("\n")[0])
    parser.add_argument("--watch-pid", type=int, required=True, help="exit when this process ends")
    parser.add_argument("--quiet", action="store_true", help="no Python-level stderr (errors reach the runner anyway)")
    args = parser.parse_args(argv)
    watch_parent(args.watch_pid)
    if args.quiet:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 — for the life of the process
    # As in the converter: no notices about optional Google Cloud clients on the user's terminal.
    logging.getLogger().setLevel(logging.ERROR)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    _import_root()
    main()
