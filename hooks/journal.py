"""The crash-safe journal: one JSON file per guest UUID, what the hooks set up for that guest.

- Written atomically (temporary file, fsync, rename, fsync of the directory), mode 0600 in a 0700
  directory that the hook creates when missing.
- A per-guest lock (``flock`` on ``UUID.lock``) is held for the whole invocation: two hook processes for the
  same guest never interleave, and different guests never wait for each other.
- Intent is recorded before a request goes out and confirmed after, so a process killed in between leaves
  a record that ``release end`` tears down.
- The incoming-migration marker (``UUID.incoming``) is written by ``migrate begin``, consumed by
  ``prepare begin``, and only counts if it is younger than the configured TTL (each operation's part of
  that rule is its ``marker`` in hooks/ops.py; :meth:`Journal.arrive` and :meth:`Journal.proceeded` apply it).
- A journal that cannot be used as it is (not JSON, truncated, another format version, the wrong shape, a
  symlink, not ours) is *quarantined*: renamed to ``UUID.json.quarantined.REASON.TIME`` (kept for the admin
  and the agent, never read again) and the guest starts from an empty journal.  It never locks a guest out.
- ``lenient`` opens (the never-fail operations) go on without the lock or without saving when the state
  directory is read-only or full: teardown must still happen; ``GuestJournal.unsaved`` says what was lost.
- Temporary files of writers that were killed (``*.tmp.PID`` with PID gone) are removed on the next open.

Over 400 lines: the file format, its lock, its quarantine and the migration marker are one contract on one
state directory (the list above), kept in one module so the journal format has one place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence

from hooks.errors import JournalError
from hooks.ops import CONSUME, DISCARD, WRITE
from hooks.plain import as_dict, field, plain

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
# Any: a record's data is the feature's own JSON.
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FORMAT_VERSION", "GuestJournal", "Journal", "Record", "open_lock"]

FORMAT_VERSION = 1

INTENT = "intent"  # journaled, request maybe sent, no answer recorded
DONE = "done"  # the peer confirmed it
PENDING = "pending"  # a teardown failed or ran out of time; retried by the next teardown
_STATES = (INTENT, DONE, PENDING)
_MAX_JOURNAL_BYTES = 4 * 1024 * 1024  # a real journal is a few KiB

#: The JSON type of each Record field (bool is an int in Python: excluded explicitly below).
_RECORD_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": int,
    "feature": str,
    "key": str,
    "kind": str,
    "data": dict,
    "state": str,
    "op": str,
    "created": (int, float),
    "error": str,
}


@plain
class Record:
    """One thing set up (or being set up) for a guest by one feature."""

    id: int
    feature: str
    key: str
    kind: str
    data: dict[str, Any]
    state: str = INTENT
    op: str = ""
    created: float = 0.0
    error: str = ""


@plain
class GuestJournal:
    """The journal of one guest, loaded under its lock.  Every change is saved before the call returns."""

    path: str
    uuid: uuid.UUID
    guest: str
    incoming: bool = False
    records: list[Record] = field(default_factory=list)
    next_id: int = 1
    #: Set when the file found was unusable and moved aside: one line saying what and where to.
    quarantined: str = ""
    #: Saving failures are kept here instead of raised (teardown goes on); see ``Journal.open``.
    lenient: bool = False
    unsaved: str = ""
    locked: bool = True
    readonly: bool = False  # never write: the file on disk is evidence we could not move aside

    def add(self, feature: str, items: Iterable[tuple[str, str, Mapping[str, Any]]], *, op: str) -> list[Record]:
        new = []
        for key, kind, data in items:
            new.append(Record(self.next_id, feature, key, kind, dict(data), INTENT, op, time.time()))
            self.next_id += 1
        self.records.extend(new)
        self.save()
        return new

    def confirm(self, records: Sequence[Record], updates: Mapping[str, Mapping[str, Any]]) -> None:
        for record in records:
            record.state = DONE
            record.error = ""
            record.data.update(updates.get(record.key, {}))
        self.save()

    def mark_pending(self, records: Sequence[Record], errors: Mapping[int, str]) -> None:
        for record in records:
            record.state = PENDING
            record.error = errors.get(record.id, record.error)
        self.save()

    def remove(self, records: Sequence[Record]) -> None:
        gone = {r.id for r in records}
        self.records = [r for r in self.records if r.id not in gone]
        self.save()

    def set_incoming(self, incoming: bool) -> None:
        if self.incoming != incoming:
            self.incoming = incoming
            self.save()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "guest": self.guest,
            "uuid": str(self.uuid),
            "incoming": self.incoming,
            "next_id": self.next_id,
            "records": [as_dict(r) for r in self.records],
        }

    def save(self) -> None:
        if self.readonly:
            self.unsaved = f"not written: {self.quarantined}"
            return
        try:
            if not self.records and not self.incoming:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise JournalError(f"cannot remove journal {self.path}: {exc.strerror}") from None
            else:
                _atomic_write(self.path, json.dumps(self.to_json(), indent=1, sort_keys=True).encode())
        except JournalError as exc:
            if not self.lenient:
                raise
            self.unsaved = exc.one_line()
            return
        self.unsaved = ""  # the file matches memory again


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise JournalError(f"cannot write journal {path}: {exc.strerror}", hint="check the state directory") from None


class _Unusable(Exception):
    """The journal file exists but cannot be used; ``reason`` is one word for the quarantine name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _read(path: str) -> bytes | None:
    """The file's bytes, or None if there is none.  Never follows a symlink; only a regular file of ours."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Unusable("symlink", f"is a symlink (to {_readlink(path)})") from None
        raise _Unusable("unreadable", f"cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unusable("not-a-file", "is not a regular file")
        if st.st_uid != os.geteuid():
            raise _Unusable("owner", f"belongs to uid {st.st_uid}, not to us")
        chunks = []
        size = 0
        while size <= _MAX_JOURNAL_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > _MAX_JOURNAL_BYTES:
            raise _Unusable("corrupt", f"is over {_MAX_JOURNAL_BYTES} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise _Unusable("unreadable", f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _parse(raw: bytes, path: str, guest_uuid: uuid.UUID, guest: str) -> GuestJournal:
    """Bytes -> GuestJournal, checking every field's type: a file of the wrong shape must not reach code
    that would fail on it later with a TypeError (and veto every start of the guest)."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:  # also UnicodeDecodeError
        raise _Unusable("corrupt", f"is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _Unusable("shape", f"holds a JSON {type(doc).__name__}, not an object")
    version = doc.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):  # JSON true == 1 in Python
        raise _Unusable(
            "version",
            f"has format version {version!r}, this code reads {FORMAT_VERSION} "
            "(if an upgrade of libvirt-vdp-hooks is under way, finish the upgrade)",
        )
    raw_records = doc.get("records", [])
    if not isinstance(raw_records, list):
        raise _Unusable("shape", "has 'records' that are not a list")
    records = []
    for n, item in enumerate(raw_records):
        if not isinstance(item, dict):
            raise _Unusable("shape", f"has record {n} that is a JSON {type(item).__name__}, not an object")
        for name, value in item.items():
            kind = _RECORD_TYPES.get(name)
            if kind is None:
                raise _Unusable("shape", f"has record {n} with an unknown field {name!r}")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise _Unusable("shape", f"has record {n} whose {name!r} is a JSON {type(value).__name__}")
        missing = [f for f in ("id", "feature", "key", "kind", "data") if f not in item]
        if missing:
            raise _Unusable("shape", f"has record {n} without {', '.join(missing)}")
        if item.get("state", INTENT) not in _STATES:
            raise _Unusable("shape", f"has record {n} in an unknown state {item['state']!r}")
        records.append(Record(**item))
    name, incoming, next_id = doc.get("guest", ""), doc.get("incoming", False), doc.get("next_id", 1)
    if not isinstance(name, str) or not isinstance(incoming, bool) or not isinstance(next_id, int):
        raise _Unusable("shape", "has 'guest', 'incoming' or 'next_id' of the wrong type")
    # Ids must stay unique even if next_id was edited by hand.
    next_id = max([next_id, *(r.id + 1 for r in records)])
    return GuestJournal(path, guest_uuid, name or guest, incoming, records, next_id)


