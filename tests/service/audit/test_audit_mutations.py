"""Mutation test: every kind of tampering with a >= 1,000-record log is detected.

Each mutation is applied to the written files, verification must raise a
ChainVerificationError, and the files are restored before the next one.
"""

import hashlib
import itertools
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.audit import (
    AuditLog,
    AuditVerificationError,
    FileAnchorSink,
    fast_encode,
    verify_audit_dir,
)
from service.audit.encoding import link_input, record_line
from service.chain.errors import ChainVerificationError
from service.chain.tlog import LogCheckpoint
from service.keys.store import Signer, TrustStore
from tests.service.audit.conftest import resigned

pytestmark = pytest.mark.slow

SEED = 20261122


class Tamper:
    """Applies mutations to an audit directory and restores it afterwards."""

    def __init__(self, audit_dir: Path, anchors_path: Path) -> None:
        self.audit_dir = audit_dir
        self.anchors_path = anchors_path
        self.segments = sorted(audit_dir.glob("*/segment-*.jsonl"))
        self.files = [*self.segments, anchors_path]
        self.original = {p: p.read_bytes() for p in self.files}

    def restore(self) -> None:
        for path, data in self.original.items():
            if not path.exists() or path.stat().st_size != len(data) or path.read_bytes() != data:
                path.parent.mkdir(mode=0o700, exist_ok=True)
                path.write_bytes(data)

    def lines(self, path: Path) -> list[bytes]:
        return self.original[path].split(b"\n")[:-1]

    def write_lines(self, path: Path, lines: list[bytes]) -> None:
        path.write_bytes(b"".join(line + b"\n" for line in lines))

    def last_segments(self) -> set[Path]:
        by_log: dict[Path, Path] = {}
        for path in self.segments:
            by_log[path.parent] = max(by_log.get(path.parent, path), path)
        return set(by_log.values())


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tamper, TrustStore]:
    home = tmp_path_factory.mktemp("mutations")
    audit_dir = home / "audit"
    signer = Signer("audit", Ed25519PrivateKey.generate())
    trust = TrustStore.from_public_keys([signer.public_key])
    rng = random.Random(SEED)
    for count in (1000, 150):
        with AuditLog(
            audit_dir, signer, checkpoint_every=40, segment_bytes=48 * 1024, checkpoint_seconds=None
        ) as log:
            for n in range(count):
                log.append(
                    {
                        "time": f"2026-11-22T10:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z",
                        "kind": rng.choice(["request", "policy_decision"]),
                        "request_id": f"req-{n}",
                        "subject": rng.choice(["alice", "bob", None]),
                        "tenant": "acme",
                        "model_digest": "sha256:" + "ab" * 32,
                        "action": rng.choice(["predict", "explain"]),
                        "decision": {
                            "allow": rng.random() < 0.8,
                            "reasons": rng.choice([[], ["rate limit"], ["tenant ≠ model"]]),
                            "decision_id": f"d-{n}",
                        },
                        "status": rng.choice([200, 403, 429]),
                        "latency_ms": rng.random() * 50,
                        "input_digest": "sha256:" + f"{n:064x}",
                        "client": "10.0.0.7",
                    }
                )
    tamper = Tamper(audit_dir, audit_dir.parent / "audit-anchors.jsonl")
    assert sum(len(tamper.lines(p)) for p in tamper.segments) >= 1150
    return tamper, trust


def _verify(tamper: Tamper, trust: TrustStore) -> None:
    verify_audit_dir(tamper.audit_dir, trust, anchors=FileAnchorSink(tamper.anchors_path))


def _all_detected(
    tamper: Tamper, trust: TrustStore, mutations: Iterator[tuple[str, Callable[[], None]]]
) -> int:
    missed = []
    count = 0
    for description, mutate in mutations:
        count += 1
        mutate()
        try:
            _verify(tamper, trust)
        except ChainVerificationError:
            pass
        else:
            missed.append(description)
        finally:
            tamper.restore()
    _verify(tamper, trust)  # restored: intact again
    assert missed == [], f"{len(missed)} of {count} mutations went undetected: {missed[:5]}"
    return count


def test_the_untouched_log_verifies(written: tuple[Tamper, TrustStore]):
    tamper, trust = written
    report = verify_audit_dir(tamper.audit_dir, trust, anchors=FileAnchorSink(tamper.anchors_path))
    assert report.events == 1150
    assert report.warnings == []


