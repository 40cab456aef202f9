"""A run's output folder: one writer at a time, records that are never lost, checkpoints that are
verified before use, and a run identity that a resume must match.

Guarantees (every long run of the library writes through this module):

- **One writer.** :meth:`RunDirectory.lock` takes an exclusive OS lock (``flock``) on
  ``<dir>/.lock``, released on exit and by the OS when a process dies; a second process gets
  :class:`RunInUseError` naming the holder's PID.
- **Records.** ``records.jsonl`` is append-only: one JSON line per finished step, flushed and
  fsynced. The only damage a crash can cause is a torn last line, which a resume truncates; a
  damaged line anywhere else raises :class:`DamagedRunError` naming the file and line, and is
  never silently dropped. Records newer than the checkpoint are removed by an atomic rewrite
  (temporary file, fsync, rename).
- **Checkpoints** are written to a temporary file, fsynced and renamed; the file holds a SHA-256
  of its payload, verified on load. The previous checkpoint is kept (``<name>.prev``) until the
  new one is complete. A damaged checkpoint raises :class:`DamagedCheckpointError` naming the
  file; :meth:`RunDirectory.load_checkpoint` with ``restart_round=True`` moves it aside and
  returns the previous one, so the last step is redone. Stale temporary files from a kill are
  removed when the folder is opened.
- **Identity.** ``config.json`` holds every setting that changes a run's results (and content
  hashes of its data); :meth:`RunDirectory.check_identity` refuses a resume with different
  settings and lists each difference as ``old -> new``.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

_MAGIC = b"ALKCKPT1\n"
_LOCK = ".lock"


class RunInUseError(ValueError):
    """Another live process holds the run directory."""


class DamagedRunError(ValueError):
    """A run file that cannot be used as it is (a damaged record line, unreadable config)."""


class DamagedCheckpointError(ValueError):
    """A checkpoint whose bytes do not match their checksum, or that cannot be read."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"checkpoint {path} is damaged ({reason})")

    def __reduce__(self) -> tuple:  # crosses process boundaries (grid workers) intact
        return type(self), (self.path, self.reason)


class RunExistsError(ValueError):
    """The directory already holds a run and no resume was asked for."""


class SettingsChangedError(ValueError):
    """A resume whose settings differ from the stored run's."""


def fingerprint(*parts: Any) -> str:
    """A short SHA-256 hex digest of JSON-serialisable parts and byte strings (for run identity)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary sibling of ``path`` (fsynced) and return its path; the
    leading dot and ``.tmp`` suffix let :meth:`RunDirectory.lock` remove it after a kill."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def settings_changes(old: dict, new: dict, *, recorded_only: bool = False) -> list[str]:
    """``key: old -> new`` for every setting that differs between two run identities (JSON
    values); with ``recorded_only``, only the keys ``old`` records count (an identity written by
    an earlier alkernels may record fewer)."""
    keys = set(old) if recorded_only else set(old) | set(new)
    return [f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in sorted(keys)
            if old.get(k) != new.get(k)]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: a temporary sibling, fsync, rename, fsync of the folder."""
    os.replace(_write_temp(path, data), path)
    _fsync_dir(path.parent)


def _checksummed_bytes(state: Any) -> bytes:
    """The file content :func:`read_checksummed` reads: header, SHA-256 of the payload, payload."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def write_checksummed(path: Path, state: Any) -> None:
    """Write ``state`` (anything ``torch.save`` takes) atomically, with a SHA-256 of its bytes that
    :func:`read_checksummed` verifies."""
    atomic_write_bytes(path, _checksummed_bytes(state))


def read_checksummed(path: Path, map_location: Any = None) -> Any:
    """Read a file written by :func:`write_checksummed`.

    Raises:
        DamagedCheckpointError: missing, unreadable, truncated or not matching its checksum.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DamagedCheckpointError(path, f"unreadable: {err.strerror}") from err
    head, _, rest = data.partition(b"\n")
    digest, _, payload = rest.partition(b"\n")
    if head + b"\n" != _MAGIC or len(digest) != 64:
        raise DamagedCheckpointError(path, "no alkernels checkpoint header: truncated or overwritten")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise DamagedCheckpointError(path, "its bytes do not match the stored checksum")
    try:
        return torch.load(io.BytesIO(payload), weights_only=False, map_location=map_location)
    except Exception as err:  # a payload that passed the checksum but does not load
        raise DamagedCheckpointError(path, f"cannot be loaded: {type(err).__name__}: {err}") from err


