"""Run bneck commands in real processes that ``kill -9`` themselves at a chosen file event.

    python tests/reliability/killer.py ROOT N COUNT_FILE bneck-args...   one command
    python tests/reliability/killer.py --serve                            a fork server

File events are the interpreter's audit events for opening, renaming, removing and
creating files and folders under ROOT, in any thread. The process kills itself with
a real SIGKILL (no handler, no cleanup) at the N-th one; N = 0 kills nothing and
writes the number of events to COUNT_FILE at exit, so a test can pick seeded kill
points over a whole uninterrupted run.

The fork server imports TensorFlow and bneck once, then forks one fresh child per
request (one JSON line on stdin: root, kill_at, count_file, args, log, and optionally
fsize, a file size limit in bytes; honour_permissions: run as root without the
capabilities that let root write into read-only folders; env: variables to set; cwd: the folder to run in;
offline: every attempt to resolve a host name or open a connection fails, and is
reported on stderr as "NETWORK ATTEMPT: ..."). It answers one JSON line with the child's status:
the exit code, or minus the signal that ended it. Only the import time is shared;
every command runs and dies in its own process.
"""

import ctypes
import json
import os
import resource
import signal
import sys

EVENTS = {"open": 0, "os.rename": 1, "os.remove": 0, "os.mkdir": 0, "os.rmdir": 0, "shutil.rmtree": 0}


def run(root: str, target: int, count_file: str, args: list) -> int:
    """Run ``bneck ARGS`` in this process, killing it at file event ``target`` under ``root``."""
    root, seen = os.path.abspath(root), [0]

    def hook(event, hook_args):
        where = EVENTS.get(event)
        if where is None or len(hook_args) <= where or not isinstance(hook_args[where], (str, bytes)):
            return
        if not os.path.abspath(os.fsdecode(hook_args[where])).startswith(root):
            return
        seen[0] += 1
        if seen[0] == target:
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    from bneck.pipeline.cli import main as bneck

    code = bneck(args)
    if target == 0:
        with open(count_file, "w") as handle:
            handle.write(str(seen[0]))
    return code


def _honour_permissions() -> None:
    """Drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so file modes bind even for root."""
    if os.geteuid() != 0:
        return

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF
    data[0].effective &= keep
    data[0].permitted &= keep
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


NETWORK_EVENTS = (
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.create_connection",
    "urllib.Request",
    "http.client.connect",
)


def _offline() -> None:
    """Make every network attempt fail, and say so on stderr, as on a machine without a network."""

    def hook(event, args):
        if event in NETWORK_EVENTS:
            print(f"NETWORK ATTEMPT: {event} {str(args)[:200]}", file=sys.stderr, flush=True)
            raise OSError(101, "Network is unreachable (reliability test: offline)")

    sys.addaudithook(hook)


def _child(request: dict) -> None:
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    if request.get("fsize"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (request["fsize"], request["fsize"]))
    code = 1
    try:
        os.environ.update(request.get("env") or {})
        if request.get("cwd"):
            os.chdir(request["cwd"])
        if request.get("offline"):
            _offline()
        if request.get("honour_permissions"):
            _honour_permissions()
        code = run(request["root"], request["kill_at"], request["count_file"], request["args"])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    from bneck.core.tfimport import import_tensorflow

    import_tensorflow()
    import keras  # noqa: F401

    import bneck.pipeline.cli  # noqa: F401
    import bneck.pipeline.finetuning.stage  # noqa: F401
    import bneck.pipeline.training.stage  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"returncode": code}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit(run(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]))