def test_every_single_byte_flip_is_detected(written: tuple[Tamper, TrustStore]):
    tamper, trust = written
    rng = random.Random(SEED + 1)
    sizes = [len(tamper.original[p]) for p in tamper.files]

    def flips() -> Iterator[tuple[str, Callable[[], None]]]:
        for _ in range(520):
            (path,) = rng.choices(tamper.files, weights=sizes)
            offset = rng.randrange(len(tamper.original[path]))
            mask = rng.randrange(1, 256)

            def mutate(path: Path = path, offset: int = offset, mask: int = mask) -> None:
                data = bytearray(tamper.original[path])
                data[offset] ^= mask
                path.write_bytes(bytes(data))

            yield f"flip {path.name}@{offset}^{mask}", mutate

    assert _all_detected(tamper, trust, flips()) == 520


def test_flips_in_signatures_and_sequence_digits_are_detected(
    written: tuple[Tamper, TrustStore],
):
    tamper, trust = written
    rng = random.Random(SEED + 2)

    def targeted() -> Iterator[tuple[str, Callable[[], None]]]:
        for path in tamper.segments:
            data = tamper.original[path]
            for marker in (b'"signature":"', b'"seq":'):
                start = 0
                while (found := data.find(marker, start)) >= 0 and rng.random() < 0.9:
                    offset = found + len(marker) + rng.randrange(3)
                    start = found + 1
                    if data[offset : offset + 1] in (b"", b"\n"):
                        continue
                    mask = rng.randrange(1, 256)

                    def mutate(path: Path = path, offset: int = offset, mask: int = mask) -> None:
                        raw = bytearray(tamper.original[path])
                        raw[offset] ^= mask
                        path.write_bytes(bytes(raw))

                    yield f"flip {marker!r} {path.name}@{offset}", mutate

    assert _all_detected(tamper, trust, targeted()) >= 100


def test_every_flip_that_breaks_the_json_is_reported_as_a_parse_error(
    written: tuple[Tamper, TrustStore],
):
    tamper, trust = written
    path = tamper.segments[0]
    lines = tamper.lines(path)
    start = len(lines[0]) + 1  # second line, an event record
    raw = bytearray(tamper.original[path])
    raw[start + 1] = ord("x")  # {"event" -> {xevent": not JSON
    path.write_bytes(bytes(raw))
    try:
        with pytest.raises(AuditVerificationError, match="not valid JSON") as info:
            _verify(tamper, trust)
        assert (info.value.file, info.value.line) == (path, 2)
    finally:
        tamper.restore()


def test_every_deleted_line_or_byte_range_is_detected(written: tuple[Tamper, TrustStore]):
    tamper, trust = written
    rng = random.Random(SEED + 3)

    def deletions() -> Iterator[tuple[str, Callable[[], None]]]:
        for _ in range(150):
            path = rng.choice(tamper.segments)
            index = rng.randrange(len(tamper.lines(path)))

            def drop_line(path: Path = path, index: int = index) -> None:
                lines = tamper.lines(path)
                tamper.write_lines(path, lines[:index] + lines[index + 1 :])

            yield f"delete {path.name} line {index + 1}", drop_line
        for _ in range(50):
            path = rng.choice(tamper.segments)
            size = len(tamper.original[path])
            start = rng.randrange(size)
            length = rng.randrange(1, 300)

            def drop_bytes(path: Path = path, start: int = start, length: int = length) -> None:
                data = tamper.original[path]
                path.write_bytes(data[:start] + data[start + length :])

            yield f"delete {path.name} bytes {start}+{length}", drop_bytes

    assert _all_detected(tamper, trust, deletions()) == 200


def test_every_inserted_line_is_detected(written: tuple[Tamper, TrustStore]):
    tamper, trust = written
    rng = random.Random(SEED + 4)
    every_line = [line for p in tamper.segments for line in tamper.lines(p)]
    last_segments = tamper.last_segments()

    def insertions() -> Iterator[tuple[str, Callable[[], None]]]:
        for _ in range(100):
            path = rng.choice(tamper.segments)
            index = rng.randrange(len(tamper.lines(path)) + 1)
            copy = rng.choice(every_line)

            def insert_copy(path: Path = path, index: int = index, copy: bytes = copy) -> None:
                lines = tamper.lines(path)
                tamper.write_lines(path, [*lines[:index], copy, *lines[index:]])

            yield f"insert copy into {path.name} at {index}", insert_copy
        for _ in range(100):
            # A forged record correctly linked to the record before it (the attacker can
            # compute hashes but cannot sign), anywhere but after a log's final checkpoint.
            path = rng.choice(tamper.segments)
            count = len(tamper.lines(path))
            index = rng.randrange(1, count if path in last_segments else count + 1)

            def insert_forged(path: Path = path, index: int = index) -> None:
                lines = tamper.lines(path)
                before = [json.loads(x) for x in lines[:index] if x.startswith(b'{"event"')]
                if not before:
                    return insert_forged(path, index + 1)
                prev = before[-1]
                event = dict(prev["event"], subject="mallory")
                data = fast_encode(event)
                seq = prev["seq"] + 1
                digest = hashlib.sha256(link_input(seq, prev["hash"], data))
                line = record_line(seq, prev["hash"], digest.hexdigest(), data)[:-1]
                tamper.write_lines(path, [*lines[:index], line, *lines[index:]])
                return None

            yield f"insert forged record into {path.name} at {index}", insert_forged

    assert _all_detected(tamper, trust, insertions()) == 200


