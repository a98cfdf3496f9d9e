"""A run's workdir as the commands meet it: the checks that a path is one (or can become one), and its lock.

Lock: `hnm train` and `hnm train-ce` hold an exclusive `fcntl.flock` on <workdir>/.lock for the run's lifetime;
`hnm eval`, `export` and `mine --workdir` hold a shared one, so several readers run together but never beside a
trainer. A process that cannot lock fails at once with WorkdirBusy naming the holder (pid, host, command) and the
lock file. The kernel releases a flock when its process ends, however it ends (SIGKILL and OOM kills included), so a
dead run never blocks a rerun; its record is still in the file, and the next holder takes it over with a warning.

Records (JSON, pid / host / command / since): the exclusive holder's is the content of .lock (emptied on a clean
release); each shared holder's is a file .lock.reader.<host>.<pid> beside it (removed on a clean release). In a
multi-process run each process locks its own file (.lock for process 0, .lock.process<i> for the others), so a second
run on the same workdir fails in every process, while `hnm eval` beside it fails on process 0's.

Only the standard library: the CLI checks paths with it before importing JAX.
"""

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
READER_PREFIX = ".lock.reader."  # + <host>.<pid>: a shared holder's record
CONFIG_FILE = "config.json"  # what makes a folder a training workdir (written first by `hnm train`)
RECORD_WAIT_S = 1.0  # a holder writes its record just after locking: how long a refused process waits to read it


class WorkdirError(OSError):
    """A path given as a workdir (or output) that is not what the command expects; one line naming the path."""

    def __str__(self) -> str:  # OSError's str() would prefix an errno
        return str(self.args[0]) if self.args else ""


class WorkdirBusy(WorkdirError):
    """Another process holds the workdir's lock; the message names it and the lock file."""


def check_run(workdir: str | Path) -> Path:
    """`workdir` as a Path when it is a training workdir (a folder with config.json); raises WorkdirError."""
    path = Path(workdir)
    if not path.exists():
        raise WorkdirError(f"{path}: no such folder (expected a training workdir, with {CONFIG_FILE})")
    if not path.is_dir():
        raise WorkdirError(f"{path}: not a folder (expected a training workdir, with {CONFIG_FILE})")
    if not (path / CONFIG_FILE).is_file():
        raise WorkdirError(f"{path}: no {CONFIG_FILE} (expected a training workdir: the --workdir of `hnm train`)")
    return path


def check_new_or_run(workdir: str | Path) -> Path:
    """`workdir` as a Path when a run can write there: an existing folder, or a path whose nearest existing
    ancestor is a writable folder; raises WorkdirError naming the path and what was expected."""
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"{path}: not a folder (expected a workdir folder, or a path to create one at)")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise WorkdirError(f"{ancestor}: not a folder (expected a folder to create the workdir {path} in)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise WorkdirError(f"{ancestor}: not writable (expected a folder this user may create {path} in)")
    return path


def make_workdir(workdir: str | Path) -> Path:
    """Creates `workdir` (and its parents) if needed; WorkdirError naming it when that fails."""
    path = check_new_or_run(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorkdirError(f"{path}: cannot create the workdir ({error.strerror or error})") from None
    return path


def check_output_file(path: str | Path, flag: str, *, folder_exists: bool = True) -> Path:
    """`path` as a Path when a file can be written there: not a folder, and (with `folder_exists`) in an existing
    folder; else WorkdirError naming the path and the flag."""
    path = Path(path)
    if path.is_dir():
        raise WorkdirError(f"{path}: is a folder (expected a file name for {flag})")
    ancestor = path.parent
    while not ancestor.exists():
        if folder_exists:
            raise WorkdirError(f"{path.parent}: no such folder (expected an existing folder for {flag} {path})")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise WorkdirError(f"{ancestor}: not a folder (expected a folder for {flag} {path})")
    return path


def _this_record(command: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _read_record(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        record = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _describe(record: dict) -> str:
    return (f"pid {record.get('pid')} on host {record.get('host')} ({record.get('command')}, "
            f"since {record.get('since')})")


def _alive(record: dict) -> bool:
    """False only for a record of this host whose process is gone (another host's cannot be checked)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


def lock_name(process_index: int) -> str:
    return LOCK_FILE if process_index == 0 else f"{LOCK_FILE}.process{process_index}"


class WorkdirLock:
    """The lock of one workdir, held from `acquire()` to `release()` (or as a context manager)."""

    def __init__(self, workdir: str | Path, command: str, *, shared: bool = False, process_index: int = 0):
        self.workdir = Path(workdir)
        self.command = command
        self.shared = shared
        self.path = self.workdir / (LOCK_FILE if shared else lock_name(process_index))
        self._fd: int | None = None
        self._reader_file: Path | None = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> "WorkdirLock":
        """Takes the lock without waiting; raises WorkdirBusy naming the holder when another process has it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WorkdirError(f"{self.path}: cannot open the workdir's lock file ({error.strerror})") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkdirBusy(f"{self.path}: {self.workdir} is in use by {self._holders()}; wait for it to end or "
                              "use another workdir") from None
        self._fd = fd
        self._take_over_stale()
        record = json.dumps({**_this_record(self.command), "mode": "shared" if self.shared else "exclusive"})
        if self.shared:
            self._reader_file = self.workdir / f"{READER_PREFIX}{socket.gethostname()}.{os.getpid()}"
            self._reader_file.write_text(record + "\n")
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (record + "\n").encode(), 0)
            os.fsync(fd)
        return self

    def release(self) -> None:
        """Empties this holder's record and unlocks (closing the file is what unlocks)."""
        if self._fd is None:
            return
        if self._reader_file is not None:
            self._reader_file.unlink(missing_ok=True)
            self._reader_file = None
        else:
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None

    def _reader_records(self) -> list[tuple[Path, dict]]:
        found = [(p, _read_record(p)) for p in sorted(self.workdir.glob(f"{READER_PREFIX}*"))]
        return [(p, r) for p, r in found if r is not None]

    def _take_over_stale(self) -> None:
        """Records left by holders that ended without releasing (we hold the lock, so they are gone)."""
        stale = []
        if not self.shared:
            record = _read_record(self.path)
            if record is not None:
                stale.append(record)
            for path, record in self._reader_records() if self.path.name == LOCK_FILE else []:
                stale.append(record)
                path.unlink(missing_ok=True)
        else:  # other readers may be alive; the exclusive record and dead readers' records are stale
            record = _read_record(self.workdir / LOCK_FILE)
            if record is not None:
                stale.append(record)
                os.truncate(self.workdir / LOCK_FILE, 0)
            for path, record in self._reader_records():
                if not _alive(record):
                    stale.append(record)
                    path.unlink(missing_ok=True)
        for record in stale:
            log.warning("%s: took over the lock of %s, which ended without releasing it (killed?)", self.path,
                        _describe(record))

    def _holders(self) -> str:
        """Who holds the lock, from the records (a holder writes its record just after locking: wait a moment)."""
        deadline = time.monotonic() + RECORD_WAIT_S
        while True:
            record = _read_record(self.path)
            if record is not None:
                return _describe(record)
            readers = [r for _, r in self._reader_records() if _alive(r)] if self.path.name == LOCK_FILE else []
            if readers:
                return " and ".join(_describe(r) for r in readers)
            if time.monotonic() > deadline:
                return "another process (it has not written its pid yet)"
            time.sleep(0.05)

