"""First stage of a sandboxed run (see eval/sandbox.py): set up, then become the candidate program.

Started by :func:`eval.sandbox.run_program` as ``python -I _sandbox_boot.py CONFIG_JSON`` (inside ``unshare``
when namespaces are used); never imported. Standard library only. In order:

1. read the candidate program (before any mount can hide the parent's temporary directory);
2. with ``mounts`` (a fresh mount namespace, real root): make every existing mount read-only in this
   namespace, put a private size-limited tmpfs over each ``scratch`` directory (/tmp, /var/tmp, /dev/shm) and
   each ``hide`` directory (an ancestor of the interpreter the sandbox uid cannot enter, such as /root), and
   bind the interpreter's directories (``reveal``) back read-only; the program is copied into the new /tmp;
3. resource limits, no new privileges (setuid binaries do not elevate), then the sandbox uid/gid if given;
4. one JSON line to the status fd (the parent takes its absence as a failed set-up, not a failing program);
5. exec the candidate with a minimal environment (PATH, HOME and TMPDIR in its working directory). As PID 1 of
   a new PID namespace it forks instead and stays as a minimal init (reaps, returns the candidate's status),
   so the candidate keeps normal signal behaviour; when this init exits the kernel kills the whole namespace.
"""

import ctypes
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_NOATIME, MS_NODIRATIME, MS_REMOUNT, MS_BIND, MS_REC = 1024, 2048, 32, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
# per-mount options that a read-only bind remount keeps
_KEEP = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
         "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
PR_SET_NO_NEW_PRIVS = 38
RLIMITS = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "fsize": resource.RLIMIT_FSIZE,
           "nproc": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE}

_libc = ctypes.CDLL(None, use_errno=True)


def _c(s):
    return None if s is None else os.fsencode(s)


def mount(source, target, fstype, flags, data=None):
    if _libc.mount(_c(source), _c(target), _c(fstype), ctypes.c_ulong(flags), _c(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _unescape(field):
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def _inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def read_only_mounts():
    """Bind-remount every mount of this (private) namespace read-only; returns the mount points that refused."""
    failed = []
    with open("/proc/self/mountinfo") as f:
        entries = [line.split() for line in f]
    for fields in sorted(entries, key=lambda e: _unescape(e[4])):
        point = _unescape(fields[4])
        if _inside(point, "/proc"):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in fields[5].split(","):
            flags |= _KEEP.get(opt, 0)
        try:
            mount(None, point, None, flags)
        except OSError:
            failed.append(point)
    return failed


def private_tree(cfg, program):
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    reveal = [p for p in cfg["reveal"] if os.path.isdir(p)]
    fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in reveal}
    refused = read_only_mounts()
    covers = []
    for path, mode, size in [(p, "1777", cfg["scratch_bytes"]) for p in cfg["scratch"]] + \
            [(p, "755", 1 << 20) for p in cfg["hide"]]:
        if os.path.isdir(path) and not any(_inside(path, c) for c in covers):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},nr_inodes=16384,mode={mode}")
            covers.append(path)
    os.umask(0o022)
    for path, fd in fds.items():
        if any(_inside(path, c) for c in covers) and not any(_inside(path, r) and r != path for r in fds):
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)
    work = "/tmp/sandbox"
    os.mkdir(work, 0o700)
    with open(os.path.join(work, "candidate.py"), "w") as f:
        f.write(program)
    return work, {"read_only_refused": refused, "covered": covers}


def main():
    cfg = json.loads(sys.argv[1])
    with open(cfg["program"]) as f:
        program = f.read()
    report = {}
    if cfg["mounts"]:
        work, report = private_tree(cfg, program)
    else:
        work = cfg["workdir"]
    tmp = os.path.join(work, "tmp")
    os.makedirs(tmp, exist_ok=True)
    if cfg["uid"] is not None:
        for root, dirs, files in os.walk(work):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(name, cfg["uid"], cfg["gid"])
    for name, value in cfg["limits"].items():
        if value is not None:
            soft, hard = value if isinstance(value, list) else (value, value)
            resource.setrlimit(RLIMITS[name], (soft, hard))
    prctl = getattr(_libc, "prctl", None)
    report["no_new_privs"] = prctl is not None and prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
    os.chdir(work)
    env = {"PATH": cfg["path"], "HOME": work, "TMPDIR": tmp}
    argv = [cfg["python"], "-I", "candidate.py"]
    os.write(cfg["status_fd"], (json.dumps({"ok": True, **report}) + "\n").encode())
    os.close(cfg["status_fd"])
    if not cfg["init"]:
        os.execve(argv[0], argv, env)
    child = os.fork()
    if child == 0:
        try:
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    while True:
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
