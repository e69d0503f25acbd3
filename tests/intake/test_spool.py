"""The disk spool: durable appends, crash-safe reading, bounded size, replay and delete."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from calhooks.service.events import event_id
from calhooks.service.intake.metrics import REGISTRY
from calhooks.service.intake.spool import (
    HEADER_SIZE,
    QUARANTINE,
    Record,
    Spool,
    SpoolFull,
    SpoolState,
    SpoolUnavailable,
    decode_records,
    encode_record,
    list_quarantine,
)


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    spool = Spool(tmp_path / "spool", max_bytes=1024 * 1024)
    spool.open()
    yield spool
    await spool.aclose()


class Collector:
    """A replay target that keeps what it is given (or fails, when told to)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.fail = False

    async def __call__(self, records: Sequence[Record]) -> None:
        if self.fail:
            raise ConnectionError("redis still down")
        self.records.extend(records)


def segments(spool: Spool) -> list[Path]:
    return sorted(spool.directory.glob("*.spool"))


def test_records_round_trip_and_damage_is_skipped() -> None:
    """A damaged record is skipped by its CRC; reading resumes at the next intact one."""
    records = [encode_record(float(n), b'{"n":%d}' % n) for n in range(3)]
    damaged = bytearray(records[1])
    damaged[HEADER_SIZE + 2] ^= 0xFF
    decoded = decode_records(records[0] + bytes(damaged) + records[2])
    assert decoded.records == [Record(0.0, b'{"n":0}'), Record(2.0, b'{"n":2}')]
    assert decoded.skipped_bytes == len(damaged)


def test_a_torn_tail_is_ignored() -> None:
    """A record cut short by a crash (never acknowledged) is dropped, the rest kept."""
    whole, torn = encode_record(1.0, b"first"), encode_record(2.0, b"second")
    for cut in (3, HEADER_SIZE, len(torn) - 1):
        decoded = decode_records(whole + torn[:cut])
        assert decoded.records == [Record(1.0, b"first")]
        assert decoded.skipped_bytes == cut


def test_garbage_and_absurd_lengths_are_not_records() -> None:
    """Random bytes and a length field past any record size decode to nothing."""
    fake = b"CHS1" + (2**31).to_bytes(4, "big") + bytes(12)
    assert decode_records(os.urandom(256) + fake).records == []


async def test_appends_are_replayed_in_order_and_then_deleted(spool: Spool) -> None:
    """Everything appended (concurrently, in one group commit) is replayed, then removed."""
    await asyncio.gather(*(spool.append(float(n), b"body-%d" % n) for n in range(50)))
    assert spool.pending()
    assert spool.size > 0
    assert len(segments(spool)) == 1
    collector = Collector()
    assert await spool.replay(collector, batch=7) == 50
    assert collector.records == [Record(float(n), b"body-%d" % n) for n in range(50)]
    assert segments(spool) == []
    assert (spool.size, spool.pending()) == (0, False)


async def test_a_failed_replay_keeps_the_segment(spool: Spool) -> None:
    """If the queue fails mid-replay the segment stays, to be replayed whole next time."""
    await spool.append(1.0, b"kept")
    collector = Collector()
    collector.fail = True
    with pytest.raises(ConnectionError):
        await spool.replay(collector)
    assert len(segments(spool)) == 1
    collector.fail = False
    assert await spool.replay(collector) == 1
    assert collector.records == [Record(1.0, b"kept")]


async def test_appends_after_a_replay_go_to_a_new_segment(spool: Spool) -> None:
    """Replay seals the open segment; later deliveries are written to a fresh one."""
    await spool.append(1.0, b"a")
    await spool.replay(Collector())
    await spool.append(2.0, b"b")
    collector = Collector()
    await spool.replay(collector)
    assert collector.records == [Record(2.0, b"b")]


