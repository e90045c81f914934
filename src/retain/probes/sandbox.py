"""Run untrusted Python (a model's code completion plus its unit tests) in a separate, limited
process, for execution-based probes such as HumanEval (Chen et al. 2021, "Evaluating Large
Language Models Trained on Code", arXiv 2107.03374).

The parent never executes the code. ``run_python`` writes it to a fresh temporary directory and
starts a new interpreter (``python -I``, not a fork of the parent) through a small trusted
launcher (``_LAUNCHER``, run with ``python -I -S -B``), with an empty environment, stdin on
/dev/null and output to a file, in a new session (process group). The parent waits up to a
wall-clock timeout, then kills every process the program started and the process group, and
always deletes the directory.

Isolation, as a run records it (``isolation_used``: results.json's "sandbox"): "namespaces" where
new network and PID namespaces applied, else "rlimits" (the layers marked "always" below). A
run's ``sandbox`` setting (``configure``): "auto" runs code either way and prints one warning line
per run when it falls back; "require" refuses, with a one-line UserError, before running code
that would not be isolated (``check_isolation``).

Layers, and which of them are guaranteed:

Always (enforced by the kernel or the parent, on any Linux):
  * resource limits set before the code runs, soft and hard alike, so the code cannot raise
    them: RLIMIT_AS (address space, 1 GiB by default), RLIMIT_CPU (timeout + 1 s of CPU, then
    SIGKILL), RLIMIT_FSIZE (largest file written, output included, 16 MiB), RLIMIT_NOFILE,
    RLIMIT_CORE = 0; RLIMIT_NPROC: inside a user namespace the sandbox's processes, outside
    one the uid's tasks now plus ``Limits.processes``. The kernel never applies RLIMIT_NPROC to
    root, so without a PID namespace root's program runs as uid 65534 ("nobody": it can then
    write only where anyone may and signal none of root's processes) when that uid can run the
    interpreter; otherwise (an interpreter under /root, say) its process count is unbounded
    until the timeout, which the report says (``processes_bounded``);
  * every process the program starts stays below the launcher (a child subreaper: orphans,
    ``setsid`` daemons included, are re-parented to it), and all of them are killed when the
    program ends or times out; then the process group too (SIGKILL);
  * an empty environment (no proxies, tokens or paths), stdin on /dev/null, a temporary working
    directory that is deleted afterwards, output read back from a size-limited file.

Best effort (applied when the kernel lets this process create namespaces, as with
``unshare -rn``; each one that applied is reported in ``RunResult.protections``):
  * network: a new network namespace, which has no interfaces but a loopback that is down, so
    no connection, not even to 127.0.0.1, can be made. Without it a prelude replaces the
    socket constructors before the code runs: that stops accidental use, not a determined
    program (it can reach the original class, or start another process);
  * processes: a new PID namespace. The code cannot see or signal any process outside it, and
    when the sandbox ends the kernel kills every process left in it. Without it, processes are
    found through the subreaper above (a program able to kill its ancestors can escape);
  * filesystem: a new mount namespace in which every mount is remounted read-only and the
    working directory is a private tmpfs (64 MiB by default; a bind mount of the directory if
    tmpfs is refused), so the code can write nowhere else and its files never reach the disk.
    Without it, writes are bounded only by the user's permissions and RLIMIT_FSIZE;
  * privileges: the code keeps the user's uid but no capabilities (bounding set emptied,
    SECBIT_NOROOT locked, no_new_privs), so it cannot undo the mounts, and as root it cannot
    override file permissions. This needs CAP_SETPCAP, i.e. root or a user namespace. The uid
    stays, but for root's fallback above (a root install's interpreter may live where no other
    user can read it), so without a PID namespace the code could signal the user's other
    processes, and without a mount namespace it can write wherever that uid may (for root:
    every root-owned file).

Not covered: CPU and memory shares between sandboxes (no cgroups), the number of files written
to the directory when no tmpfs applied, and anything a kernel exploit could do. It is a
containment for buggy or unlucky generated code, not a security boundary against an adversary.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from retain.errors import UserError

OUTPUT_TAIL_BYTES = 4096  # of stdout + stderr kept in a result (the end holds the traceback)
UNPRIVILEGED_UID = 65534  # "nobody": root's programs run as it where no PID namespace applied


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    timeout_s: float = 5.0  # wall clock, from the start of the launcher
    memory_mb: int = 1024  # RLIMIT_AS
    file_size_mb: int = 16  # RLIMIT_FSIZE: any one file, output included
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 32  # RLIMIT_NPROC (set inside a user namespace only)
    tmpfs_mb: int = 64  # size of the private working directory, when a mount namespace applies
    namespaces: bool = True  # try network/PID/mount namespaces (False: limits and prelude only)


@dataclass
class RunResult:
    """How one run ended. ``status``: "ok" (exit code 0), "failed" (another exit code, or killed
    by a resource limit), "timeout" (killed at the wall-clock limit) or "error" (the launcher
    itself failed before the code ran: a harness problem, not the code's)."""

    status: str
    returncode: int | None
    output: str  # the last OUTPUT_TAIL_BYTES of stdout + stderr
    duration_s: float
    protections: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The protections that applied, in one short line (``protections["summary"]``)."""
        return str(self.protections.get("summary", "unknown"))

    @property
    def isolation(self) -> str:
        """"namespaces" (new network and PID namespaces applied) or "rlimits" (the fallback:
        resource limits, a socket prelude, and a process tree killed at the end)."""
        return str(self.protections.get("isolation", "rlimits"))


# One copy of the process-tree walk: the parent uses it, and the launcher carries its text.
_TREE = r'''
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
exec(_TREE)  # defines descendants() in this module too


# The launcher: trusted code run in the fresh interpreter before the untrusted program. It
# applies the namespaces, mounts and limits, writes a JSON report of what applied to a pipe the
# program never inherits, then replaces the process with a new interpreter running the program.
# Forking here is safe: this interpreter is single-threaded (the parent, which may run torch
# threads, only ever starts a new interpreter, with no preexec_fn).
_LAUNCHER = r'''
import ctypes, json, os, re, resource, sys, time, traceback
''' + _TREE + r'''
cfg = json.loads(sys.argv[1])
report_fd, workdir, program = cfg["report_fd"], cfg["workdir"], cfg["program"]
info = {"network": "open", "processes": "process tree", "filesystem": "user permissions",
        "filesystem_read_only": None, "privileges": "unchanged", "rlimits": {}, "notes": []}
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]
NEWNS, NEWUSER, NEWPID, NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18

def err():
    return os.strerror(ctypes.get_errno())

def mount(src, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}: {err()}")

def write(path, text):
    with open(path, "w") as f:
        f.write(text)

def become_subreaper():
    # PR_SET_CHILD_SUBREAPER: an orphan below this process (a setsid() daemon included) is
    # re-parented here, not to the system's init, so that it can still be found and killed
    libc.prctl(36, 1, 0, 0, 0)

def end_descendants():
    """Kill and reap every process left below this one (a subreaper: orphans stay below)."""
    while True:
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:  # no child left, so no descendant either
            return
        time.sleep(0.002)

def unshare():
    """The strongest set of namespaces the kernel allows; 0 when none."""
    root = os.geteuid() == 0
    for flags in (NEWNET | NEWPID | NEWNS, NEWNET | NEWPID, NEWNET):
        # root may create namespaces directly; anyone else (or a root without CAP_SYS_ADMIN,
        # as in many containers) needs a user namespace around them
        for user in ((0, NEWUSER) if root else (NEWUSER,)):
            if libc.unshare(flags | user) == 0:
                return flags | user
        info["notes"].append(f"unshare {flags:#x}: {err()}")
    return 0

def map_ids(uid, gid):
    # the same ids inside as outside: files keep their owner, and the program (not uid 0 in
    # the namespace) loses the namespace's capabilities when it starts
    write("/proc/self/setgroups", "deny")
    write("/proc/self/uid_map", f"{uid} {uid} 1")
    write("/proc/self/gid_map", f"{gid} {gid} 1")

def mount_points():
    seen = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point not in seen:
                seen.append(point)
    return seen

def read_only_fs():
    # private propagation first, so nothing done here reaches the parent's namespace
    mount(None, "/", None, REC | PRIVATE)
    with open(program, "rb") as f:
        source = f.read()
    try:  # a size-limited private tmpfs: files written there never reach the disk
        mount("tmpfs", workdir, "tmpfs", NOSUID | NODEV, f"size={cfg['tmpfs_mb']}m,mode=0700")
        with open(program, "wb") as f:
            f.write(source)
        kind = f"read-only; working directory on a private {cfg['tmpfs_mb']} MiB tmpfs"
    except OSError as e:
        info["notes"].append(f"tmpfs: {e}")
        mount(workdir, workdir, None, BIND)
        kind = "read-only except the working directory"
    info["filesystem_read_only"] = False  # from here on, some mounts may be read-only
    failed = []
    for point in mount_points():
        if point == workdir:
            continue
        try:  # keep the flags a user namespace may have locked (nosuid, nodev, noexec)
            keep = os.statvfs(point).f_flag & (NOSUID | NODEV | NOEXEC)
        except OSError:
            keep = 0
        try:
            mount(None, point, None, REMOUNT | BIND | RDONLY | keep)
        except OSError:
            failed.append(point)
    if failed:
        kind += f"; {len(failed)} mount(s) stayed writable: {', '.join(failed[:5])}"
    info["filesystem"] = kind
    info["filesystem_read_only"] = not failed

def drop_privileges():
    # SECBIT_NOROOT (+ its lock): uid 0 gains no capabilities at exec; an empty bounding set:
    # no file capability can add any; ambient cleared; no_new_privs: setuid binaries neither
    try:
        if libc.prctl(28, 0x3, 0, 0, 0) != 0:  # PR_SET_SECUREBITS, NOROOT | NOROOT_LOCKED
            raise OSError(f"securebits: {err()}")
        for cap in range(64):
            if libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # CAPBSET_DROP
                raise OSError(f"capbset_drop {cap}: {err()}")
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, CLEAR_ALL
        info["privileges"] = "no capabilities"
    except OSError as e:
        info["notes"].append(str(e))
        info["privileges"] = "capabilities kept" if os.geteuid() == 0 else "unprivileged user"
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS

def tasks_of(uid):
    """The tasks (threads) of real uid ``uid`` but this one: what RLIMIT_NPROC counts."""
    n = 0
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: unknown
        return None
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/" + entry + "/status") as f:
                fields = dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)
            if int(fields["Uid"].split()[0]) == uid:
                n += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return n

def unprivileged_uid():
    """``cfg["uid"]``, given the working directory, when that uid can run the interpreter;
    else None (and the program runs as root)."""
    uid = cfg["uid"]
    needed = [(os.path.realpath(sys.executable), os.X_OK),
              (os.path.dirname(os.path.realpath(os.__file__)), os.R_OK | os.X_OK)]
    try:
        os.setgroups([])
        os.setegid(uid)
        os.seteuid(uid)
        try:  # access() as that uid would have it
            ok = all(os.access(path, mode, effective_ids=True) for path, mode in needed)
        finally:
            os.seteuid(0)
            os.setegid(0)
        if ok:
            os.chown(program, uid, uid)
            os.chown(workdir, uid, uid)
    except OSError as e:
        info["notes"].append(f"uid {uid}: {e}")
        return None
    if not ok:
        info["notes"].append(f"uid {uid} cannot run {sys.executable}: the program runs as root")
    return uid if ok else None

def set_limits(flags, uid):
    wanted = {"AS": (resource.RLIMIT_AS, cfg["memory_mb"] << 20),
              "CPU": (resource.RLIMIT_CPU, int(cfg["cpu_s"])),
              "FSIZE": (resource.RLIMIT_FSIZE, cfg["file_size_mb"] << 20),
              "NOFILE": (resource.RLIMIT_NOFILE, cfg["open_files"]),
              "CORE": (resource.RLIMIT_CORE, 0)}
    # RLIMIT_NPROC counts the tasks (processes and threads) of the real uid: inside a user
    # namespace the sandbox's only; outside one all of the uid's, so the limit is what that uid
    # runs now plus the sandbox's share. The kernel never applies it to root.
    others = None if uid == 0 or flags & NEWUSER else tasks_of(uid)
    info["processes_bounded"] = uid != 0 and (bool(flags & NEWUSER) or others is not None)
    if uid == 0:
        info["notes"].append("RLIMIT_NPROC does not bind root: the process count is unbounded")
    elif flags & NEWUSER:
        wanted["NPROC"] = (resource.RLIMIT_NPROC, cfg["processes"])
    elif others is None:
        info["notes"].append("RLIMIT_NPROC not set: no /proc to count the uid's tasks")
    else:
        wanted["NPROC"] = (resource.RLIMIT_NPROC, others + cfg["processes"])
    for name, (which, value) in wanted.items():
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)  # never above a limit already in force
        # CPU: SIGXCPU at the soft limit, SIGKILL one second later at the hard one
        soft_hard = (value, value + 1) if name == "CPU" else (value, value)
        if hard != resource.RLIM_INFINITY:
            soft_hard = (soft_hard[0], min(soft_hard[1], hard))
        resource.setrlimit(which, soft_hard)
        info["rlimits"][name] = value

def switch_uid(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # every capability goes with uid 0
    info["privileges"] = f"uid {uid}, no capabilities"

def summary(flags):
    fs = {True: "ro-fs", False: "partly-ro-fs", None: "rw-fs"}[info["filesystem_read_only"]]
    privileges = {"no capabilities": "no-caps", "unprivileged user": "user",
                  f"uid {cfg['uid']}, no capabilities": f"uid-{cfg['uid']}"}
    return ",".join(["netns" if flags & NEWNET else "socket-prelude",
                     "pidns" if flags & NEWPID else "subreaper", fs,
                     privileges.get(info["privileges"], "caps-kept"), "rlimits"])

def run_program(flags):
    uid = os.getuid()
    if uid == 0 and not flags & (NEWUSER | NEWPID):
        # root outside a PID namespace runs the program as an unprivileged uid: RLIMIT_NPROC
        # then applies, and root's files and processes are out of its reach
        uid = unprivileged_uid() or 0
    set_limits(flags, uid)
    if flags or os.geteuid() == 0:  # capabilities to drop: root's, or the namespace's
        drop_privileges()
    else:
        info["privileges"] = "unprivileged user"
    if uid != os.getuid():
        switch_uid(uid)
    os.chdir(workdir)
    info["summary"] = summary(flags)
    argv = [cfg["python"], "-I", "-B"]
    if flags & NEWNET:
        argv.append(program)
    else:
        argv += ["-c", cfg["prelude"], program]
    # One JSON line, on a close-on-exec descriptor: the program never holds it, so it cannot
    # write a report of its own; if exec fails, an error line follows (the last line counts).
    os.set_inheritable(report_fd, False)
    os.write(report_fd, (json.dumps(info) + "\n").encode())
    os.execve(cfg["python"], argv, {})

def main():
    flags = unshare() if cfg["namespaces"] else 0
    if not cfg["namespaces"]:
        info["notes"].append("namespaces not tried (Limits.namespaces=False)")
    info["isolation"] = "namespaces" if flags & NEWNET and flags & NEWPID else "rlimits"
    become_subreaper()
    if flags & NEWNET:
        info["network"] = "new network namespace (no interfaces up)"
    else:
        info["network"] = "socket prelude (best effort)"
    if flags & NEWUSER:
        try:  # refused where a security module limits user namespaces: go on unmapped
            map_ids(os.getuid(), os.getgid())
        except OSError as e:
            info["notes"].append(f"uid/gid map: {e}")
    if flags & NEWNS:
        try:
            read_only_fs()
        except OSError as e:
            info["notes"].append(str(e))
    if flags & NEWPID:
        info["processes"] = "new PID namespace (all killed with it)"
    else:
        info["processes"] = "process tree under a subreaper (all killed at the end)"
    # The first child is the reaper (PID 1 in a new PID namespace: when it exits, the kernel
    # kills every process left inside); its child becomes the program.
    init = os.fork()
    if init == 0:
        if flags & NEWPID and flags & NEWNS:
            try:  # a /proc that lists only the sandbox's processes
                mount("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC | RDONLY)
            except OSError as e:
                info["notes"].append(str(e))
        become_subreaper()
        child = os.fork()
        if child == 0:
            run_program(flags)  # returns only by raising (exec failed): reported below
        os.close(report_fd)
        while True:  # reap every orphan until the program ends; relay its exit status
            pid, status = os.wait()
            if pid == child:
                break
        if not flags & NEWPID:  # (a PID namespace's processes all die with its init)
            end_descendants()
        os._exit(exit_code(status))
    os.close(report_fd)
    _, status = os.waitpid(init, 0)
    if not flags & NEWPID:  # with one, /proc here may be the namespace's
        end_descendants()
    os._exit(exit_code(status))

def exit_code(status):
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)

try:
    main()
except BaseException:
    try:
        error = {"launcher_error": traceback.format_exc()}
        os.write(report_fd, (json.dumps(error) + "\n").encode())
    finally:
        os._exit(124)
'''

# Without a network namespace: make every socket constructor raise before the program runs.
# A subclass (not a function) keeps modules that subclass socket.socket (ssl) importable.
_PRELUDE = r'''
import _socket, runpy, socket, sys
class _NoNetwork(socket.socket):
    def __init__(self, *args, **kwargs):
        raise PermissionError("network access is disabled in the retain sandbox")
def _refuse(*args, **kwargs):
    raise PermissionError("network access is disabled in the retain sandbox")
for _module in (socket, _socket):
    _module.socket = _NoNetwork
    for _name in ("socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo",
                  "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        if hasattr(_module, _name):
            setattr(_module, _name, _refuse)
del _module, _name
_path = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(_path, run_name="__main__")
'''


def _wait_exit(pid: int, timeout: float) -> bool:
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


def _read_report(fd: int) -> dict:
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


def _end_tree(launcher: int) -> None:
    """Kill every process below the launcher, then its process group. The launcher is stopped
    first: a subreaper, it then keeps each orphan of a killed process below it, where the next
    pass finds it, and it cannot exit (handing them to the system's init) meanwhile."""
    try:
        os.kill(launcher, signal.SIGSTOP)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        alive = descendants(launcher, live=True)  # noqa: F821 (defined by exec(_TREE))
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)
    _kill_group(launcher)


def _remove_tree(path: str) -> None:
    """Delete the working directory even if the program made parts of it unreadable."""
    def force(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        except OSError:
            pass
        func(p)
    shutil.rmtree(path, onerror=force)


def run_python(source: str, limits: Limits = Limits(), *,
               python: str | None = None) -> RunResult:
    """Run ``source`` as a Python program in the sandbox (``python``: the interpreter, by
    default this one's). The parent only writes the file and reads the results back.
    Under ``configure("require")`` a UserError, before anything runs, where the code would not
    be isolated (``check_isolation``)."""
    if _POLICY.mode == "require":
        check_isolation(limits, python)
    result = _run(source, limits, python or sys.executable)
    _POLICY.record(result)
    return result


def _run(source: str, limits: Limits, python: str) -> RunResult:
    # the real path: the launcher finds its mount by this name in /proc/self/mountinfo
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="retain-sandbox-"))
    program = os.path.join(workdir, "program.py")
    with open(program, "w", encoding="utf-8") as f:
        f.write(source)
    read_end, write_end = os.pipe()
    cfg = {"report_fd": write_end, "workdir": workdir, "program": program, "python": python,
           "prelude": _PRELUDE, "cpu_s": math.ceil(limits.timeout_s) + 1,
           "memory_mb": limits.memory_mb, "file_size_mb": limits.file_size_mb,
           "open_files": limits.open_files, "processes": limits.processes,
           "tmpfs_mb": limits.tmpfs_mb, "namespaces": limits.namespaces,
           "uid": UNPRIVILEGED_UID}
    start = time.monotonic()
    timed_out = False
    try:
        # Output goes to an unnamed file of the parent's, not a pipe: RLIMIT_FSIZE bounds it, and
        # a program that floods its output cannot fill the parent's memory.
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(
                [python, "-I", "-S", "-B", "-c", _LAUNCHER, json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env={},
                cwd=workdir, close_fds=True, pass_fds=(write_end,), start_new_session=True)
            os.close(write_end)
            write_end = -1
            timed_out = not _wait_exit(proc.pid, limits.timeout_s)
            # Always, while the launcher is not yet reaped (its pid cannot be reused): a
            # timed-out program, and whatever it left behind, setsid() daemons included.
            _end_tree(proc.pid)
            proc.wait()
            duration = time.monotonic() - start
            out.seek(0, os.SEEK_END)
            out.seek(max(0, out.tell() - OUTPUT_TAIL_BYTES))
            output = out.read().decode("utf-8", errors="replace")
        report = _read_report(read_end)
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
        _remove_tree(workdir)
    if "launcher_error" in report or "summary" not in report:
        # the launcher did not reach the program: say so, do not blame the program
        detail = report.get("launcher_error", "") or output
        return RunResult("error", proc.returncode, detail[-OUTPUT_TAIL_BYTES:], duration, report)
    if timed_out:
        status = "timeout"
    else:
        status = "ok" if proc.returncode == 0 else "failed"
    return RunResult(status, proc.returncode, output, duration, report)


def run_many(sources: Sequence[str], limits: Limits = Limits(), *, workers: int | None = None,
             python: str | None = None) -> list[RunResult]:
    """``run_python`` on each source, ``workers`` at a time (threads that wait on processes),
    results in the order given."""
    if _POLICY.mode == "require":
        check_isolation(limits, python)  # once, before any of them runs
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if workers <= 1 or len(sources) <= 1:
        return [run_python(s, limits, python=python) for s in sources]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: run_python(s, limits, python=python), sources))


