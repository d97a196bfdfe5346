"""Whether the process that runs a Dagster run on this machine is still there (Dagster-free).

A run executed by a local process (`dagster dev`'s default launcher, `dagster asset
materialize`, the demo) records that process's pid when its executor starts. If the process is
killed outright (SIGKILL, OOM killer, a closed terminal), nothing marks the run finished: it
stays STARTED, holds its GPU slots and, since one daily run is active at a time, holds the
chain. The pid alone is not proof: pids are reused, so a process with that pid that started
after the run did is a different process.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _boot_time(proc: Path) -> float | None:
    try:
        for line in (proc / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_started_at(pid: int, proc: Path = PROC) -> float | None:
    """The epoch seconds at which process `pid` started; None if there is no such process."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except PermissionError:
        return 0.0  # exists, but not ours to read: treat as alive and old
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    boot = _boot_time(proc)
    if boot is None:
        return 0.0
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime in ticks


def process_gone(pid: int, run_started_at: float, *, proc: Path = PROC) -> bool:
    """True when no process `pid` exists, or the one that does started after the run did
    (a reused pid). One second of slack covers clock-tick rounding."""
    started = process_started_at(pid, proc)
    return started is None or started > run_started_at + 1.0