def append_record(path: Path, record: dict) -> None:
    """Append ``record`` as one JSON line to ``path``, flushed and fsynced."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_records(path: str | os.PathLike, *, repair: bool = False) -> list[dict]:
    """The records of a ``records.jsonl``.

    A torn last line (the only damage a crash can cause: no newline at the end, or not valid
    JSON) is skipped, and with ``repair`` truncated from the file.

    Raises:
        DamagedRunError: a line other than the last is not a JSON object; names file and line.
    """
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (b"" if none)
    out: list[dict] = []
    good_bytes = 0
    for number, line in enumerate(complete, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            if number == len(complete) and not tail:
                break  # the last line, torn by a kill before its newline was durable
            raise DamagedRunError(f"{p}, line {number}: damaged record ({err}); the records after it "
                                  "are not used. Repair or remove the line to continue") from err
        out.append(record)
        good_bytes += len(line) + 1
    if repair and good_bytes != len(data):
        with open(p, "r+b") as handle:
            handle.truncate(good_bytes)
            handle.flush()
            os.fsync(handle.fileno())
    return out


class RunDirectory:
    """The output folder of one run (see the module docstring for the guarantees).

    Args:
        path: the folder; created when missing.
        checkpoint: the checkpoint's file name.
    """

    def __init__(self, path: str | os.PathLike, checkpoint: str = "checkpoint.pt") -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output {self.path} exists and is not a directory")
        self.checkpoint_path = self.path / checkpoint
        self.previous_path = self.path / f"{checkpoint}.prev"
        self.records_path = self.path / "records.jsonl"
        self.config_path = self.path / "config.json"
        self._lock_handle: io.TextIOWrapper | None = None

    # -- one writer ----------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator["RunDirectory"]:
        """Hold the folder's exclusive lock meanwhile (and remove stale temporary files)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / _LOCK, "a+", encoding="utf-8")
        except OSError as err:
            raise ValueError(f"cannot write to the output folder {self.path}: {err.strerror}") from err
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise RunInUseError(f"{self.path} is in use by another run (process {holder}); two runs "
                                    "must not write one folder: wait for it or choose another output "
                                    "folder") from err
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle
        try:
            for stale in self.path.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            yield self
        finally:
            self._lock_handle = None
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    # -- identity ------------------------------------------------------------------------------
    def has_run(self) -> bool:
        """Whether the folder already holds a run (its ``config.json``)."""
        return self.config_path.exists()

    def check_identity(self, config: dict, *, resume: bool) -> None:
        """Refuse to start over an existing run without ``resume``, or to resume with other settings.

        Raises:
            RunExistsError: the folder holds a run and ``resume`` is False.
            SettingsChangedError: a resume whose settings differ, listing ``key: old -> new``.
            DamagedRunError: ``config.json`` is unreadable.
        """
        if not self.has_run():
            return
        if not resume:
            raise RunExistsError(f"{self.path} already holds a run; resume it (resume=True) or choose "
                                 "another output folder")
        changed = settings_changes(self.read_config(), config)
        if changed:
            raise SettingsChangedError(f"cannot resume {self.path}: its settings differ ("
                                       + "; ".join(changed) + "); use the original settings or another "
                                       "output folder")

    def read_config(self) -> dict:
        """The stored identity (``config.json``).

        Raises:
            DamagedRunError: ``config.json`` is unreadable.
        """
        try:
            return json.loads(self.config_path.read_text())
        except ValueError as err:
            raise DamagedRunError(f"{self.config_path} is unreadable ({err})") from err

    def write_config(self, config: dict) -> None:
        """Store the run's identity (atomically)."""
        atomic_write_bytes(self.config_path, json.dumps(config, indent=1, sort_keys=True).encode())

    # -- records -------------------------------------------------------------------------------
    def records(self, *, upto: int | None = None, key: str = "round") -> list[dict]:
        """The records (a torn last line truncated); with ``upto``, only those with
        ``record[key] < upto``, and newer ones removed from the file by an atomic rewrite."""
        records = read_records(self.records_path, repair=True)
        if upto is None:
            return records
        kept = [r for r in records if r[key] < upto]
        if len(kept) != len(records):
            atomic_write_bytes(self.records_path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        return kept

    def append_record(self, record: dict) -> None:
        """Append one record line, flushed and fsynced."""
        append_record(self.records_path, record)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, state: Any) -> None:
        """Write ``state`` (anything ``torch.save`` takes) with its checksum; the previous
        checkpoint becomes ``<name>.prev`` once the new one is complete."""
        tmp = _write_temp(self.checkpoint_path, _checksummed_bytes(state))
        if self.checkpoint_path.exists():
            os.replace(self.checkpoint_path, self.previous_path)
        os.replace(tmp, self.checkpoint_path)
        _fsync_dir(self.path)

    def save_state(self, name: str, state: Any) -> None:
        """Write a state file that is not rotated (e.g. the initial weights), checksummed."""
        write_checksummed(self.path / name, state)

    def load_state(self, name: str, *, map_location: Any = None) -> Any:
        """Read a file written by :meth:`save_state`, verifying its checksum.

        Raises:
            DamagedCheckpointError: missing, unreadable or damaged.
        """
        return self._read_checkpoint(self.path / name, map_location)

    def _read_checkpoint(self, path: Path, map_location: Any) -> Any:
        return read_checksummed(path, map_location)

    def load_checkpoint(self, *, restart_round: bool = False, map_location: Any = None) -> Any | None:
        """The newest intact checkpoint's state, or None when there is none.

        A missing checkpoint with a ``.prev`` present (a kill between the two renames) falls
        back to ``.prev``. With ``restart_round``, a damaged checkpoint is moved aside to
        ``<name>.damaged-<ns>`` and ``.prev`` is returned (the caller redoes the last step).

        Raises:
            DamagedCheckpointError: the checkpoint is damaged (and ``restart_round`` is False, or
                no intact previous checkpoint exists).
        """
        if not self.checkpoint_path.exists():
            if self.previous_path.exists():
                return self._read_checkpoint(self.previous_path, map_location)
            return None
        try:
            return self._read_checkpoint(self.checkpoint_path, map_location)
        except DamagedCheckpointError:
            if not restart_round:
                raise
        if not self.previous_path.exists():
            raise DamagedCheckpointError(self.checkpoint_path, "damaged, and no previous checkpoint to restart "
                                         "from: start the run again in a new folder")
        state = self._read_checkpoint(self.previous_path, map_location)
        os.replace(self.checkpoint_path, self.path / f"{self.checkpoint_path.name}.damaged-{time.time_ns()}")
        return state