def _quarantine(path: str, reason: str) -> str:
    """Move an unusable file aside under a name that says why; returns the new name (raises OSError)."""
    moved = f"{path}.quarantined.{reason}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
    os.rename(path, moved)
    return moved


def _load(path: str, guest_uuid: uuid.UUID, guest: str, *, quarantine: bool = True) -> GuestJournal:
    """The journal at ``path`` (empty if there is none).  An unusable file raises JournalError when
    ``quarantine`` is off (a read-only look); else it is moved aside and an empty journal comes back with
    ``quarantined`` saying so.  Only if it cannot even be moved aside does this raise."""
    try:
        raw = _read(path)
        return GuestJournal(path, guest_uuid, guest) if raw is None else _parse(raw, path, guest_uuid, guest)
    except _Unusable as exc:
        problem = f"journal {path} {exc.detail}"
        if not quarantine:
            raise JournalError(problem, hint="'vdp-hooks status' shows it; the next hook run moves it aside") from None
        try:
            moved = _quarantine(path, exc.reason)
        except OSError as err:
            raise JournalError(
                f"{problem}, and it cannot be moved aside ({err.strerror})",
                hint="move it away by hand; it may list associations still held at the switch",
            ) from None
        journal = GuestJournal(path, guest_uuid, guest)
        journal.quarantined = f"{problem}; moved to {moved}"
        return journal


