"""The intake's disk spool: deliveries accepted while Redis is unreachable, until it returns.

Cal.com barely retries, so when Redis is down or slow the intake writes the delivery here and
answers 202 only once it is on disk. A background task replays the spool into the queue when
Redis answers again; replays go through the same dedupe key as live deliveries, so a record
replayed twice (or also queued live) is queued once.

Layout: ``<dir>/<time_ns>-<pid>-<seq>.spool`` segment files of framed records::

    magic "CHS1" | body length u32 | CRC-32 u32 | received_at f64 | body bytes
    magic "CHS2" | length u32      | CRC-32 u32 | received_at f64 | PCID length u8 | PCID | body
    (big-endian; the CRC covers received_at and everything after it)

A delivery of the environment's organization is a ``CHS1`` record, as before connections
existed (so a spool written by an older release replays unchanged); one that came in through a
connection's URL is a ``CHS2`` record carrying the connection's PCID, so its replayed event
keeps its connection (and its event id, which hashes the PCID).

* Durable: appends are written and ``fsync``-ed before the caller is answered - in groups:
  every append waiting while a write is in progress goes in the next single write + fsync.
* Crash-safe: a record torn by a crash at the tail was never acknowledged and is ignored; a
  damaged record anywhere is skipped by its CRC and reading resumes at the next magic.
* Bounded: past ``max_bytes`` (all segments together) appends raise ``SpoolFull`` (503).
* Never jammed: a record ``replay`` cannot queue for a reason other than Redis (it no longer
  parses, the job encoder raises, ...) is moved to ``<dir>/quarantine/`` as one JSON file with
  its reason (``calhooks spool quarantine`` lists them) and replay goes on past it.
* Checked: ``check`` says whether one more delivery of the largest size could be written now
  (``/readyz`` is ready on a writable spool with room even while Redis is away).
* Several processes may share the directory: a writer holds an exclusive ``flock`` on its
  open segment (created under a temporary name, locked, then renamed, so no reader ever sees
  it unlocked); replay takes only segments it can lock, so it never reads one being written,
  and picks up segments left by a process that died.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import fcntl
import json
import os
import struct
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import structlog

from calhooks.service.events import event_id
from calhooks.service.intake.metrics import QUARANTINED

log = structlog.get_logger("calhooks.intake.spool")

MAGIC = b"CHS1"
#: A record of a connection's delivery: the PCID (length-prefixed) before the body.
MAGIC_CONNECTION = b"CHS2"
_MAGICS = (MAGIC, MAGIC_CONNECTION)
#: Longest PCID a record can carry (a u8 length).
MAX_CONNECTION = 255
_HEADER = struct.Struct(">4sIId")
HEADER_SIZE = _HEADER.size
#: No record is larger; a bigger length field is damage, not data.
MAX_RECORD_BODY = 64 * 1024 * 1024
SUFFIX = ".spool"

T = TypeVar("T")

QUARANTINE = "quarantine"
#: Longest reason kept with a quarantined record.
MAX_REASON = 500


class Record(NamedTuple):
    """One spooled delivery: when it was received, its exact bytes, and its connection's PCID
    (``None``: the environment's organization)."""

    received_at: float
    body: bytes
    connection: str | None = None


Replay = Callable[[Sequence[Record]], Awaitable[None]]


class SpoolState(enum.Enum):
    """Whether the spool could take one more delivery of the largest size now."""

    OK = "ok"
    FULL = "full"
    UNWRITABLE = "unwritable"


class SpoolError(Exception):
    """The spool cannot take this delivery."""


class SpoolFull(SpoolError):
    """Taking the delivery would pass the spool's size limit."""


class SpoolUnavailable(SpoolError):
    """The spool directory cannot be written (missing, read-only, disk full, I/O error)."""


def encode_record(received_at: float, body: bytes, connection: str | None = None) -> bytes:
    """One framed record (``CHS1``, or ``CHS2`` when it carries a connection)."""
    stamp = struct.pack(">d", received_at)
    if connection is None:
        crc = zlib.crc32(body, zlib.crc32(stamp))
        return _HEADER.pack(MAGIC, len(body), crc, received_at) + body
    pcid = connection.encode()
    if not 0 < len(pcid) <= MAX_CONNECTION:
        raise SpoolError(f"a connection id of {len(pcid)} bytes cannot be spooled")
    payload = bytes([len(pcid)]) + pcid + body
    crc = zlib.crc32(payload, zlib.crc32(stamp))
    return _HEADER.pack(MAGIC_CONNECTION, len(payload), crc, received_at) + payload


@dataclass
class Decoded:
    records: list[Record]
    skipped_bytes: int


def decode_records(data: bytes) -> Decoded:
    """Every intact record in ``data``; damaged or torn bytes are counted and skipped."""
    records: list[Record] = []
    skipped = 0
    position, end = 0, len(data)
    while position < end:
        record_end = _record_end(data, position)
        if record_end is None:
            stop = _next_magic(data, position + 1)
            skipped += stop - position
            position = stop
            continue
        magic, _, _, received_at = _HEADER.unpack_from(data, position)
        payload = data[position + HEADER_SIZE : record_end]
        position = record_end
        if magic == MAGIC:
            records.append(Record(received_at, payload))
            continue
        size = payload[0] if payload else 0
        if not size or size + 1 > len(payload):  # intact by its CRC, yet not a record: skip it
            skipped += HEADER_SIZE + len(payload)
            continue
        connection = payload[1 : size + 1].decode("utf-8", "replace")
        records.append(Record(received_at, payload[size + 1 :], connection))
    return Decoded(records, skipped)


def _next_magic(data: bytes, start: int) -> int:
    """Where the next record may start (either magic) at or after ``start``; else the end."""
    found = [at for at in (data.find(magic, start) for magic in _MAGICS) if at >= 0]
    return min(found, default=len(data))


def _record_end(data: bytes, position: int) -> int | None:
    """Where the intact record at ``position`` ends, or ``None`` if there is none."""
    if position + HEADER_SIZE > len(data):
        return None
    magic, length, crc, _ = _HEADER.unpack_from(data, position)
    if magic not in _MAGICS or length > MAX_RECORD_BODY + 1 + MAX_CONNECTION:
        return None
    record_end = position + HEADER_SIZE + length
    if record_end > len(data):
        return None
    stamp = data[position + 12 : position + HEADER_SIZE]
    body = memoryview(data)[position + HEADER_SIZE : record_end]
    if zlib.crc32(body, zlib.crc32(stamp)) != crc:
        return None
    return int(record_end)


class _Segment:
    """The open segment this process appends to (locked for as long as it is open)."""

    def __init__(self, directory: Path, sequence: int) -> None:
        temporary = directory / f".{uuid.uuid4().hex}.tmp"
        self.fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.path = directory / f"{time.time_ns():020d}-{os.getpid()}-{sequence:06d}{SUFFIX}"
            os.rename(temporary, self.path)
            _fsync_directory(directory)
        except BaseException:
            os.close(self.fd)
            temporary.unlink(missing_ok=True)
            raise
        self.size = 0

    def append(self, data: bytes) -> None:
        """Write and fsync ``data``; on failure cut the file back to its last good size."""
        try:
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            os.fsync(self.fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)

    def close(self) -> None:
        os.close(self.fd)  # releases the lock: the segment is sealed


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append deliveries durably; replay and delete them later. See the module docstring."""

    def __init__(
        self, directory: Path, *, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.error: str | None = None
        self._bytes = 0  # in every segment of this directory, as last counted
        self._reserved = 0  # waiting to be written
        self._segment: _Segment | None = None
        self._sequence = 0
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        # One thread does every file operation, so writes, seals and fsyncs never interleave.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calhooks-spool")

    @property
    def size(self) -> int:
        """Bytes spooled and not yet replayed (as this process last counted them)."""
        return self._bytes

    def open(self) -> None:
        """Create the directory and count what earlier runs left; records any problem."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            for stale in self.directory.glob(".*.tmp"):
                stale.unlink(missing_ok=True)  # a crash between create and rename: empty
            self._bytes = self._count()
            self.error = None
        except OSError as error:
            self.error = f"spool directory {self.directory}: {error.strerror or error}"
            log.error("spool.unavailable", directory=str(self.directory), reason=self.error)
        if self._bytes:
            log.warning("spool.earlier_deliveries_found", bytes=self._bytes)

    def _count(self) -> int:
        total = 0
        for path in self.directory.glob("*" + SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def append(self, received_at: float, body: bytes, connection: str | None = None) -> None:
        """Store one delivery (of ``connection``, a PCID, when given); returns once it is on
        disk (``SpoolFull``/``SpoolUnavailable``)."""
        record = encode_record(received_at, body, connection)
        if self._bytes + self._reserved + len(record) > self.max_bytes:
            raise SpoolFull(f"spool holds {self._bytes} bytes (limit {self.max_bytes})")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        self._reserved += len(record)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        # Shielded: a caller that goes away does not cancel a write others share.
        await asyncio.shield(future)

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            data = b"".join(record for record, _ in batch)
            try:
                await self._run(self._write, data)
            except Exception as error:  # I/O errors, or a file thread already shut down
                detail = error.strerror if isinstance(error, OSError) else None
                reason = f"cannot write spool in {self.directory}: {detail or error}"
                self.error = reason
                log.error("spool.write_failed", reason=reason, records=len(batch))
                outcome: BaseException | None = SpoolUnavailable(reason)
            else:
                self.error = None
                self._bytes += len(data)
                outcome = None
            self._reserved -= len(data)
            for _, future in batch:
                if future.done():
                    continue
                if outcome is None:
                    future.set_result(None)
                else:
                    future.set_exception(outcome)

    def _write(self, data: bytes) -> None:
        if self._segment is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._sequence += 1
            self._segment = _Segment(self.directory, self._sequence)
        try:
            self._segment.append(data)
        except OSError:
            self._seal()  # never append after a failed write, even one that was undone
            raise
        if self._segment.size >= self.segment_bytes:
            self._seal()

    def _seal(self) -> None:
        if self._segment is not None:
            segment, self._segment = self._segment, None
            segment.close()

    def pending(self) -> bool:
        """Whether anything may be waiting for replay (cheap; counts this process' writes)."""
        return self._bytes > 0 or self._reserved > 0

    async def replay(
        self,
        replay: Replay,
        *,
        batch: int = 256,
        transient: tuple[type[BaseException], ...] = (OSError,),
    ) -> int:
        """Hand every spooled record to ``replay`` in batches, deleting each segment after.

        ``replay`` raising one of ``transient`` (Redis is away again) stops the pass and keeps
        the segment: its records are replayed again later, which the dedupe key makes
        harmless. Any other exception is about the records: the batch is replayed one record
        at a time and each record that still raises is quarantined with its reason, so one bad
        record never holds back those after it. Returns the records replayed.
        """
        await self._run(self._seal)
        replayed = 0
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            replayed += await self._replay_segment(path, replay, batch, transient)
        self._bytes = await self._run(self._count)
        return replayed

    async def _replay_segment(
        self,
        path: Path,
        replay: Replay,
        batch: int,
        transient: tuple[type[BaseException], ...],
    ) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0  # another process replayed it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live segment of another process
            decoded = decode_records(await self._run(_read_all, fd))
            if decoded.skipped_bytes:
                log.warning(
                    "spool.unreadable_bytes",
                    segment=path.name, skipped_bytes=decoded.skipped_bytes,
                    records=len(decoded.records),
                )  # fmt: skip
            rejected: list[tuple[Record, str]] = []
            for start in range(0, len(decoded.records), batch):
                records = decoded.records[start : start + batch]
                try:
                    await replay(records)
                except transient:
                    raise
                except Exception:
                    rejected.extend(await _isolate(records, replay, transient))
            if rejected:
                await self._run(self._quarantine, path.stem, rejected)
            await self._run(_delete, path)
            return len(decoded.records) - len(rejected)
        finally:
            os.close(fd)

    def _quarantine(self, segment: str, rejected: Sequence[tuple[Record, str]]) -> None:
        """Write each rejected record to the quarantine directory (durably) before deletion."""
        directory = self.directory / QUARANTINE
        directory.mkdir(exist_ok=True, mode=0o700)
        now = time.time()
        for index, ((received_at, body, connection), reason) in enumerate(rejected):
            document = {
                "event_id": event_id(body, connection),
                "connection": connection,
                "received_at": received_at,
                "quarantined_at": now,
                "segment": segment,
                "reason": reason,
                "bytes": len(body),
                "body_base64": base64.b64encode(body).decode(),
            }
            target = directory / f"{segment}-{index:06d}.json"
            temporary = directory / f".{target.name}.tmp"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                data = json.dumps(document).encode()
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, target)
            log.error(
                "spool.record_quarantined",
                event_id=document["event_id"], reason=reason, file=target.name,
            )  # fmt: skip
        _fsync_directory(directory)
        QUARANTINED.inc(len(rejected))

    async def check(self, headroom: int) -> SpoolState:
        """Whether a record of ``headroom`` bytes could be written now (``error`` says why not).

        Room is counted against ``max_bytes`` and the file system's free space; writability
        is proven by creating, writing and fsync-ing a small probe file.
        """
        if self._bytes + self._reserved + headroom > self.max_bytes:
            return SpoolState.FULL
        try:
            free = await self._run(self._probe)
        except OSError as error:
            self.error = f"spool directory {self.directory}: {error.strerror or error}"
            return SpoolState.UNWRITABLE
        except RuntimeError as error:  # the file thread was shut down
            self.error = f"spool closed: {error}"
            return SpoolState.UNWRITABLE
        if free < headroom:
            self.error = f"spool file system has {free} bytes free"
            return SpoolState.FULL
        return SpoolState.OK

    def _probe(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = self.directory / f".probe-{uuid.uuid4().hex}.tmp"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
        stats = os.statvfs(self.directory)
        return stats.f_bavail * stats.f_frsize

    async def aclose(self) -> None:
        """Finish pending writes, seal the open segment, stop the file thread."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._run(self._seal)
        self._thread.shutdown(wait=True)


async def _isolate(
    records: Sequence[Record], replay: Replay, transient: tuple[type[BaseException], ...]
) -> list[tuple[Record, str]]:
    """Replay ``records`` one by one; those that raise (not transiently) with their reason."""
    rejected = []
    for record in records:
        try:
            await replay([record])
        except transient:
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"[:MAX_REASON]
            rejected.append((record, reason))
    return rejected


@dataclass(frozen=True)
class Quarantined:
    """One quarantined record, as ``calhooks spool quarantine`` lists it."""

    file: str
    event_id: str
    received_at: float
    quarantined_at: float
    reason: str
    bytes: int


def list_quarantine(directory: Path) -> list[Quarantined]:
    """The records quarantined under spool ``directory``, oldest first (unreadable ones named)."""
    found = []
    for path in sorted((directory / QUARANTINE).glob("*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            found.append(
                Quarantined(
                    file=path.name,
                    event_id=str(document["event_id"]),
                    received_at=float(document["received_at"]),
                    quarantined_at=float(document["quarantined_at"]),
                    reason=str(document["reason"]),
                    bytes=int(document["bytes"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            found.append(Quarantined(path.name, "?", 0.0, 0.0, f"unreadable: {error}", 0))
    return found


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1024 * 1024):
        chunks.append(chunk)
    return b"".join(chunks)


def _delete(path: Path) -> None:
    path.unlink(missing_ok=True)
    _fsync_directory(path.parent)
