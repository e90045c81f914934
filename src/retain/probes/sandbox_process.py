"""The parent's side of a sandboxed program's processes: the walk of the process tree (whose
text the launcher carries too), waiting for the launcher without reaping it, reading its report,
killing every process it left and deleting the working directory.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import time

# One copy of the process-tree walk: the parent uses it, and the launcher carries its text.
TREE = r'''
def descendants(root, live=False):
    """The pids below ``root`` (read from /proc); ``live``: zombies left out."""
    children, state = {}, {}
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: nothing can be found
        entries = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/" + entry + "/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(b")") + 2:].split()  # the name may hold spaces and ")"
        state[int(entry)] = fields[0]
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return [p for p in found if not live or state.get(p) not in (b"Z", b"X")]
'''
exec(TREE)  # defines descendants() in this module too


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits, at most ``timeout`` seconds, without reaping it (so that its
    process group id cannot be reused before the group is killed); True when it exited."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # an old kernel: poll instead
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.005)
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(fd)


def read_report(fd: int) -> dict:
    """The launcher's last report line (it is closed or dead by now); {} when none."""
    lines = [ln for ln in _read_available(fd).decode("utf-8", "replace").splitlines() if ln]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}


def _read_available(fd: int) -> bytes:
    """Whatever the launcher wrote to the report pipe (it is closed or dead by now)."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def end_tree(launcher: int) -> None:
    """Kill every process below the launcher, then its process group. The launcher is stopped
    first: a subreaper, it then keeps each orphan of a killed process below it, where the next
    pass finds it, and it cannot exit (handing them to the system's init) meanwhile."""
    try:
        os.kill(launcher, signal.SIGSTOP)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        alive = descendants(launcher, live=True)  # noqa: F821 (defined by exec(TREE))
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)
    _kill_group(launcher)


def remove_tree(path: str) -> None:
    """Delete the working directory even if the program made parts of it unreadable."""
    def force(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        except OSError:
            pass
        func(p)
    shutil.rmtree(path, onerror=force)
