"""WebSocket load clients: one process holds many sockets and checks what each received.

Started by bench.fanout, not by hand. Kept lean, because the clients share the machine's cores with the
web process they measure:

- Frames are read as bytes and not fully parsed. Each event object starts with its seq, type and
  timestamp (realtime.payloads.event_payload), so one regular expression reads those. Sockets of one
  process mostly receive the very same frame (the web process shares one text per group), so a frame's
  parse is cached by its bytes and done once per process, not once per socket.
- Every 200th frame is also parsed with json.loads and compared, so a change of the payload's shape
  that the expression would misread is caught (`parse_mismatches`) instead of silently miscounting.
- Latency (now minus the event's `at`, both wall clock on this machine) goes into a 1 ms histogram,
  so a 60 s run at 180,000 deliveries/s needs no list of samples.
- Seqs are kept per socket in an array, then checked against what the socket should have seen and for
  seq order across the whole socket (`check`).
"""

import argparse
import asyncio
import json
import re
import time
from array import array
from datetime import datetime
from pathlib import Path
from typing import Any

import websockets

EVENT = re.compile(rb'\{"seq":(\d+),"type":"[a-z._]+","at":"([^"]+)"')
EVENTS_FRAME = b'{"type":"events"'
CHECK_EVERY_FRAMES = 200
CACHE_FRAMES = 4096
HISTOGRAM_MS = 600_000  # latencies of 600 s and more share the last bucket
WAVE = 20


class Socket:
    def __init__(self, path: str, token: str, expects: str) -> None:
        self.path, self.token, self.expects = path, token, expects
        self.seqs = array("q")
        self.frames = 0
        self.other_frames: dict[str, int] = {}
        self.error = ""
        self.want = -1  # how many events it should see, once the driver has said
        self.done = False


class Reader:
    """What the sockets of this process share: the parse cache, the latency histogram, the checks."""

    def __init__(self) -> None:
        self.cache: dict[bytes, tuple[list[int], list[float]]] = {}
        self.histogram = [0] * HISTOGRAM_MS
        self.max_latency = 0.0
        self.frames_seen = 0
        self.max_frame_bytes = 0  # the largest frame after the snapshot (daphne refuses to send over 1 MiB)
        self.parse_mismatches = 0
        self.event_frames = 0  # frames of events, and their bytes: what an event costs on the wire
        self.event_frame_bytes = 0

    def parse(self, frame: bytes) -> tuple[list[int], list[float]]:
        parsed = self.cache.get(frame)
        if parsed is None:
            if len(self.cache) >= CACHE_FRAMES:
                self.cache.clear()
            matches = EVENT.findall(frame)
            parsed = (
                [int(seq) for seq, _ in matches],
                [datetime.fromisoformat(at.decode()).timestamp() for _, at in matches],
            )
            self.cache[frame] = parsed
        self.frames_seen += 1
        if self.frames_seen % CHECK_EVERY_FRAMES == 0:
            full = [event["seq"] for event in json.loads(frame)["events"]]
            self.parse_mismatches += full != parsed[0]
        return parsed

    def take(self, sock: Socket, frame: bytes) -> None:
        now = time.time()
        sock.frames += 1
        self.max_frame_bytes = max(self.max_frame_bytes, len(frame))
        if not frame.startswith(EVENTS_FRAME):
            kind = frame[9:30].split(b'"')[0].decode(errors="replace")  # after '{"type":"'
            sock.other_frames[kind] = sock.other_frames.get(kind, 0) + 1
            return
        seqs, ats = self.parse(frame)
        sock.seqs.extend(seqs)
        self.event_frames += 1
        self.event_frame_bytes += len(frame)
        histogram, last = self.histogram, HISTOGRAM_MS - 1
        for at in ats:
            latency = now - at
            histogram[min(max(int(latency * 1000), 0), last)] += 1
            if latency > self.max_latency:
                self.max_latency = latency
        if sock.want >= 0 and len(sock.seqs) >= sock.want:
            sock.done = True


async def hold(
    base: str, sock: Socket, reader: Reader, ready: asyncio.Event, stop_at: dict[str, float]
) -> None:
    """Connect, take the snapshot, then record every frame until complete or the coordinator's end time."""
    try:
        async with websockets.connect(
            f"{base}{sock.path}",
            additional_headers={"Authorization": f"Token {sock.token}"},  # never in the URL: refused there
            max_size=None,
            open_timeout=120,
            ping_interval=None,
        ) as ws:
            first = await ws.recv(decode=False)
            if not first.startswith(b'{"type":"snapshot"'):
                raise RuntimeError(f"first frame is not a snapshot: {first[:80]!r}")
            ready.set()
            while not sock.done and time.time() < stop_at["t"]:
                try:
                    frame = await asyncio.wait_for(ws.recv(decode=False), timeout=1.0)
                except TimeoutError:
                    continue
                reader.take(sock, frame)
    except Exception as error:  # a failed socket is a finding, reported per socket
        sock.error = f"{type(error).__name__}: {error}"
        ready.set()