def open_lock(path: str) -> int:
    """Open (creating if needed) a lock file for ``flock``; ``-errno`` if the directory allows neither
    (read-only and no such file yet, full, missing).

    A symlink in its place is moved aside (quarantined) and replaced.  On a read-only file system an
    existing lock file still locks (``flock`` works on a read-only descriptor).
    """
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                with contextlib.suppress(OSError):
                    _quarantine(path, "symlink")
                continue
            try:
                return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                return -(exc.errno or errno.EIO)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)  # a fifo or device in its place: move it aside too
        with contextlib.suppress(OSError):
            _quarantine(path, "not-a-file")
    return -errno.ELOOP


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Journal:
    """The state directory: per-guest journals, locks and incoming-migration markers."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir

    def ensure_dir(self) -> None:
        """Create the directory 0700 if missing; refuse one that others could write."""
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            st = os.stat(self.state_dir)
        except OSError as exc:
            raise JournalError(f"cannot create state directory {self.state_dir}: {exc.strerror}") from None
        if st.st_uid != os.geteuid():
            raise JournalError(f"state directory {self.state_dir} belongs to uid {st.st_uid}, not to us")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(self.state_dir, 0o700)

    def _path(self, guest_uuid: uuid.UUID, suffix: str) -> str:
        return os.path.join(self.state_dir, f"{guest_uuid}{suffix}")

    @contextlib.contextmanager
    def open(
        self, guest_uuid: uuid.UUID, guest: str, *, timeout: float = 30.0, lenient: bool = False
    ) -> Iterator[GuestJournal]:
        """The guest's journal, with its lock held until the block ends.

        ``lenient`` (never-fail operations): a state directory that cannot be created, locked or written
        does not raise; the journal then lives in memory (``locked``/``unsaved`` say what was missing).
        """
        try:
            self.ensure_dir()
        except JournalError:
            if not lenient:
                raise
        lock_path = self._path(guest_uuid, ".lock")
        end = time.monotonic() + timeout
        while True:
            fd = open_lock(lock_path)
            if fd < 0:
                if not lenient:
                    raise JournalError(
                        f"cannot create lock file {lock_path}: {os.strerror(-fd)}",
                        hint="the state directory must be writable and not full",
                    )
                break
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > end:
                            raise JournalError(
                                f"guest {guest} ({guest_uuid}) is locked by another hook process for over {timeout:g} s"
                            ) from None
                        time.sleep(0.01)
                # The previous holder may have unlinked the lock file; then ours is stale: start over.
                try:
                    same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            self._clean_tmp(guest_uuid)
            path = self._path(guest_uuid, ".json")
            try:
                journal = _load(path, guest_uuid, guest)
            except JournalError as exc:
                if not lenient:
                    raise
                # Unusable and cannot be moved aside (read-only directory): teardown goes on from the XML;
                # the file is never overwritten, the next run with a writable directory moves it.
                journal = GuestJournal(path, guest_uuid, guest, quarantined=exc.text, readonly=True)
            journal.lenient = lenient
            journal.locked = fd >= 0
            yield journal
            if fd >= 0 and not journal.records and not journal.incoming:
                # Nothing left for this guest: leave no files behind (unlinked while we hold the lock).
                with contextlib.suppress(OSError):
                    os.unlink(lock_path)
        finally:
            if fd >= 0:
                os.close(fd)

    def _clean_tmp(self, guest_uuid: uuid.UUID) -> None:
        """Remove ``UUID.*.tmp.PID`` files whose writer is dead (killed between write and rename)."""
        prefix = str(guest_uuid)
        try:
            names = os.listdir(self.state_dir)
        except OSError:
            return
        for name in names:
            if not name.startswith(prefix) or ".tmp." not in name:
                continue
            pid = name.rpartition(".tmp.")[2]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.state_dir, name))

    def arrive(self, gj: GuestJournal, rule: str, ttl: float) -> bool:
        """A begin operation's part of the incoming-migration rule (``Op.marker``, hooks/ops.py), before
        setup: sets the journal's ``incoming`` flag and returns it (what the features are told)."""
        if rule == CONSUME:
            gj.set_incoming(self.consume_marker(gj.uuid, ttl))
        elif rule in (WRITE, DISCARD):
            gj.set_incoming(False)
            if rule == DISCARD:
                # A restore is never a migration: a marker left by a failed one must not reach prepare.
                self.consume_marker(gj.uuid, 0)
        return gj.incoming

    def proceeded(self, guest_uuid: uuid.UUID, rule: str) -> None:
        """The rest of the rule, once the begin operation proceeds: ``migrate begin`` leaves the marker."""
        if rule == WRITE:
            self.write_marker(guest_uuid)

    def write_marker(self, guest_uuid: uuid.UUID) -> None:
        self.ensure_dir()
        _atomic_write(self._path(guest_uuid, ".incoming"), json.dumps({"uuid": str(guest_uuid), "at": _now()}).encode())

    def consume_marker(self, guest_uuid: uuid.UUID, ttl: float) -> bool:
        """True if ``migrate begin`` marked this guest as incoming less than ``ttl`` seconds ago.  The marker
        is removed either way: it is for one start only."""
        path = self._path(guest_uuid, ".incoming")
        try:
            raw = _read(path)
        except _Unusable:
            raw = b""  # a symlink, not ours, unreadable: worthless, removed below
        if raw is None:
            return False
        with contextlib.suppress(OSError):
            os.unlink(path)
        try:
            doc = json.loads(raw)
            age = _now() - float(doc["at"])
            return doc.get("uuid") == str(guest_uuid) and 0 <= age <= ttl
        except (ValueError, TypeError, KeyError, AttributeError):  # any shape but the one we write
            return False

    def guests(self) -> list[uuid.UUID]:
        """UUIDs that have a journal (for ``vdp-hooks status``)."""
        found = []
        try:
            names = os.listdir(self.state_dir)
        except FileNotFoundError:
            return []
        for name in sorted(names):
            if name.endswith(".json"):
                with contextlib.suppress(ValueError):
                    found.append(uuid.UUID(name[:-5]))
        return found

    def peek(self, guest_uuid: uuid.UUID) -> GuestJournal | None:
        """Read a journal without taking the lock (status display only)."""
        path = self._path(guest_uuid, ".json")
        if not os.path.exists(path):
            return None
        return _load(path, guest_uuid, "", quarantine=False)  # read-only: leave a broken file where it is


def _now() -> float:
    # Boot-time clock: comparable across processes, immune to wall-clock steps; /run is gone at reboot anyway.
    return time.clock_gettime(time.CLOCK_BOOTTIME)
