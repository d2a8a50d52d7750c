"""`make bench`: every benchmark, each in processes of its own, then docs/benchmarks.md and its JSON.

    PYTHONPATH=backend:. python -m bench.report            # the published figures (about 10 minutes)
    PYTHONPATH=backend:. python -m bench.report --quick    # small sizes, to check the benchmarks run

Needs DATABASE_URL and REDIS_URL: `make bench` starts embedded PostgreSQL and Redis when they are not
set. Each benchmark works in `<name>_bench` and Redis database 15 (the soak in `<name>_soak` and Redis
database 14), never in real data.

A benchmark that loses an event, leaves a gap in seq, delivers out of seq order or gets an error fails
the run (exit 1) and is marked FAILED in the report; a figure that misses its target is reported as
missed, not hidden.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import common

logger = logging.getLogger("bench.report")
RESULTS_DIR = common.REPO / ".run" / "bench"
# Before/after figures of past changes, written by hand when a change is measured; appended to the report.
CHANGES = Path(__file__).with_name("changes.md")


@dataclass
class Step:
    name: str
    title: str
    args: list[str]
    quick_args: list[str]
    timeout: float


STEPS = [
    Step(
        "rest_create",
        "REST order creation",
        ["--clients", "16", "--duration", "20"],
        ["--clients", "16", "--duration", "3"],
        300,
    ),
    Step("poll_tick", "Poll tick", ["--legs", "100", "1000", "5000"], ["--legs", "100"], 900),
    Step(
        "fanout",
        "Fan-out",
        ["--operators", "500", "--couriers", "100", "--rate", "300", "--duration", "60"],
        ["--operators", "20", "--couriers", "5", "--rate", "20", "--duration", "3"],
        900,
    ),
    Step(
        "idle",
        "Idle capacity",
        ["--sockets", "2000", "--idle", "20"],
        ["--sockets", "100", "--idle", "6"],
        900,
    ),
    Step("soak", "Soak: real pipeline with resuming sockets", [], ["--quick"], 600),
]


def run_step(step: Step, quick: bool, results: Path) -> dict:
    """Runs one benchmark module as a process of its own; its JSON, or why there is none."""
    out = results / f"{step.name}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", f"bench.{step.name}", *(step.quick_args if quick else step.args)]
    command += ["--json", str(out)]
    logger.info("==> %s: %s", step.title, " ".join(command[1:]))
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command, cwd=common.REPO, env=common.python_path_env(), timeout=step.timeout
        )
        code = completed.returncode
    except subprocess.TimeoutExpired:
        code = None
    result = json.loads(out.read_text()) if out.exists() else {}
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["command"] = "PYTHONPATH=backend:. python " + " ".join(command[1:-2])
    if code != 0:
        result["ok"] = False
        result["failure"] = "timed out" if code is None else f"exit code {code}"
    logger.info(
        "<== %s %s in %.0f s", step.title, "ok" if result.get("ok", True) else "FAILED", result["wall_s"]
    )
    return result


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        value = f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def _verdict(ok: bool | None) -> str:
    return "met" if ok else ("**missed**" if ok is not None else "—")


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each published target."""
    rows: list[tuple[str, str, bool | None]] = []
    rest = results.get("rest_create", {})
    if "orders_per_s" in rest:
        met = rest["orders_per_s"] >= 200 and (rest.get("p99_ms") or 1e9) < 200
        rows.append(
            (
                "200 orders/s created, p99 < 200 ms (16 clients)",
                f"{_fmt(rest['orders_per_s'])} orders/s, p99 {_fmt(rest.get('p99_ms'), ' ms')}",
                met,
            )
        )
    poll = {row.get("legs"): row for row in results.get("poll_tick", {}).get("ticks", [])}
    if 5000 in poll:
        tick = poll[5000].get("poll_tick_s")
        rows.append(("one tick of 5,000 due legs < 2 s", _fmt(tick, " s"), tick is not None and tick < 2))
    fanout = results.get("fanout", {}).get("coalesced", {})
    if fanout:
        p99 = fanout.get("p99_ms")
        lost = fanout.get("missing", 0) + fanout.get("gaps", 0)
        inversions = fanout.get("inversions")
        at_size = fanout.get("connected", 0) >= 600 and fanout.get("changes_per_s", 0) >= 0.97 * 300
        rows.append(
            (
                "300 changes/s to 600 sockets through the relay, p99 < 500 ms, nothing lost, in seq order",
                f"{_fmt(fanout.get('changes_per_s'))} changes/s to {_fmt(fanout.get('connected'))} sockets: "
                f"p99 {_fmt(p99, ' ms')}, {_fmt(lost)} lost, {_fmt(inversions)} inversions",
                # a run below the target's size or rate (--quick, or a driver that lagged) proves nothing
                at_size
                and p99 is not None
                and p99 < 500
                and lost == 0
                and inversions == 0
                and fanout.get("ok", False),
            )
        )
    soak = results.get("soak", {})
    if "resumes" in soak:
        settings = soak.get("settings", {})
        at_size = (
            settings.get("rate", 0) >= 3
            and settings.get("duration_s", 0) >= 90
            and settings.get("workers", 0) >= 2
            and soak.get("resuming_sockets", 0) >= 20
        )
        rows.append(
            (
                "3 orders/s through the real pipeline for 90 s, 20 sockets resuming: nothing missed, "
                "in seq order, every order delivered, no deadlock",
                f"{_fmt(soak['resumes'])} resumes: {_fmt(soak.get('missed'))} missed, "
                f"{_fmt(soak.get('duplicates'))} duplicates, {_fmt(soak.get('inversions'))} inversions; "
                f"{_fmt(soak.get('orders_delivered'))}/{_fmt(soak.get('orders_created'))} delivered; "
                f"{_fmt(soak.get('deadlocks'))} deadlocks",
                at_size and soak.get("ok", False),  # --quick proves it runs, not the target
            )
        )
    return rows


