"""`make bench` keeps working: every benchmark runs at small sizes and the report is written.

The published figures come from the full run (`make bench`); this only proves, on every CI run, that
the benchmarks still start the stack, measure, check completeness and render docs/benchmarks.md.
"""

import json
import os
import subprocess
import sys

import pytest

from bench.report import STEPS

from .conftest import REPO

pytestmark = pytest.mark.slow


def test_quick_bench_writes_a_report_with_every_section(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "backend"), str(REPO)])}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.report", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    report = json.loads((tmp_path / "benchmarks.json").read_text())
    assert set(report["results"]) == {step.name for step in STEPS}
    assert all(result["ok"] for result in report["results"].values()), report["results"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["versions"]["django"].startswith("5.2")
    assert report["results"]["rest_create"]["orders"] > 0
    modes = report["results"]["status_changes"]["modes"]
    assert modes["batch"]["changes"] == modes["per_change"]["changes"] > 0
    assert modes["batch"]["statements_per_change"] < modes["per_change"]["statements_per_change"]
    fanout = report["results"]["fanout"]["coalesced"]
    assert fanout["completeness_min"] == 1.0 and fanout["inversions"] == 0
    assert fanout["relay"]["released"] >= fanout["changes"] > 0
    assert fanout["avg_event_bytes"] > 0 and fanout["profile"]
    scale = report["results"]["fanout_scale"]["coalesced"]
    assert scale["web_processes"] == 2 and scale["completeness_min"] == 1.0
    assert [web["received"] > 0 and web["missing"] == 0 for web in scale["per_web"]] == [True, True]
    storm = report["results"]["reconnect"]
    assert storm["reconnected"] == storm["connected"] > 0 and storm["not_caught_up"] == 0
    assert (storm["missing"], storm["duplicates"], storm["inversions"]) == (0, 0, 0)
    assert storm["health"]["probes"] > 0 and storm["health"]["failures"] == 0
    soak = report["results"]["soak"]
    assert soak["resumes"] > 0 and soak["orders_delivered"] == soak["orders_created"] > 0
    assert (soak["missed"], soak["duplicates"], soak["inversions"], soak["deadlocks"]) == (0, 0, 0, 0)
    markdown = (tmp_path / "benchmarks.md").read_text()
    for heading in (
        "## Targets",
        "## REST order creation",
        "## Poll tick",
        "## Fan-out",
        "## Fan-out over two web processes (scale-out)",
        "## Reconnect storm",
        "## Idle capacity",
        "## Soak: real pipeline with resuming sockets",
    ):
        assert heading in markdown
    assert "FAILED" not in markdown
