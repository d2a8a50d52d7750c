"""WebSocket load clients: one process holds many sockets and checks what each received.

Started by bench.fanout, not by hand. Frames are not fully parsed: each event object starts with its
seq, type and timestamp, so a regular expression reads them cheaply and the client process does not
become the bottleneck it measures.
"""

import argparse
import asyncio
import json
import re
import time
from datetime import datetime
from pathlib import Path

import websockets

EVENT = re.compile(rb'\{"seq":(\d+),"type":"[a-z.]+","at":"([^"]+)"')
LATENCY_SAMPLES_PER_SOCKET = 400


class Socket:
    def __init__(self, path: str, token: str, expects: str) -> None:
        self.path, self.token, self.expects = path, token, expects
        self.seqs: list[int] = []
        self.latencies: list[float] = []
        self.frames = 0
        self.error = ""


async def hold(base: str, sock: Socket, ready: asyncio.Event, stop_at: dict[str, float]) -> None:
    """Connect, take the snapshot, then record every event until the coordinator's end time."""
    try:
        async with websockets.connect(
            f"{base}{sock.path}?token={sock.token}", max_size=None, open_timeout=120, ping_interval=None
        ) as ws:
            await ws.recv(decode=False)  # the snapshot
            ready.set()
            while time.time() < stop_at["t"]:
                try:
                    frame = await asyncio.wait_for(ws.recv(decode=False), timeout=1.0)
                except TimeoutError:
                    continue
                now = time.time()
                sock.frames += 1
                for seq, at in EVENT.findall(frame):
                    sock.seqs.append(int(seq))
                    sock.latencies.append(now - datetime.fromisoformat(at.decode()).timestamp())
    except Exception as error:  # a failed socket is a finding, reported per socket
        sock.error = f"{type(error).__name__}: {error}"
        ready.set()


async def wait_for_end(path: Path, stop_at: dict[str, float]) -> None:
    while not path.exists():
        await asyncio.sleep(0.2)
    stop_at["t"] = float(path.read_text())


async def run(args: argparse.Namespace) -> None:
    sockets = [
        Socket(item["path"], item["token"], item["expects"])
        for item in json.loads(Path(args.spec).read_text())
    ]
    readies = [asyncio.Event() for _ in sockets]
    stop_at = {"t": time.time() + 3600}
    ender = asyncio.create_task(wait_for_end(Path(args.until_file), stop_at))
    tasks = []
    for index, sock in enumerate(sockets):
        tasks.append(asyncio.create_task(hold(args.base, sock, readies[index], stop_at)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)  # connect in waves, as real clients would
    await asyncio.gather(*(ready.wait() for ready in readies))
    Path(args.ready_file).write_text(str(sum(1 for sock in sockets if not sock.error)))
    await asyncio.gather(*tasks)
    ender.cancel()
    expected_path = Path(args.expected_file)
    while not expected_path.exists():
        await asyncio.sleep(0.2)
    Path(args.out).write_text(json.dumps(summarise(sockets, json.loads(expected_path.read_text()))))


def summarise(sockets: list[Socket], expected: dict[str, list[int]]) -> dict:
    result = {
        "sockets": len(sockets),
        "errors": [],
        "incomplete": 0,
        "missing": 0,
        "duplicates": 0,
        "out_of_order": 0,
        "received": 0,
        "expected": 0,
        "frames": 0,
        "latencies": [],
    }
    for sock in sockets:
        if sock.error:
            result["errors"].append(sock.error)
            continue
        want = set(expected.get(sock.expects, []))
        got = sock.seqs
        missing = len(want - set(got))
        result["received"] += len(got)
        result["expected"] += len(want)
        result["frames"] += sock.frames
        result["duplicates"] += len(got) - len(set(got))
        result["out_of_order"] += sum(1 for a, b in zip(got, got[1:], strict=False) if b < a)
        result["missing"] += missing
        result["incomplete"] += bool(missing)
        step = max(1, len(sock.latencies) // LATENCY_SAMPLES_PER_SOCKET)
        result["latencies"].extend(sock.latencies[::step])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("base", "spec", "ready-file", "until-file", "expected-file", "out"):
        parser.add_argument(f"--{name}", required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