def render(report: dict) -> str:
    """docs/benchmarks.md from the report."""
    machine, results = report["machine"], report["results"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {report['generated_at']} with `{report['command']}` (about {report['wall_min']} minutes).",
        "Every figure below comes from that one run; the same numbers, and more, are in "
        "[benchmarks.json](benchmarks.json).",
        "",
        f"**Machine:** {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"{machine['os']}; "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql']}, Redis {machine['redis_server']}; "
        + ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
        + ".",
        "",
        "The web process, the clients, the simulators, PostgreSQL and Redis all share these cores, so each",
        "figure is what the whole stack does on one small machine, not a web process alone.",
        "",
        'The abuse limits (`.env.default`, "Sign-in and abuse limits") are as deployed, except two that a',
        "benchmark's load trips by design, lifted in its web process only (bench/common.py):",
        "`THROTTLE_ORDER_CREATE_PER_USER` for REST creation and the soak (one customer's clients create",
        "every order) and `REALTIME_SOCKETS_PER_USER` for fan-out, idle capacity and the soak (hundreds of",
        "sockets of one operator). Clients sign in with `Authorization: Token`, sockets included.",
        "",
        "## Targets",
        "",
        "| Target | Measured | |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {target} | {measured} | {_verdict(met)} |" for target, measured, met in targets(results)]
    failed = [name for name, result in results.items() if not result.get("ok", True)]
    if failed:
        lines += ["", f"**FAILED:** {', '.join(failed)} — see each section."]
    lines += _rest_section(results.get("rest_create"))
    lines += _poll_section(results.get("poll_tick"))
    lines += _fanout_section(results.get("fanout"))
    lines += _idle_section(results.get("idle"))
    lines += _soak_section(results.get("soak"))
    lines += ["", CHANGES.read_text().rstrip("\n")]
    return "\n".join(lines) + "\n"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _section(title: str, result: dict | None) -> list[str]:
    lines = ["", f"## {title}", ""]
    if result is None:
        return [*lines, "Not run."]
    if not result.get("ok", True):
        lines += [
            f"**FAILED** ({result.get('failure') or '; '.join(result.get('failures', [])) or 'see below'})",
            "",
        ]
    return [*lines, f"`{result['command']}`", ""]


def _limits(result: dict) -> list[str]:
    text = result.get("limits") or result.get("profile")
    return ["", f"Profile (py-spy, share of samples by function): {text}"] if text else []