async def test_what_a_previous_process_left_is_counted_and_replayed(tmp_path: Path) -> None:
    """A new Spool on the same directory sees the old segments (a restart, a crashed pod)."""
    first = Spool(tmp_path / "spool", max_bytes=1 << 20)
    first.open()
    await first.append(1.0, b"from-before")
    await first.aclose()
    second = Spool(tmp_path / "spool", max_bytes=1 << 20)
    second.open()
    assert second.size > 0
    assert second.pending()
    collector = Collector()
    assert await second.replay(collector) == 1
    assert collector.records == [Record(1.0, b"from-before")]
    await second.aclose()


async def test_a_segment_locked_by_another_writer_is_left_alone(spool: Spool) -> None:
    """Replay skips a segment another process still holds (it is being written)."""
    other = spool.directory / "00000000000000000001-99999-000001.spool"
    other.write_bytes(encode_record(5.0, b"theirs"))
    with other.open("rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        collector = Collector()
        assert await spool.replay(collector) == 0
        assert other.exists()
    assert await spool.replay(collector) == 1
    assert collector.records == [Record(5.0, b"theirs")]


async def test_a_full_spool_refuses(tmp_path: Path) -> None:
    """Past max_bytes appends raise SpoolFull; replaying makes room again."""
    spool = Spool(tmp_path / "spool", max_bytes=1000)
    spool.open()
    body = b"x" * 400
    await spool.append(1.0, body)
    await spool.append(2.0, body)
    with pytest.raises(SpoolFull):
        await spool.append(3.0, body)
    await spool.replay(Collector())
    await spool.append(3.0, body)
    await spool.aclose()


async def test_a_path_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    """A spool 'directory' that is a file (or any I/O error) makes appends unavailable."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    spool = Spool(blocker / "spool", max_bytes=1 << 20)
    spool.open()
    assert spool.error is not None
    with pytest.raises(SpoolUnavailable):
        await spool.append(1.0, b"x")
    assert spool.error is not None
    await spool.aclose()


async def test_segments_rotate_at_their_size(tmp_path: Path) -> None:
    """A segment past segment_bytes is sealed and the next append opens another."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=100)
    spool.open()
    for n in range(3):
        await spool.append(float(n), b"y" * 90)
    assert len(segments(spool)) == 3
    collector = Collector()
    assert await spool.replay(collector) == 3
    await spool.aclose()


async def test_appends_after_close_are_refused_not_hung(tmp_path: Path) -> None:
    """A closed spool answers SpoolUnavailable at once rather than leaving the caller waiting."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    spool.open()
    await spool.aclose()
    with pytest.raises(SpoolUnavailable):
        await asyncio.wait_for(spool.append(1.0, b"late"), 5)


def quarantined_total() -> float:
    return REGISTRY.get_sample_value("calhooks_intake_spool_quarantined_total") or 0.0


class Picky:
    """A replay target that raises for records whose body contains ``poison`` (not Redis)."""

    def __init__(self, poison: bytes) -> None:
        self.poison = poison
        self.records: list[Record] = []

    async def __call__(self, records: Sequence[Record]) -> None:
        for record in records:
            if self.poison in record.body:
                raise RecursionError("maximum recursion depth exceeded")
        self.records.extend(records)


async def test_a_record_that_raises_is_quarantined_and_replay_goes_past_it(tmp_path: Path) -> None:
    """The bad record's segment and every later one are replayed and deleted; it is kept aside."""
    spool = Spool(tmp_path / "spool", max_bytes=1024 * 1024, segment_bytes=1)
    spool.open()
    try:
        for n in range(3):  # one record per segment: the poison sits in the middle one
            await spool.append(
                float(n), b'{"n":%d,"poison":%s}' % (n, b"true" if n == 1 else b"false")
            )
        assert len(segments(spool)) == 3
        picky = Picky(b'"poison":true')
        before = quarantined_total()
        assert await spool.replay(picky, transient=(ConnectionError,)) == 2
        assert [record.body for record in picky.records] == [
            b'{"n":0,"poison":false}',
            b'{"n":2,"poison":false}',
        ]
        assert segments(spool) == []
        assert spool.size == 0
        (held,) = list_quarantine(spool.directory)
        assert held.event_id == event_id(b'{"n":1,"poison":true}')
        assert held.reason == "RecursionError: maximum recursion depth exceeded"
        assert held.received_at == 1.0
        assert quarantined_total() == before + 1
        (path,) = (spool.directory / QUARANTINE).glob("*.json")
        kept = json.loads(path.read_text())
        assert base64.b64decode(kept["body_base64"]) == b'{"n":1,"poison":true}'
    finally:
        await spool.aclose()


async def test_a_transient_error_still_keeps_the_segment(spool: Spool) -> None:
    """An error of the `transient` kinds (Redis away) stops the pass; nothing is quarantined."""
    await spool.append(1.0, b"{}")
    collector = Collector()
    collector.fail = True
    with pytest.raises(ConnectionError):
        await spool.replay(collector, transient=(ConnectionError,))
    assert len(segments(spool)) == 1
    assert list_quarantine(spool.directory) == []


async def test_check_says_ok_full_or_unwritable(tmp_path: Path) -> None:
    """Room for one more record of `headroom` bytes, and a directory that takes a write."""
    spool = Spool(tmp_path / "spool", max_bytes=1024 * 1024)
    spool.open()
    try:
        assert await spool.check(1000) is SpoolState.OK
        assert await spool.check(1024 * 1024 + 1) is SpoolState.FULL
        await spool.append(1.0, b"x" * 600_000)
        assert await spool.check(500_000) is SpoolState.FULL
        assert await spool.check(100_000) is SpoolState.OK
        await spool.replay(Collector())
        spool.directory.rename(tmp_path / "elsewhere")
        spool.directory.write_text("a file where the directory was")
        assert await spool.check(1000) is SpoolState.UNWRITABLE
        assert spool.error is not None
    finally:
        await spool.aclose()


async def test_a_connection_record_keeps_its_connection(spool: Spool) -> None:
    """A connection's delivery is a CHS2 record: replay gets its PCID back, next to CHS1 ones;
    a quarantined one is named by the event id its connection gives it."""
    pcid = "0b8f7f5e-7c1d-4a39-9d55-4f1c2f0e9a11"
    await spool.append(1.0, b'{"env":true}')
    await spool.append(2.0, b'{"conn":true}', pcid)
    data = b"".join(path.read_bytes() for path in segments(spool))
    assert data.count(b"CHS1") == 1
    assert data.count(b"CHS2") == 1
    collector = Collector()
    assert await spool.replay(collector) == 2
    assert collector.records == [
        Record(1.0, b'{"env":true}'),
        Record(2.0, b'{"conn":true}', pcid),
    ]
    damaged = bytearray(encode_record(3.0, b"x", pcid))
    damaged[HEADER_SIZE + 3] ^= 0xFF  # inside the PCID: the CRC covers it
    assert decode_records(bytes(damaged) + encode_record(4.0, b"y", pcid)).records == [
        Record(4.0, b"y", pcid)
    ]


async def test_a_quarantined_connection_record_has_its_connection_event_id(
    tmp_path: Path,
) -> None:
    """The quarantine names the record by the event id its connection gives it."""
    pcid = "c-1"
    spool = Spool(tmp_path / "spool", max_bytes=1024 * 1024)
    spool.open()
    try:
        await spool.append(1.0, b'{"poison":true}', pcid)
        assert await spool.replay(Picky(b"poison"), transient=(ConnectionError,)) == 0
        (held,) = list_quarantine(spool.directory)
        assert held.event_id == event_id(b'{"poison":true}', pcid)
        assert held.event_id != event_id(b'{"poison":true}')
    finally:
        await spool.aclose()
