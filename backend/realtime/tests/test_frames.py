"""Frames stay under daphne's 1 MiB message limit: large snapshots and batches are split, in order."""

import json

from realtime import hub, payloads


def test_chunks_stay_under_the_limit_and_keep_the_order():
    texts = [json.dumps({"n": n, "pad": "x" * 100}) for n in range(50)]
    chunks = payloads.chunked(texts, limit=1000)
    assert [text for chunk in chunks for text in chunk] == texts
    assert all(len(",".join(chunk).encode()) <= 1000 for chunk in chunks)
    assert len(chunks) > 1
    assert payloads.chunked(["x" * 2000], limit=1000) == [["x" * 2000]], "one oversize item: its own frame"


def test_a_small_snapshot_is_one_frame_and_a_large_one_comes_in_parts():
    [one] = payloads.snapshot_frames(7, ['{"id":1}'])
    assert json.loads(one) == {"type": "snapshot", "seq": 7, "part": 1, "parts": 1, "orders": [{"id": 1}]}
    orders = [json.dumps({"id": n, "pad": "y" * 1000}) for n in range(1500)]  # ~1.5 MB
    frames = payloads.snapshot_frames(9, orders)
    assert len(frames) == 3
    assert all(len(frame.encode()) <= payloads.MAX_FRAME_BYTES + 200 for frame in frames)
    parsed = [json.loads(frame) for frame in frames]
    assert [(f["part"], f["parts"], f["seq"]) for f in parsed] == [(1, 3, 9), (2, 3, 9), (3, 3, 9)]
    assert [order["id"] for f in parsed for order in f["orders"]] == list(range(1500))


def test_a_flush_of_many_events_leaves_as_several_frames_in_seq_order():
    events = [(seq, seq % 7, json.dumps({"seq": seq, "pad": "z" * 800})) for seq in range(1, 1501)]
    batches = hub._batches(events)
    assert len(batches) == 3
    assert [item for batch in batches for item in batch.items] == events
    for batch in batches:
        frame = json.loads(batch.text)
        assert [event["seq"] for event in frame["events"]] == [item[0] for item in batch.items]
        assert len(batch.text.encode()) <= payloads.MAX_FRAME_BYTES + 100
        assert batch.first_seq == batch.items[0][0] and batch.last_seq == batch.items[-1][0]