# ---------------------------------------------------------------- the run's policy
MODES = ("auto", "require")


class _Policy:
    """The run's ``sandbox`` setting and the weakest isolation its code ran under."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = "auto"
        self.weakest: RunResult | None = None
        self.warned = False
        self.probes: dict[tuple[str, bool], RunResult] = {}  # (python, namespaces): an empty run

    def record(self, result: RunResult) -> None:
        if result.status == "error":  # the launcher failed: no code ran
            return
        fell_back = result.isolation != "namespaces"
        with self.lock:
            if self.weakest is None or (fell_back and self.weakest.isolation == "namespaces"):
                self.weakest = result
            warn, self.warned = fell_back and not self.warned, self.warned or fell_back
        if fell_back and self.mode == "require":  # check_isolation said otherwise: a changed host
            raise UserError(_refusal(result))
        if warn:  # once per run, not once per program
            print(f"warning: {_fallback(result)}; `sandbox: require` refuses to run it so",
                  file=sys.stderr, flush=True)


_POLICY = _Policy()


def _why(result: RunResult) -> str:
    """Why no namespaces were made, from the launcher's notes."""
    notes = [n for n in result.protections.get("notes", [])
             if n.startswith(("unshare", "namespaces"))]
    return notes[-1] if notes else "namespaces unavailable"