def _rest_section(result: dict | None) -> list[str]:
    lines = _section("REST order creation", result)
    if not result or "orders_per_s" not in result:
        return lines
    headers = ["Clients", "Orders", "Orders/s", "p50", "p90", "p99", "max", "Errors", "Web CPU"]
    row = [_fmt(result["clients"]), _fmt(result["orders"]), _fmt(result["orders_per_s"])]
    row += [_fmt(result[key], " ms") for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
    row += [_fmt(sum(result["errors"].values())), _fmt(result["web_cpu_percent"], " %")]
    return lines + _table(headers, [row]) + _limits(result)


def _poll_section(result: dict | None) -> list[str]:
    lines = _section("Poll tick", result)
    if not result or "ticks" not in result:
        return lines
    headers = ["Due legs", "Tick", "Of which HTTP", "Legs/s", "Failed"]
    rows = [
        [
            _fmt(tick.get("legs")),
            _fmt(tick.get("poll_tick_s"), " s"),
            _fmt(tick.get("poll_http_s"), " s"),
            _fmt(tick.get("legs_per_second")),
            _fmt(tick.get("failed")),
        ]
        for tick in result["ticks"]
    ]
    return lines + _table(headers, rows) + _limits(result)


def _fanout_section(result: dict | None) -> list[str]:
    lines = _section("Fan-out", result)
    if not result:
        return lines
    headers = ["Run", "Sockets", "Changes/s", "Delivered / due", "Lowest socket", "Frames/s", "Largest frame"]
    headers += ["p50", "p99", "max", "Gaps", "Inversions", "Web CPU"]
    relay_headers = ["Run", "Relay every", "Published p50", "Published p99", "Released", "Held"]
    relay_headers += ["Held p50", "Held p99", "Held max", "Missing seqs", "Rolled back", "Given up", "Late"]
    relay_headers += ["Relay CPU"]
    rows, relay_rows = [], []
    for name in ("coalesced", "uncoalesced"):
        run = result.get(name)
        if not run:
            continue
        row = [name, _fmt(run.get("connected")), _fmt(run.get("changes_per_s"))]
        row += [
            f"{_fmt(run.get('received'))} / {_fmt(run.get('expected'))}",
            _pct(run.get("completeness_min")),
        ]
        row += [_fmt(run.get("frames_per_s")), _fmt(run.get("max_frame_kb"), " KiB")]
        row += [_fmt(run.get(key), " ms") for key in ("p50_ms", "p99_ms", "max_ms")]
        row += [_fmt(run.get("gaps")), _fmt(run.get("inversions")), _fmt(run.get("web_cpu_percent"), " %")]
        rows.append(row)
        relay = run.get("relay") or {}
        relay_row = [name, _fmt(run.get("relay_interval_ms"), " ms")]
        relay_row += [_fmt(run.get(key), " ms") for key in ("published_p50_ms", "published_p99_ms")]
        relay_row += [_fmt(relay.get("released")), _fmt(relay.get("held_events"))]
        relay_row += [_fmt(relay.get(key), " ms") for key in ("held_ms_p50", "held_ms_p99", "held_ms_max")]
        relay_row += [_fmt(relay.get(key)) for key in ("gaps", "rolled_back", "given_up", "late")]
        relay_row += [_fmt(run.get("relay_cpu_percent"), " %")]
        relay_rows.append(relay_row)
    lines += _table(headers, rows)
    lines += [
        "",
        "Latency runs from the event's commit to a client reading it, through the relay "
        "(`manage.py relay_events`), which releases events in seq order up to its high-water mark. "
        "Inversions: events a socket received after a higher seq (must be 0). Below, the relay's share: "
        "published is from commit to the relay's message reaching a subscriber (the rest is the web "
        "process's flush, sending and the clients' reading); held, the events that waited behind a lower "
        "seq whose transaction was still open, and for how long.",
        "",
    ]
    lines += _table(relay_headers, relay_rows)
    if result.get("ratio"):
        lines += ["", f"Coalescing, measured in the same invocation: {result['ratio']}."]
    return lines + _limits(result)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _idle_section(result: dict | None) -> list[str]:
    lines = _section("Idle capacity", result)
    if not result or "sockets" not in result:
        return lines
    headers = [
        "Sockets",
        "Connected",
        "Live after idle",
        "Connect time",
        "Web RSS",
        "Per socket",
        "Probe p99",
    ]
    row = [_fmt(result["sockets"]), _fmt(result["connected"])]
    row += [
        f"{_fmt(result['alive_after_idle'])} ({_fmt(result['idle_s'])} s silent)",
        _fmt(result["connect_s"], " s"),
    ]
    row += [f"{_fmt(result['rss_before_mib'])} → {_fmt(result['rss_at_n_mib'])} MiB"]
    row += [_fmt(result["kib_per_socket"], " KiB"), _fmt(result["probe_p99_ms"], " ms")]
    return lines + _table(headers, [row])


def _soak_section(result: dict | None) -> list[str]:
    lines = _section("Soak: real pipeline with resuming sockets", result)
    if not result or "resumes" not in result:
        return lines
    settings = result["settings"]
    lines += [
        f"{_fmt(result['orders_created'])} orders ({_fmt(settings['rate'])}/s for "
        f"{_fmt(settings['duration_s'])} s) through the real processes: the three provider simulators "
        f"(a status every {_fmt(settings['step_seconds'])} s; Bueno also pushes webhooks), one web "
        f"process, {settings['workers']} Celery workers of concurrency {settings['concurrency']}, beat "
        f"every {settings['poll_interval_s']} s and the relay. One operator socket stays connected (the "
        f"reference); {result['resuming_sockets']} others stay {_fmt(settings['connected_s'])} s, leave "
        f"for {_fmt(settings['away_s'])} s and resume with `?after=<highest seq seen>`. Each socket is "
        "checked against the database and the reference across all its reconnects.",
        "",
    ]
    headers = ["Delivered", "Events", "Resumes", "Received", "Missed", "Duplicates", "Inversions"]
    headers += ["p50", "p99", "Resumed p99", "Deadlocks"]
    row = [
        f"{_fmt(result['orders_delivered'])} / {_fmt(result['orders_created'])}",
        _fmt(result["events"]),
        _fmt(result["resumes"]),
        _fmt(result["events_received"]),
        _fmt(result["missed"]),
        _fmt(result["duplicates"]),
        _fmt(result["inversions"]),
    ]
    row += [_fmt(result.get(key), " ms") for key in ("p50_ms", "p99_ms", "resumed_p99_ms")]
    row += [_fmt(result.get("deadlocks"))]
    lines += _table(headers, [row])
    relay = result.get("relay") or {}
    lines += [
        "",
        "p50/p99: the reference socket, from an event's `at` to its receipt; resumed p99 includes the "
        "replays after time away. The relay's counters for the run:",
        "",
    ]
    relay_headers = ["Released", "Missing seqs", "Rolled back", "Given up", "Late", "Held"]
    relay_headers += ["Held p50", "Held p99", "Held max"]
    relay_row = [_fmt(relay.get(key)) for key in ("released", "gaps", "rolled_back", "given_up", "late")]
    relay_row += [_fmt(relay.get("held_events"))]
    relay_row += [_fmt(relay.get(key), " ms") for key in ("held_ms_p50", "held_ms_p99", "held_ms_max")]
    lines += _table(relay_headers, [relay_row])
    transitions = result.get("evidence", {}).get("missed_by_transition")
    if transitions:
        lines += [
            "",
            "Missed events by transition: " + ", ".join(f"{k} {v}" for k, v in transitions.items()) + ".",
        ]
    errors = result.get("logged_errors")
    if errors:
        lines += [
            "",
            "Errors logged: "
            + "; ".join(
                f"{name} {found['count']} (first: `{found['first']}`)" for name, found in errors.items()
            ),
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that every benchmark runs")
    parser.add_argument("--only", nargs="+", choices=[step.name for step in STEPS])
    parser.add_argument(
        "--out", type=Path, default=common.REPO / "docs", help="where benchmarks.md and benchmarks.json go"
    )
    args = parser.parse_args()
    common.configure_logging()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    steps = [step for step in STEPS if not args.only or step.name in args.only]
    results = {step.name: run_step(step, args.quick, RESULTS_DIR) for step in steps}
    os.environ["DATABASE_URL"] = common.bench_database_url()
    report = {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "make bench" + (" (quick)" if args.quick else ""),
        "wall_min": round((time.monotonic() - started) / 60, 1),
        "machine": common.machine(),
        "results": results,
    }
    report["targets"] = [{"target": t, "measured": m, "met": ok} for t, m, ok in targets(results)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "benchmarks.md").write_text(render(report))
    logger.info("wrote %s and %s", args.out / "benchmarks.md", args.out / "benchmarks.json")
    sys.exit(0 if all(result.get("ok", True) for result in results.values()) else 1)


if __name__ == "__main__":
    main()
