"""The machine's live processes as /proc shows them, for the tests that find or kill what a command
or a Ray started (Linux only)."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    session: int
    argv: tuple[str, ...]  # a Ray worker retitles itself: ("ray::Scorer.score",) while a method runs


def live_processes() -> list[Process]:
    """Every live process (zombies have died already), from /proc/PID/stat ("pid (comm) state ppid
    pgrp session ...") and /proc/PID/cmdline."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = tuple(arg.decode(errors="replace").strip() for arg in cmdline.read().split(b"\0") if arg)
        except OSError:  # it ended meanwhile
            continue
        if fields[0] != "Z":
            found.append(Process(int(entry), int(fields[1]), int(fields[3]), argv))
    return found
