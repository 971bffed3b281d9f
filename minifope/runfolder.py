"""A run folder: DIR/ckpt.npz, DIR/log.jsonl, and the lock that keeps one writer in it.

    with RunFolder("runs/rope") as folder:       # refuses a folder another process holds
        records = folder.read_log(up_to_step=500)
        folder.append_log({"step": 501, "loss": 1.9})

The lock. A trainer holds an exclusive, non-blocking `flock` on DIR/.lock for as long as it
writes the folder; a second trainer (or experiment) on the same folder is refused at once,
with the holder's process id. The operating system drops the lock when its process dies,
even by kill -9, so a crash never leaves a folder locked; the .lock file itself is removed on
a clean exit, and a leftover one is harmless. (On a system without fcntl, Windows, there is
no lock.)

The log. Each line of log.jsonl is one JSON record with a "step". A disk that fills during
an append leaves a torn last line: reading drops any line that is not a whole record, and
says so, rather than refusing a run whose checkpoint is whole.
"""

import json
import os
import sys
from pathlib import Path

from .checkpoint import CKPT_NAME, atomic_write, remove_stale_temp_files
from .errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOG_NAME = "log.jsonl"
LOCK_NAME = ".lock"


def notice(message):
    """A one-line note to the user on stderr, kept apart from a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(f"note: {message}", file=sys.stderr)


def make_folder(path, what="--out"):
    """mkdir -p path, with every way that can fail (a file in the way, a dangling or looping
    link, a read-only or virtual file system) reported as the user's mistake."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what} {path}: a file (or a link to nothing) is in the way; "
                        "choose another folder") from None
    except OSError as e:
        raise UserError(f"{what} {path}: cannot make this folder ({e.strerror})") from None
    if not path.is_dir():
        raise UserError(f"{what} {path} is not a folder; choose another")
    return path


class RunFolder:
    """A run folder held by this process: see the module's docstring."""

    def __init__(self, path, what="--out"):
        self.path = Path(path)
        self.what = what
        self._lock = None
        self._created = False

    @property
    def checkpoint(self):
        return self.path / CKPT_NAME

    @property
    def log_path(self):
        return self.path / LOG_NAME

    def __enter__(self):
        self._created = not os.path.lexists(self.path)
        make_folder(self.path, self.what)
        if fcntl is not None:
            self._acquire()
        removed = remove_stale_temp_files(self.path)
        if removed:
            notice(f"removed {len(removed)} temporary file(s) an interrupted save left in {self.path}")
        return self

    def _acquire(self):
        lock_path = self.path / LOCK_NAME
        for _ in range(3):  # another process may remove the file between our open and our lock
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise UserError(f"{self.what} {self.path}: cannot write in this folder "
                                f"({e.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise UserError(f"{self.path} is in use by another trainer (process {holder}); "
                                f"wait for it to finish, or choose another {self.what}") from None
            try:
                same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._lock = fd
                return
            os.close(fd)
        raise UserError(f"{self.path}: could not take its lock; try again")

    def __exit__(self, *exc):
        if self._lock is not None:
            try:
                os.unlink(self.path / LOCK_NAME)
            except OSError:
                pass
            os.close(self._lock)  # closing drops the flock
            self._lock = None
        if self._created:  # a run refused before it wrote anything leaves no empty folder behind
            try:
                self.path.rmdir()
            except OSError:
                pass

    # --- the log ---

    def read_log(self, up_to_step):
        """The log's records up to and including up_to_step; [] when there is no log."""
        return read_log(self.log_path, up_to_step)

    def rewrite_log(self, records):
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(self.log_path, lambda f: f.write(text.encode()))

    def append_log(self, record):
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def start(self, records, new):
        """Ready the folder for a run that has passed its checks: the log holds exactly the
        records the run starts from (a new run: none, so a failed earlier attempt's lines
        never mix with it), and a new run removes the checkpoint it replaces (--overwrite)."""
        if new and self.checkpoint.exists():
            self.checkpoint.unlink()
        self.rewrite_log(records)


def read_log(path, up_to_step):
    """Records of a log.jsonl up to and including up_to_step; lines that are not whole
    records (a write cut short by a full disk or a crash) are dropped with a note."""
    path = Path(path)
    if not path.exists():
        return []
    records, damaged = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            damaged += 1
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            damaged += 1
            continue
        records.append(record)
    if damaged:
        notice(f"dropped {damaged} damaged line(s) of {path} (a write cut short); "
               "the checkpoint is unaffected")
    return [r for r in records if r["step"] <= up_to_step]
