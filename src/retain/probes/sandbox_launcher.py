"""The program texts that a sandboxed run starts: the trusted launcher, which applies the
namespaces, read-only mounts, dropped privileges and resource limits in a fresh interpreter and
reports what applied, and the socket prelude that stands in for a network namespace.
"""

from __future__ import annotations

from retain.probes.sandbox_process import TREE

# The launcher: trusted code run in the fresh interpreter before the untrusted program. It
# applies the namespaces, mounts and limits, writes a JSON report of what applied to a pipe the
# program never inherits, then replaces the process with a new interpreter running the program.
# Forking here is safe: this interpreter is single-threaded (the parent, which may run torch
# threads, only ever starts a new interpreter, with no preexec_fn).
LAUNCHER = r'''
import ctypes, json, os, re, resource, sys, time, traceback
''' + TREE + r'''
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
PRELUDE = r'''
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