def _fallback(result: RunResult) -> str:
    return (f"generated code runs without Linux namespaces ({_why(result)}): rlimits, a socket "
            f"prelude and a killed process tree only ({result.summary})")


def _refusal(result: RunResult) -> str:
    return (f"sandbox: require, but {_fallback(result)}; allow user namespaces (e.g. sysctl "
            "kernel.apparmor_restrict_unprivileged_userns=0) or set sandbox: auto")


def configure(mode: str = "auto") -> None:
    """Start a run: ``mode`` "auto" runs code with rlimits only where namespaces cannot be made,
    with one warning line; "require" refuses (a UserError) before any such code runs. Forgets
    what earlier runs' code ran under (``isolation_used``)."""
    if mode not in MODES:
        raise ValueError(f"sandbox mode {mode!r}: one of {', '.join(MODES)}")
    with _POLICY.lock:
        _POLICY.mode, _POLICY.weakest, _POLICY.warned = mode, None, False


def check_isolation(limits: Limits = Limits(), python: str | None = None) -> str:
    """The isolation code run with ``limits`` gets here: "namespaces" or "rlimits" (an empty
    program is run once per interpreter and setting to find out). Under ``configure("require")``
    a one-line UserError when it would be "rlimits"."""
    key = (python or sys.executable, limits.namespaces)
    with _POLICY.lock:
        probe = _POLICY.probes.get(key)
    if probe is None:
        probe = _run("pass\n", Limits(namespaces=limits.namespaces), key[0])
        with _POLICY.lock:
            _POLICY.probes[key] = probe
    if _POLICY.mode == "require" and probe.isolation != "namespaces":
        raise UserError(_refusal(probe))
    return probe.isolation


def isolation_used() -> dict[str, str] | None:
    """What this run's code ran under since ``configure`` (the weakest of its programs):
    ``{"isolation": "namespaces" | "rlimits", "protections": summary, "processes_bounded"}``;
    None when no code ran. A run's results.json carries it as "sandbox"."""
    with _POLICY.lock:
        weakest = _POLICY.weakest
    if weakest is None:
        return None
    return {"isolation": weakest.isolation, "protections": weakest.summary,
            "processes_bounded": bool(weakest.protections.get("processes_bounded"))}


__all__ = ["Limits", "RunResult", "run_python", "run_many", "configure", "check_isolation",
           "isolation_used", "MODES"]
