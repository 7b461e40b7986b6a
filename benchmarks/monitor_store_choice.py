"""Which shared store for the monitors: PostgreSQL or Redis, measured with SQLite beside them.

The replicas of a scaled-out service must share their rate limits, flood counts,
extraction histories and review queue. ztml uses PostgreSQL (the database the
scaled-out ledger already runs); this script measures the alternative, Redis, doing the
same work in the same run, so the choice rests on numbers:

* admission: the same rules (window, token bucket, flood counts) as one Lua script
  (``EVALSHA``), against the product's ``ztml_monitor_admit`` on PostgreSQL and the
  product's SQLite transaction;
* extraction history: ``WATCH``/``GET`` then ``MULTI``/``SET``/``EXEC`` (optimistic, two
  round trips), with the product's own history arithmetic, against the product's
  PostgreSQL and SQLite paths.

Redis here is Debian's ``redis-server`` (``apt-get install redis-server``), started for
the run on loopback with an append-only file synced every second (a crash loses at most
about a second of counts, like PostgreSQL's ``synchronous_commit = off`` that the monitor
uses). It is spoken to with a minimal RESP client in this file (the product has no Redis
dependency). Figures are microseconds per call, p50 and p99 of single calls.

Run: ``python -m benchmarks.monitor_store_choice [--quick] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.monitor_bench import latencies_us, percentile
from service.monitor import ExtractionDetector, FloodDetector, RateLimited, RateLimiter, admit
from service.monitor.postgres import HistoryRow
from service.stack.processes import free_port

ADMIT_LUA = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local per_second = rate / 60
local oldest = math.floor(now) - window
local scale = 60 / window
local counts = redis.call('HGETALL', KEYS[2])
local total = 0
local seconds = {}
for i = 1, #counts, 2 do
  local s, n = tonumber(counts[i]), tonumber(counts[i + 1])
  if s > oldest then
    total = total + n
    seconds[#seconds + 1] = {s, n}
  else
    redis.call('HDEL', KEYS[2], counts[i])
  end
end
if (total + 1) * scale > rate then
  table.sort(seconds, function(a, b) return a[1] < b[1] end)
  for _, p in ipairs(seconds) do
    total = total - p[2]
    if (total + 1) * scale <= rate then return {0, tostring(p[1] + window - now)} end
  end
  return {0, tostring(window)}
end
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = burst
if saved[1] then
  tokens = math.min(burst, tonumber(saved[1]) + math.max(0, now - tonumber(saved[2])) * per_second)
end
local admitted = tokens >= 1
if admitted then tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((burst - tokens) / per_second) + 1)
if not admitted then return {0, tostring((1 - tokens) / per_second)} end
local sec = math.floor(now)
redis.call('HINCRBY', KEYS[2], sec, 1)
redis.call('EXPIRE', KEYS[2], window + 1)
redis.call('HINCRBY', KEYS[3], sec, 1)
local global = 0
local g = redis.call('HGETALL', KEYS[3])
for i = 1, #g, 2 do
  if tonumber(g[i]) > oldest then
    global = global + tonumber(g[i + 1])
  else
    redis.call('HDEL', KEYS[3], g[i])
  end
end
return {1, tostring(total + 1), tostring(global)}
"""


class Resp:
    """A minimal Redis client: send commands (pipelined), read their replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def call(self, *commands: tuple[object, ...]) -> list[Any]:
        """Send ``commands`` in one write; return their replies."""
        out = bytearray()
        for command in commands:
            out += b"*%d\r\n" % len(command)
            for arg in command:
                data = arg if isinstance(arg, bytes) else str(arg).encode()
                out += b"$%d\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(out)
        return [self._read() for _ in commands]

    def _read(self) -> Any:
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.file.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RuntimeError(f"unexpected reply {line!r}")


@contextlib.contextmanager
def redis_server(workdir: Path) -> Any:
    """Debian's redis-server on a free loopback port, with an append-only file (everysec)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client = Resp(port)
                client.call(("PING",))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def redis_admit(client: Resp, sha: bytes, subject: str, **limits: float) -> object:
    """Admit one request with the Lua script; the outcome as the product reports it."""
    reply = client.call(
        (
            "EVALSHA",
            sha,
            3,
            f"b:{subject}",
            f"f:s:{subject}",
            "f:*",
            limits["rate_per_minute"],
            limits["burst"],
            60,
            limits["now"],
        )
    )[0]
    if int(reply[0]) == 1:
        return float(reply[1])
    return round(float(reply[1]), 6)


def check_same_decisions(client: Resp, sha: bytes, tmp: Path) -> None:
    """The Lua script decides as the product does (so the comparison is of equal work)."""
    limiter, flood = RateLimiter(tmp / "check.db"), FloodDetector(tmp / "check.db")
    now = 1_800_000_000.0
    for step in range(200):
        now += (0.0, 0.3, 1.0, 4.0)[step % 4]
        limits = {"rate_per_minute": 60.0, "burst": 5, "now": now}
        try:
            expected: object = admit(limiter, flood, "check", **limits).rate_per_minute  # type: ignore[arg-type]
        except RateLimited as err:
            expected = round(err.retry_after_seconds, 6)
        assert redis_admit(client, sha, "check", **limits) == expected, step


