"""CPU time and memory of a process tree, read from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def machine_busy_seconds() -> float:
    """CPU seconds spent by every process on the machine (all CPUs): user+nice+system+irq+softirq+steal."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def tree(root: int) -> list[int]:
    """`root` and all its descendants (uvicorn's master and its worker processes)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(name))  # fields[1] is ppid
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (not of their reaped children), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """VmRSS of one process, in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError):
        return 0


def tree_rss(pids: list[int]) -> int:
    """Summed RSS of these processes, in bytes."""
    return sum(rss_bytes(pid) for pid in pids)


@dataclass(slots=True)
class Sample:
    """CPU and RSS of a process tree at one moment."""

    cpu: float
    rss: int


class TreeMeter:
    """Samples one process tree; the worker list is refreshed on demand (workers can be respawned)."""

    def __init__(self, root: int, *, skip_root_if_children: bool = False) -> None:
        self.root = root
        self.skip_root_if_children = skip_root_if_children
        self.pids = tree(root)

    def refresh(self) -> list[int]:
        """Re-read the tree."""
        self.pids = tree(self.root)
        return self.pids

    def workers(self) -> list[int]:
        """The processes that serve requests: the children if there are any, else the root itself."""
        kids = [p for p in self.pids if p != self.root]
        return kids if kids else [self.root]

    def sample(self) -> Sample:
        """CPU of the whole tree; RSS of the whole tree."""
        return Sample(cpu_seconds(self.pids), tree_rss(self.pids))