def test_every_reordering_is_detected(written: tuple[Tamper, TrustStore]):
    tamper, trust = written
    rng = random.Random(SEED + 5)

    def reorderings() -> Iterator[tuple[str, Callable[[], None]]]:
        for n in range(100):
            path = rng.choice(tamper.segments)
            count = len(tamper.lines(path))
            i = rng.randrange(count - 1)
            j = i + 1 if n % 2 else rng.randrange(count)
            if i == j:
                j = (i + 1) % count

            def swap(path: Path = path, i: int = i, j: int = j) -> None:
                lines = tamper.lines(path)
                lines[i], lines[j] = lines[j], lines[i]
                tamper.write_lines(path, lines)

            yield f"swap {path.name} lines {i + 1} and {j + 1}", swap
        logs = sorted({p.parent for p in tamper.segments})
        for log_dir in logs:
            segments = sorted(log_dir.glob("segment-*.jsonl"))
            for a, b in itertools.pairwise(segments):

                def swap_files(a: Path = a, b: Path = b) -> None:
                    a.write_bytes(tamper.original[b])
                    b.write_bytes(tamper.original[a])

                yield f"swap files {a.name} and {b.name}", swap_files

    assert _all_detected(tamper, trust, reorderings()) > 100


def test_every_truncated_tail_is_detected_given_the_anchors(written: tuple[Tamper, TrustStore]):
    tamper, trust = written
    rng = random.Random(SEED + 6)
    last_segments = sorted(tamper.last_segments())

    def truncations() -> Iterator[tuple[str, Callable[[], None]]]:
        for _ in range(60):
            path = rng.choice(last_segments)
            data = tamper.original[path]
            final_checkpoint = data.rfind(b'{"checkpoint"')
            cut = rng.randrange(final_checkpoint + 1)

            def truncate(path: Path = path, cut: int = cut) -> None:
                path.write_bytes(tamper.original[path][:cut])

            yield f"truncate {path.name} at {cut}", truncate
        for path in last_segments:
            yield f"delete {path.parent.name}/{path.name}", path.unlink
            yield f"delete log {path.parent.name}", lambda d=path.parent: _remove_log(d)

    assert _all_detected(tamper, trust, truncations()) == 60 + 2 * len(last_segments)


def _remove_log(log_dir: Path) -> None:
    for path in log_dir.iterdir():
        path.unlink()
    log_dir.rmdir()


def test_every_checkpoint_re_signed_by_an_unknown_key_is_detected(
    written: tuple[Tamper, TrustStore],
):
    tamper, trust = written
    intruder = Signer("intruder", Ed25519PrivateKey.generate())

    def resignings() -> Iterator[tuple[str, Callable[[], None]]]:
        for path in tamper.segments:
            for index, line in enumerate(tamper.lines(path)):
                if not line.startswith(b'{"checkpoint"'):
                    continue

                def resign(path: Path = path, index: int = index) -> None:
                    lines = tamper.lines(path)
                    old = LogCheckpoint.from_dict(json.loads(lines[index])["checkpoint"])
                    forged = resigned(old, intruder)
                    lines[index] = fast_encode({"checkpoint": forged.to_dict()})
                    tamper.write_lines(path, lines)

                yield f"re-sign {path.name} line {index + 1}", resign

    assert _all_detected(tamper, trust, resignings()) >= 25


def test_a_forged_tail_after_the_final_checkpoint_fails_strict_verification(
    written: tuple[Tamper, TrustStore],
):
    tamper, trust = written
    path = max(tamper.last_segments())
    lines = tamper.lines(path)
    prev = json.loads(next(x for x in reversed(lines) if x.startswith(b'{"event"')))
    data = fast_encode(dict(prev["event"], subject="mallory"))
    seq = prev["seq"] + 1
    digest = hashlib.sha256(link_input(seq, prev["hash"], data)).hexdigest()
    tamper.write_lines(path, [*lines, record_line(seq, prev["hash"], digest, data)[:-1]])
    try:
        with pytest.raises(AuditVerificationError, match="not covered by a signature"):
            verify_audit_dir(
                tamper.audit_dir,
                trust,
                anchors=FileAnchorSink(tamper.anchors_path),
                strict=True,
            )
    finally:
        tamper.restore()
