"""Processes as /proc shows them: what a process started, and whether it still runs."""

from __future__ import annotations

from pathlib import Path


def stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, from the state on; None: gone."""
    try:
        # The command name, in parentheses, may itself hold spaces and parentheses.
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def descendants(pid: int) -> dict[int, list[str]]:
    """The processes started, however deep, by `pid`: their command lines, by pid."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*"):
        if (fields := stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child in (p for p, pp in parents.items() if pp == parent):
            try:
                cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            found[child] = [part.decode() for part in cmdline if part]
            frontier.append(child)
    return found


def alive(pid: int) -> bool:
    fields = stat(pid)
    return fields is not None and fields[0] != "Z"