async def watch_driver(until_file: Path, expected_file: Path, sockets: list[Socket], stop_at: dict) -> None:
    """When the driver is done it names the end time and each socket's expected seqs (by `expects`)."""
    while not until_file.exists():
        await asyncio.sleep(0.2)
    stop_at["t"] = float(until_file.read_text())
    expected = json.loads(expected_file.read_text())
    for sock in sockets:
        sock.want = len(expected.get(sock.expects, []))
        sock.done = sock.want >= 0 and len(sock.seqs) >= sock.want


async def run(args: argparse.Namespace) -> None:
    sockets = [
        Socket(item["path"], item["token"], item["expects"])
        for item in json.loads(Path(args.spec).read_text())
    ]
    reader = Reader()
    readies = [asyncio.Event() for _ in sockets]
    stop_at = {"t": time.time() + 7200}
    tasks = []
    for start in range(0, len(sockets), WAVE):
        # In waves, each waiting for the last to have its snapshot: hundreds of handshakes at once queue
        # behind each other's database work in the web process and pass daphne's handshake timeout.
        for index in range(start, min(start + WAVE, len(sockets))):
            tasks.append(
                asyncio.create_task(hold(args.base, sockets[index], reader, readies[index], stop_at))
            )
        await asyncio.gather(*(ready.wait() for ready in readies[start : start + WAVE]))
    Path(args.ready_file).write_text(str(sum(1 for sock in sockets if not sock.error)))
    watcher = asyncio.create_task(
        watch_driver(Path(args.until_file), Path(args.expected_file), sockets, stop_at)
    )
    await asyncio.gather(*tasks)
    await watcher
    expected = json.loads(Path(args.expected_file).read_text())
    Path(args.out).write_text(json.dumps(summarise(sockets, reader, expected)))


def check(got: array, want: list[int]) -> dict[str, Any]:
    """Compare what a socket received with the seqs it should have seen (ascending).

    Events reach a client in seq order across all its orders (the relay releases them up to its mark),
    although the writers commit out of seq order: an inversion is an event whose seq is lower than the
    highest this socket had received before it (`first_inversion`: that seq and the highest before it).
    """
    highest, inversions, first_inversion = 0, 0, None
    for seq in got:
        if seq < highest:
            inversions += 1
            if first_inversion is None:
                first_inversion = [seq, highest]
        else:
            highest = seq
    received = set(got)
    missing_flags = [seq not in received for seq in want]
    wanted = set(want)
    return {
        "expected": len(want),
        "received": len(wanted & received),
        "missing": sum(missing_flags),
        # a gap is a run of consecutive missing seqs among those the socket should see
        "gaps": sum(
            1 for i, flag in enumerate(missing_flags) if flag and (i == 0 or not missing_flags[i - 1])
        ),
        "duplicates": len(got) - len(received),
        "inversions": inversions,
        "first_inversion": first_inversion,
        "unexpected": len(received - wanted),
    }


def summarise(sockets: list[Socket], reader: Reader, expected: dict[str, list[int]]) -> dict[str, Any]:
    """Per-process totals; per socket only what the coordinator needs to find the worst one."""
    result: dict[str, Any] = {
        "sockets": len(sockets),
        "errors": [sock.error for sock in sockets if sock.error],
        "frames": sum(sock.frames for sock in sockets),
        "events": sum(len(sock.seqs) for sock in sockets),
        "other_frames": {},
        "parse_mismatches": reader.parse_mismatches,
        "max_frame_bytes": reader.max_frame_bytes,
        "event_frames": reader.event_frames,
        "event_frame_bytes": reader.event_frame_bytes,
        "histogram": {str(ms): count for ms, count in enumerate(reader.histogram) if count},
        "max_latency_s": reader.max_latency,
        "per_socket": [],
    }
    for sock in sockets:
        for kind, count in sock.other_frames.items():
            result["other_frames"][kind] = result["other_frames"].get(kind, 0) + count
        if sock.error:
            continue
        figures = check(sock.seqs, expected.get(sock.expects, []))
        figures["kind"] = "operator" if sock.expects == "all" else "courier"
        result["per_socket"].append(figures)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("base", "spec", "ready-file", "until-file", "expected-file", "out"):
        parser.add_argument(f"--{name}", required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
