"""A run's output folder: one writer at a time, records that are never lost, checkpoints that are
verified before use, and a run identity that a resume must match.

Guarantees (every long run of the library writes through this module):

- **Only its own folders.** A folder is written only when it is new, empty, or already an
  alkernels folder (its ``.alkernels`` marker, or the files of a run made before the marker
  existed); any other non-empty folder raises :class:`ForeignFolderError` before anything is
  written, so a mistyped ``--out`` never touches a user's files. Temporary files are removed only
  under this module's own names (``.<name>.<pid>.alk-tmp``).
- **One writer.** :meth:`RunDirectory.lock` takes an exclusive OS lock (``flock``; on Windows,
  ``msvcrt.locking``: see :mod:`alkernels._locking`) on ``<dir>/.lock``, released on exit and by
  the OS when a process dies; a second process gets
  :class:`RunInUseError` naming the holder's PID. The lock file is opened without following a
  symlink and is never truncated unless it is the library's own (empty or a PID).
- **Records.** ``records.jsonl`` is append-only: one JSON line per finished step, flushed and
  fsynced. The only damage a crash can cause is a torn last line, which a resume truncates; a
  damaged line anywhere else raises :class:`DamagedRunError` naming the file and line, and is
  never silently dropped. Records newer than the checkpoint are removed by an atomic rewrite
  (temporary file, fsync, rename).
- **Checkpoints** are written to a temporary file, fsynced and renamed; the file holds a SHA-256
  of its payload, verified on load. They are loaded with ``torch.load(weights_only=True)`` (no
  code runs, whoever wrote the file: the checksum only detects damage, anyone can recompute it)
  and their top-level keys are checked, so a file of the wrong shape is a
  :class:`DamagedCheckpointError` naming it. The previous checkpoint is kept (``<name>.prev``) until the
  new one is complete. A damaged checkpoint raises :class:`DamagedCheckpointError` naming the
  file; :meth:`RunDirectory.load_checkpoint` with ``restart_round=True`` moves it aside and
  returns the previous one, so the last step is redone. Stale temporary files from a kill are
  removed when the folder is opened.
- **Identity.** ``config.json`` holds every setting that changes a run's results (and content
  hashes of its data); :meth:`RunDirectory.check_identity` refuses a resume with different
  settings and lists each difference as ``old -> new``. A folder whose run never finished a
  step (settings written, no record, no checkpoint) holds no run: it is started again, with the
  same or corrected settings, and the restart is logged.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import stat
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from alkernels._locking import NOFOLLOW, lock, unlock
from alkernels._paths import user_path

_MAGIC = b"ALKCKPT1\n"
_LOCK = ".lock"
#: The file that marks a folder as one alkernels writes (run, grid or study folder).
MARKER = ".alkernels"
_TMP_SUFFIX = ".alk-tmp"
_TMP_NAME = re.compile(r"^\..+\.\d+\.alk-tmp$")
_log = logging.getLogger("alkernels")


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


class ForeignFolderError(ValueError):
    """A non-empty folder that alkernels did not create: it is never written into."""


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
    """Make a rename in the folder ``path`` durable (Windows cannot open a folder for that: there
    the rename's own journaling is all there is)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary sibling of ``path`` (fsynced) and return its path; its name
    (``.<name>.<pid>.alk-tmp``) lets :meth:`RunDirectory.lock` remove it after a kill, and no
    file of anyone else's."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
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
    return [
        f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in sorted(keys) if old.get(k) != new.get(k)
    ]


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


def read_checksummed(path: Path, map_location: Any = None, *, keys: Iterable[str] | None = None) -> Any:
    """Read a file written by :func:`write_checksummed`, with ``torch.load(weights_only=True)``:
    tensors, numbers, strings and containers only, so no code in the file runs.

    Args:
        keys: when given, the state must be a dict holding at least these keys.

    Raises:
        DamagedCheckpointError: missing, unreadable, truncated, not matching its checksum, holding
            anything but plain data, or of the wrong structure.
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
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location=map_location)
    except Exception as err:  # a payload that passed the checksum but does not load as plain data
        reason = str(err).split("\n")[0][:300]
        raise DamagedCheckpointError(path, f"cannot be loaded as plain data: {type(err).__name__}: {reason}") from err
    if keys is not None:
        missing = sorted(set(keys) - set(state)) if isinstance(state, dict) else None
        if missing is None or missing:
            what = f"missing keys {missing}" if missing else f"a {type(state).__name__}, not a dict"
            raise DamagedCheckpointError(path, f"not a state of this kind ({what})")
    return state


def is_alkernels_folder(path: Path) -> bool:
    """Whether ``path`` (an existing folder) is one alkernels writes: it has the ``.alkernels``
    marker, or the files of a run, grid or study made before the marker existed (a ``config.json``
    with a run's ``strategy`` and ``seed``, an ``experiment.json`` of a grid or study, or a grid's
    compact ``runs.jsonl``)."""
    if (path / MARKER).is_file():
        return True
    for name, keys in (
        ("config.json", ({"strategy", "seed"},)),
        ("experiment.json", ({"preset", "seeds"}, {"pretraining", "settings"})),
        ("runs.jsonl", ({"config", "records"},)),
    ):
        try:
            with open(path / name, encoding="utf-8") as handle:
                doc = json.loads(handle.readline() if name.endswith(".jsonl") else handle.read())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and any(k <= set(doc) for k in keys):
            return True
    return False


def claim_folder(path: Path) -> None:
    """Create ``path`` or check that it may be written, and mark it as an alkernels folder.

    Raises:
        ForeignFolderError: ``path`` is a non-empty folder that alkernels did not create.
        ValueError: ``path`` is a file, or cannot be created.
    """
    if path.exists() and not path.is_dir():
        raise ValueError(f"output {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not is_alkernels_folder(path):
        raise ForeignFolderError(
            f"{path} is not empty and is not an alkernels folder (no {MARKER} marker): "
            "alkernels never writes into a folder it did not create; choose a new or "
            "empty output folder"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        marker = path / MARKER
        if not marker.is_file():
            marker.write_text("alkernels output folder\n")
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {path}: {err.strerror}") from err


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` meanwhile, waiting while another process
    holds it (the file is created when absent; a symlink is refused): for work that two
    processes must not do at once, such as building one cache entry."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
    try:
        lock(fd)
        try:
            yield
        finally:
            unlock(fd)
    finally:
        os.close(fd)


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
    p = user_path(path)
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
            raise DamagedRunError(
                f"{p}, line {number}: damaged record ({err}); the records after it "
                "are not used. Repair or remove the line to continue"
            ) from err
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
        self.path = user_path(path)
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
        """Hold the folder's exclusive lock meanwhile (and remove this library's stale temporary
        files).

        Raises:
            ForeignFolderError: the folder is not empty and not an alkernels folder.
            RunInUseError: another process holds the lock.
            ValueError: the folder cannot be written, or ``.lock`` is a symlink or not the
                library's lock file.
        """
        claim_folder(self.path)
        path = self.path / _LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise ValueError(f"{path} is a symlink; alkernels does not follow it: remove it") from err
            raise ValueError(f"cannot write to the output folder {self.path}: {err.strerror}") from err
        handle = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValueError(f"{path} is not a regular file: remove it")
            lock(fd, blocking=False)
        except OSError as err:
            holder = handle.read(64).strip() or "unknown"
            handle.close()
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise RunInUseError(
                    f"{self.path} is in use by another run (process {holder}); two runs "
                    "must not write one folder: wait for it or choose another output "
                    "folder"
                ) from err
            raise
        except BaseException:
            handle.close()
            raise
        content = handle.read(65)
        if content.strip() and not content.strip().isdigit():
            unlock(fd)
            handle.close()
            raise ValueError(f"{path} is not an alkernels lock file (it holds other content): remove it")
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle
        try:
            for stale in self.path.glob(f".*{_TMP_SUFFIX}"):
                if _TMP_NAME.match(stale.name):
                    stale.unlink(missing_ok=True)
            yield self
        finally:
            self._lock_handle = None
            unlock(fd)
            handle.close()

    # -- identity ------------------------------------------------------------------------------
    def has_run(self) -> bool:
        """Whether the folder holds a run: its ``config.json`` and at least one finished step (a
        record or a checkpoint). A run that failed before its first step holds none: it may be
        started again, with the same or other settings."""
        if not self.config_path.exists():
            return False
        started = any(p.exists() for p in (self.checkpoint_path, self.previous_path)) or (
            self.records_path.exists() and self.records_path.stat().st_size > 0
        )
        if not started:
            _log.info(
                "%s: settings but no finished step (a run that failed before its first round): starting it again",
                self.path,
            )
        return started

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
            raise RunExistsError(
                f"{self.path} already holds a run; resume it (resume=True) or choose another output folder"
            )
        changed = settings_changes(self.read_config(), config)
        if changed:
            raise SettingsChangedError(
                f"cannot resume {self.path}: its settings differ ("
                + "; ".join(changed)
                + "); use the original settings or another "
                "output folder"
            )

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

    def load_state(self, name: str, *, map_location: Any = None, keys: Iterable[str] | None = None) -> Any:
        """Read a file written by :meth:`save_state`, verifying its checksum (and, with ``keys``,
        that it is a dict holding them).

        Raises:
            DamagedCheckpointError: missing, unreadable, damaged or of the wrong structure.
        """
        return read_checksummed(self.path / name, map_location, keys=keys)

    def load_checkpoint(
        self, *, restart_round: bool = False, map_location: Any = None, keys: Iterable[str] | None = None
    ) -> Any | None:
        """The newest intact checkpoint's state, or None when there is none.

        A missing checkpoint with a ``.prev`` present (a kill between the two renames) falls
        back to ``.prev``. With ``restart_round``, a damaged checkpoint is moved aside to
        ``<name>.damaged-<ns>`` and ``.prev`` is returned (the caller redoes the last step).

        Raises:
            DamagedCheckpointError: the checkpoint is damaged or of the wrong structure (``keys``),
                and ``restart_round`` is False or no intact previous checkpoint exists.
        """
        if not self.checkpoint_path.exists():
            if self.previous_path.exists():
                return read_checksummed(self.previous_path, map_location, keys=keys)
            return None
        try:
            return read_checksummed(self.checkpoint_path, map_location, keys=keys)
        except DamagedCheckpointError:
            if not restart_round:
                raise
        if not self.previous_path.exists():
            raise DamagedCheckpointError(
                self.checkpoint_path,
                "damaged, and no previous checkpoint to restart from: start the run again in a new folder",
            )
        state = read_checksummed(self.previous_path, map_location, keys=keys)
        os.replace(self.checkpoint_path, self.path / f"{self.checkpoint_path.name}.damaged-{time.time_ns()}")
        return state
