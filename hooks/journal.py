"""The crash-safe journal: one JSON file per guest UUID, what the hooks set up for that guest.

- Written atomically (temporary file, fsync, rename, fsync of the directory), mode 0600 in a 0700
  directory that the hook creates when missing.
- A per-guest lock (``flock`` on ``UUID.lock``) is held for the whole invocation: two hook processes for the
  same guest never interleave, and different guests never wait for each other.
- Intent is recorded before a request goes out and confirmed after, so a process killed in between leaves
  a record that ``release end`` tears down.
- The incoming-migration marker (``UUID.incoming``) is written by ``migrate begin``, consumed by
  ``prepare begin``, and only counts if it is younger than the configured TTL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence

from hooks.errors import JournalError
from hooks.plain import as_dict, field, plain

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FORMAT_VERSION", "GuestJournal", "Journal", "Record"]

FORMAT_VERSION = 1

INTENT = "intent"  # journaled, request maybe sent, no answer recorded
DONE = "done"  # the peer confirmed it
PENDING = "pending"  # a teardown failed or ran out of time; retried by the next teardown


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
        if not self.records and not self.incoming:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        _atomic_write(self.path, json.dumps(self.to_json(), indent=1, sort_keys=True).encode())


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


def _load(path: str, guest_uuid: uuid.UUID, guest: str, *, quarantine: bool = True) -> GuestJournal:
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except FileNotFoundError:
        return GuestJournal(path, guest_uuid, guest)
    except (OSError, ValueError) as exc:
        if not quarantine:
            raise JournalError(f"journal {path} is unreadable ({exc})") from None
        # Keep the broken file for the admin instead of overwriting the evidence.
        broken = f"{path}.broken.{int(time.time())}"
        with contextlib.suppress(OSError):
            os.rename(path, broken)
        raise JournalError(f"journal {path} is unreadable ({exc}); moved to {broken}") from None
    if doc.get("version") != FORMAT_VERSION:
        raise JournalError(
            f"journal {path} has format version {doc.get('version')!r}, this code reads {FORMAT_VERSION}",
            hint="finish the upgrade of libvirt-vdp-hooks on this host",
        )
    records = [Record(**r) for r in doc.get("records", [])]
    return GuestJournal(
        path,
        guest_uuid,
        doc.get("guest") or guest,
        bool(doc.get("incoming")),
        records,
        int(doc.get("next_id", len(records) + 1)),
    )


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
    def open(self, guest_uuid: uuid.UUID, guest: str, *, timeout: float = 30.0) -> Iterator[GuestJournal]:
        """The guest's journal, with its lock held until the block ends."""
        self.ensure_dir()
        lock_path = self._path(guest_uuid, ".lock")
        end = time.monotonic() + timeout
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
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
            journal = _load(self._path(guest_uuid, ".json"), guest_uuid, guest)
            yield journal
            if not journal.records and not journal.incoming:
                # Nothing left for this guest: leave no files behind (unlinked while we hold the lock).
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_path)
        finally:
            os.close(fd)

    def write_marker(self, guest_uuid: uuid.UUID) -> None:
        self.ensure_dir()
        _atomic_write(self._path(guest_uuid, ".incoming"), json.dumps({"uuid": str(guest_uuid), "at": _now()}).encode())

    def consume_marker(self, guest_uuid: uuid.UUID, ttl: float) -> bool:
        """True if ``migrate begin`` marked this guest as incoming less than ``ttl`` seconds ago.  The marker
        is removed either way: it is for one start only."""
        path = self._path(guest_uuid, ".incoming")
        try:
            with open(path, "rb") as fh:
                doc = json.loads(fh.read())
            os.unlink(path)
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                os.unlink(path)
            return False
        age = _now() - float(doc.get("at", 0))
        return doc.get("uuid") == str(guest_uuid) and 0 <= age <= ttl

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