def _pack(state: HistoryRow) -> bytes:
    header = struct.pack(
        "<qiiii", state.n_queries, state.dim, len(state.history), len(state.labels), 0
    )
    return header + state.history + state.labels + state.distances


def _unpack(raw: bytes | None) -> HistoryRow | None:
    if raw is None:
        return None
    n_queries, dim, n_history, n_labels, _ = struct.unpack_from("<qiiii", raw)
    body = raw[struct.calcsize("<qiiii") :]
    return HistoryRow(
        n_queries=n_queries,
        dim=dim,
        history=body[:n_history],
        labels=body[n_history : n_history + n_labels],
        distances=body[n_history + n_labels :],
    )


def redis_history(client: Resp, detector: ExtractionDetector) -> Callable[[int, Any], None]:
    """An extraction history update on Redis: WATCH/GET, compute, MULTI/SET/EXEC."""
    key = b"h:warm"

    def update(_: int, x: Any) -> None:
        rows = np.asarray(x, dtype=np.float32).reshape(1, -1)
        labels = np.full(1, -1, dtype=np.int16)
        while True:
            _, raw = client.call(("WATCH", key), ("GET", key))
            new, distances = detector._advance(_unpack(raw), rows, labels)
            if client.call(("MULTI",), ("SET", key, _pack(new)), ("EXEC",))[-1] is not None:
                break
        detector.signal(distances)

    return update


def main(argv: list[str] | None = None) -> None:
    """Print the table: each operation on SQLite, PostgreSQL and Redis."""
    from rich.console import Console
    from rich.table import Table

    from service.toolchain.postgres import fresh_database, postgres_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 calls instead of 5000")
    parser.add_argument("--postgres", help="a postgresql:// server (default: one for the run)")
    args = parser.parse_args(argv)
    calls = 500 if args.quick else 5000
    rng = np.random.default_rng(0)
    queries = rng.uniform(0, 1, (calls + 300, 64)).astype(np.float32)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        server = args.postgres or stack.enter_context(postgres_server())
        url = fresh_database(server, "bench_choice")
        client = stack.enter_context(redis_server(tmp))
        (sha,) = client.call(("SCRIPT", "LOAD", ADMIT_LUA))
        check_same_decisions(client, sha, tmp)

        def admission(location: Path | str) -> Callable[[int], None]:
            limiter, flood = RateLimiter(location), FloodDetector(location)

            def run(i: int) -> None:
                with contextlib.suppress(RateLimited):
                    admit(limiter, flood, f"s{i % 50}", rate_per_minute=1e6, burst=1000)

            return run

        def history(location: Path | str) -> Callable[[int], None]:
            detector = ExtractionDetector(location)
            detector.observe("warm", queries[:200])
            return lambda i: detector.observe("warm", queries[i % len(queries)])

        def redis_admission(i: int) -> None:
            redis_admit(client, sha, f"s{i % 50}", rate_per_minute=1e6, burst=1000, now=time.time())

        detector = ExtractionDetector(tmp / "unused.db")
        redis_update = redis_history(client, detector)
        redis_update(0, queries[:200])
        rows = [
            (
                "admission (token + window + flood count)",
                [
                    latencies_us(admission(tmp / "m.db"), calls),
                    latencies_us(admission(url), calls),
                    latencies_us(redis_admission, calls),
                ],
            ),
            (
                "extraction history (200 queries, 1 new)",
                [
                    latencies_us(history(tmp / "m.db"), calls),
                    latencies_us(history(url), calls),
                    latencies_us(lambda i: redis_update(i, queries[i % len(queries)]), calls),
                ],
            ),
        ]
    table = Table(
        title=f"shared monitor store candidates: µs per call, {calls} calls each",
        caption="loopback TCP for PostgreSQL and Redis; SQLite: the single-host default file",
    )
    for column in ("operation", "store", "p50", "p99", "ratio p50", "ratio p99"):
        table.add_column(column, justify="right")
    for name, (local, *others) in rows:
        base50, base99 = percentile(local, 50), percentile(local, 99)
        table.add_row(name, "SQLite (baseline)", f"{base50:.0f}", f"{base99:.0f}", "1.0x", "1.0x")
        for store, values in zip(("PostgreSQL", "Redis"), others, strict=True):
            p50, p99 = percentile(values, 50), percentile(values, 99)
            table.add_row(
                "",
                store,
                f"{p50:.0f}",
                f"{p99:.0f}",
                f"{p50 / base50:.1f}x",
                f"{p99 / base99:.1f}x",
            )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
