"""`make bench`: every benchmark, each in processes of its own, then docs/benchmarks.md and its JSON.

    PYTHONPATH=backend:. python -m bench.report            # the published figures (about 20 minutes)
    PYTHONPATH=backend:. python -m bench.report --quick    # small sizes, to check the benchmarks run

Needs DATABASE_URL and REDIS_URL: `make bench` starts embedded PostgreSQL and Redis when they are not
set. Each benchmark works in `<name>_bench` and Redis database 15 (the soak in `<name>_soak` and Redis
database 14), never in real data.

A benchmark that loses an event, leaves a gap in seq, delivers out of seq order or gets an error fails
the run (exit 1) and is marked FAILED in the report; a figure that misses its target is reported as
missed, not hidden.

Each section shows its figures after (this run) against before: the published figures that
bench/baseline.json keeps, written from an earlier docs/benchmarks.json with
`python -m bench.report --baseline-from <that file>`, so that before/after is reproducible.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common

logger = logging.getLogger("bench.report")
RESULTS_DIR = common.REPO / ".run" / "bench"
# Before/after figures of past changes, written by hand when a change is measured; appended to the report.
CHANGES = Path(__file__).with_name("changes.md")
# The "before" figures: the published ones, extracted from an earlier report by --baseline-from.
BASELINE = Path(__file__).with_name("baseline.json")


@dataclass
class Step:
    name: str
    title: str
    args: list[str]
    quick_args: list[str]
    timeout: float
    module: str = ""  # bench.<module> runs the step; its name when empty


STEPS = [
    Step(
        "rest_create",
        "REST order creation",
        ["--clients", "16", "--duration", "20"],
        ["--clients", "16", "--duration", "3"],
        300,
    ),
    Step("poll_tick", "Poll tick", ["--legs", "100", "1000", "5000"], ["--legs", "100"], 900),
    Step("status_changes", "Status changes", ["--orders", "500"], ["--orders", "30", "--no-profile"], 600),
    Step(
        "fanout",
        "Fan-out",
        ["--operators", "500", "--couriers", "100", "--rate", "300", "--duration", "60"],
        ["--operators", "20", "--couriers", "5", "--rate", "20", "--duration", "3"],
        900,
    ),
    Step(
        "fanout_scale",
        "Fan-out over two web processes",
        ["--web-processes", "2", "--operators", "1000", "--couriers", "200", "--rate", "300"]
        + ["--duration", "60", "--skip-uncoalesced"],
        ["--web-processes", "2", "--operators", "20", "--couriers", "4", "--rate", "20", "--duration", "3"]
        + ["--skip-uncoalesced"],
        900,
        module="fanout",
    ),
    Step(
        "reconnect",
        "Reconnect storm",
        ["--sockets", "1000", "--rate", "100", "--warmup", "10", "--after-drop", "20"],
        ["--sockets", "50", "--rate", "20", "--warmup", "3", "--after-drop", "3"],
        600,
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
    module = step.module or step.name
    command = [sys.executable, "-m", f"bench.{module}", *(step.quick_args if quick else step.args)]
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


@dataclass
class Figure:
    """One figure of a step, shown after (this run) against before (bench/baseline.json)."""

    key: str  # its name in bench/baseline.json
    label: str
    unit: str
    get: Callable[[dict], Any]
    target: str = ""
    met: Callable[[Any], bool] | None = None


def _at(*path: str | int) -> Callable[[dict], Any]:
    """A getter of `result[path[0]][path[1]]...`, None where a key is missing."""

    def get(result: Any) -> Any:
        for key in path:
            if isinstance(result, dict):
                result = result.get(key)
            elif isinstance(result, list) and isinstance(key, int) and -len(result) <= key < len(result):
                result = result[key]
            else:
                return None
        return result

    return get


def _tick(legs: int) -> Callable[[dict], Any]:
    return lambda result: next(
        (tick.get("poll_tick_s") for tick in result.get("ticks", []) if tick.get("legs") == legs), None
    )


def _fanout_figures(run: str, sockets: str) -> list[Figure]:
    return [
        Figure(
            "p99_ms",
            f"p99, 300 changes/s to {sockets}",
            " ms",
            _at(run, "p99_ms"),
            "< 250 ms",
            lambda v: v < 250,
        ),
        Figure("p50_ms", "p50", " ms", _at(run, "p50_ms")),
        Figure("max_ms", "max", " ms", _at(run, "max_ms")),
        Figure(
            "completeness", "delivered / due", "", _at(run, "completeness_total"), "100 %", lambda v: v == 1
        ),
        Figure(
            "avg_event_bytes",
            "average event on the wire",
            " B",
            _at(run, "avg_event_bytes"),
            "≤ 200 B",
            lambda v: v <= 200,
        ),
        Figure("frames_per_s", "frames/s", "", _at(run, "frames_per_s")),
        Figure("wire_mb_per_s", "events frames, MB/s", "", _at(run, "wire_mb_per_s")),
        Figure("max_frame_kb", "largest frame", " KiB", _at(run, "max_frame_kb")),
        Figure("web_cpu_percent", "web CPU (all web processes)", " %", _at(run, "web_cpu_percent")),
        Figure(
            "clients_max_process_cpu_percent",
            "busiest client process CPU",
            " %",
            _at(run, "clients_max_process_cpu_percent"),
        ),
    ]


# The figures of each step; those with a target are judged only when the step ran at its published size
# (AT_SIZE): a --quick run proves that the benchmark runs, not the target.
FIGURES: dict[str, list[Figure]] = {
    "rest_create": [
        Figure("orders_per_s", "orders/s, 16 clients", "", _at("orders_per_s"), "≥ 190", lambda v: v >= 190),
        Figure("p99_ms", "p99", " ms", _at("p99_ms"), "< 150 ms", lambda v: v < 150),
        Figure("p50_ms", "p50", " ms", _at("p50_ms")),
        Figure("web_cpu_percent", "web CPU", " %", _at("web_cpu_percent")),
    ],
    "poll_tick": [
        Figure("tick_5000_s", "tick of 5,000 due legs", " s", _tick(5000), "< 2 s", lambda v: v < 2),
        Figure("tick_1000_s", "tick of 1,000 due legs", " s", _tick(1000)),
    ],
    "status_changes": [
        Figure(
            "batch_changes_per_s",
            "status changes/s through the poller's apply step",
            "",
            _at("modes", "batch", "changes_per_s"),
            "≥ 500",
            lambda v: v >= 500,
        ),
        Figure(
            "per_change_changes_per_s",
            "the same, one transaction per change",
            "",
            _at("modes", "per_change", "changes_per_s"),
        ),
        Figure(
            "batch_statements_per_change",
            "SQL statements per change",
            "",
            _at("modes", "batch", "statements_per_change"),
        ),
    ],
    "fanout": _fanout_figures("coalesced", "600 sockets, 1 web process"),
    "fanout_scale": _fanout_figures("coalesced", "1,200 sockets, 2 web processes"),
    "reconnect": [
        Figure(
            "caught_up_s",
            "1,000 sockets dropped: all caught up",
            " s",
            _at("caught_up_s"),
            "< 10 s",
            lambda v: v < 10,
        ),
        Figure("caught_up_p50_s", "median socket caught up", " s", _at("caught_up_p50_s")),
        Figure("reconnect_p99_s", "p99 handshake done again", " s", _at("reconnect_p99_s")),
        Figure(
            "missing",
            "events missing, duplicated or out of order",
            "",
            lambda r: None if "missing" not in r else r["missing"] + r["duplicates"] + r["inversions"],
            "0",
            lambda v: v == 0,
        ),
        Figure(
            "health_failures",
            "health checks failed or timed out",
            "",
            _at("health", "failures"),
            "0",
            lambda v: v == 0,
        ),
        Figure(
            "health_worst_ms", "worst /healthz?scope=process", " ms", _at("health", "process", "worst_ms")
        ),
        Figure("health_full_worst_ms", "worst /healthz", " ms", _at("health", "full", "worst_ms")),
        Figure("retries", "handshakes retried", "", _at("retries")),
        Figure("web_cpu_percent", "web CPU", " %", _at("web_cpu_percent")),
    ],
    "idle": [
        Figure(
            "kib_per_socket",
            "memory per idle socket",
            " KiB",
            _at("kib_per_socket"),
            "≤ 60 KiB",
            lambda v: v <= 60,
        ),
        Figure("connect_s", "time to connect them", " s", _at("connect_s")),
        Figure("probe_p99_ms", "probe event to the last socket", " ms", _at("probe_p99_ms")),
    ],
    "soak": [
        Figure("missed", "events missed by resuming sockets", "", _at("missed"), "0", lambda v: v == 0),
        Figure("p99_ms", "p99 (reference socket)", " ms", _at("p99_ms")),
        Figure("resumed_p99_ms", "p99 including replays", " ms", _at("resumed_p99_ms")),
        Figure("create_p99_ms", "order creation p99", " ms", _at("create_p99_ms")),
    ],
}


def _soak_at_size(result: dict) -> bool:
    settings = result.get("settings", {})
    return (
        settings.get("rate", 0) >= 3
        and settings.get("duration_s", 0) >= 90
        and settings.get("workers", 0) >= 2
        and result.get("resuming_sockets", 0) >= 20
    )


def _fanout_at_size(sockets: int, webs: int) -> Callable[[dict], bool]:
    def at_size(result: dict) -> bool:
        run = result.get("coalesced", {})
        return (
            run.get("connected", 0) >= sockets
            and run.get("web_processes", 1) >= webs
            and run.get("changes_per_s", 0) >= 0.97 * 300
            and run.get("duration_s", 0) >= 59
        )

    return at_size


AT_SIZE: dict[str, Callable[[dict], bool]] = {
    "rest_create": lambda r: r.get("clients", 0) >= 16 and r.get("duration_s", 0) >= 19,
    "poll_tick": lambda r: True,  # the figure exists only when 5,000 legs ran
    "status_changes": lambda r: r.get("settings", {}).get("orders", 0) >= 500,
    "fanout": _fanout_at_size(600, 1),
    "fanout_scale": _fanout_at_size(1200, 2),
    "reconnect": lambda r: r.get("connected", 0) >= 1000 and r.get("duration_s", 0) >= 29,
    "idle": lambda r: r.get("connected", 0) >= 2000,
    "soak": _soak_at_size,
}


def figure_values(results: dict) -> dict[str, dict[str, Any]]:
    """Every step's figures by key: what bench/baseline.json keeps."""
    return {
        name: {figure.key: figure.get(result) for figure in FIGURES.get(name, [])}
        for name, result in results.items()
    }


def _judge(name: str, result: dict, figure: Figure, value: Any) -> bool | None:
    """met (True), missed (False), or None: no target, no figure, or not run at the published size. A run
    that failed (lost or reordered something, or errored) meets none of its targets."""
    if figure.met is None or value is None or not AT_SIZE.get(name, lambda r: False)(result):
        return None
    return bool(result.get("ok", True)) and figure.met(value)


def load_baseline() -> dict:
    try:
        return json.loads(BASELINE.read_text())
    except (OSError, ValueError):
        return {}


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each published target; met is None when the step did not run at the
    target's size (--quick)."""
    titles = {step.name: step.title for step in STEPS}
    rows: list[tuple[str, str, bool | None]] = []
    for name, result in results.items():
        for figure in FIGURES.get(name, []):
            if not figure.target:
                continue
            value = figure.get(result)
            verdict = _judge(name, result, figure, value)
            if verdict is None and value is not None and not AT_SIZE.get(name, lambda r: False)(result):
                measured = f"{_value(figure, value)} (not at the target's size)"
            else:
                measured = _value(figure, value)
            rows.append((f"{titles.get(name, name)}: {figure.label} {figure.target}", measured, verdict))
        if not result.get("ok", True):
            rows.append((f"{titles.get(name, name)}: nothing lost, no error", "FAILED", False))
    return rows


def _value(figure: Figure, value: Any) -> str:
    if figure.key == "completeness" and isinstance(value, int | float):
        return _pct(value)
    return _fmt(value, figure.unit)


def _figures_table(name: str, result: dict, baseline: dict) -> list[str]:
    """The step's figures: before (bench/baseline.json), after (this run), the target and the verdict."""
    figures = FIGURES.get(name)
    if not figures:
        return []
    before = baseline.get("figures", {}).get(name, {})
    rows = []
    for figure in figures:
        value = figure.get(result)
        verdict = _judge(name, result, figure, value)
        shown = (
            _verdict(verdict)
            if verdict is not None
            else ("not at size" if figure.target and value is not None else "")
        )
        rows.append(
            [
                figure.label,
                _value(figure, before.get(figure.key)),
                _value(figure, value),
                figure.target or "",
                shown,
            ]
        )
    source = baseline.get("source", "no baseline")
    return ["", *_table(["Figure", f"Before ({source})", "After", "Target", ""], rows)]


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
    baseline = load_baseline()
    if baseline:
        lines += ["", f"Before: {baseline.get('source')} (bench/baseline.json)."]
    sections: dict[str, Callable[[dict | None], list[str]]] = {
        "rest_create": _rest_section,
        "poll_tick": _poll_section,
        "status_changes": _status_changes_section,
        "fanout": _fanout_section,
        "fanout_scale": _fanout_scale_section,
        "reconnect": _reconnect_section,
        "idle": _idle_section,
        "soak": _soak_section,
    }
    for step in STEPS:
        result = results.get(step.name)
        section = sections.get(step.name)
        # a step without a section of its own: its figures and profile under its title
        lines += section(result) if section else _section(step.title, result) + _limits(result or {})
        if result:
            lines += _figures_table(step.name, result, baseline)
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


def _status_changes_section(result: dict | None) -> list[str]:
    lines = _section("Status changes", result)
    if not result or "modes" not in result:
        return lines
    settings = result["settings"]
    lines += [
        f"{_fmt(settings['orders'])} two-kitchen orders per mode, each taken to delivered by "
        f"{settings['changes_per_order']} provider status changes, applied in poll batches of "
        f"{settings['batch_size']} through the real services (no provider calls). Per change: each in a "
        "transaction of its own, as the tick did before; batch: the tick's apply step "
        "(`services.legs_apply_statuses`). CPU per change.",
        "",
    ]
    headers = ["Mode", "Changes", "Seconds", "Changes/s", "Statements/change", "Poller CPU", "PostgreSQL CPU"]
    rows = []
    for name, label in (("per_change", "per change"), ("batch", "batch")):
        mode = result["modes"].get(name)
        if mode:
            cpu = mode.get("cpu_ms_per_change", {})
            rows.append(
                [label, _fmt(mode.get("changes")), _fmt(mode.get("seconds"), " s")]
                + [_fmt(mode.get("changes_per_s")), _fmt(mode.get("statements_per_change"))]
                + [_fmt(cpu.get("bench"), " ms"), _fmt(cpu.get("postgres"), " ms")]
            )
    lines += _table(headers, rows)
    for name, text in (result.get("profile") or {}).items():
        if text and text != "not sampled":
            lines += ["", f"Profile of the {name.replace('_', ' ')} mode (py-spy): {text}"]
    return lines


def _fanout_scale_section(result: dict | None) -> list[str]:
    """The scale-out proof: the fan-out table, then each web process's share."""
    lines = _fanout_section(result, "Fan-out over two web processes (scale-out)")
    run = (result or {}).get("coalesced")
    if not run or not run.get("per_web"):
        return lines
    lines += [
        "",
        f"{_fmt(run.get('web_processes'))} web processes on one Redis and one relay, the sockets dealt to "
        f"them in turn, held by {_fmt(run.get('client_processes'))} client processes. Each web process's "
        "share:",
        "",
    ]
    headers = ["Web process", "Sockets", "Delivered / due", "Gaps", "Duplicates", "Inversions"]
    headers += ["p50", "p99", "max", "Frames/s", "CPU"]
    rows = [
        [
            str(index),
            _fmt(web.get("sockets")),
            f"{_fmt(web.get('received'))} / {_fmt(web.get('expected'))}",
            _fmt(web.get("gaps")),
            _fmt(web.get("duplicates")),
            _fmt(web.get("inversions")),
            *[_fmt(web.get(key), " ms") for key in ("p50_ms", "p99_ms", "max_ms")],
            _fmt(web.get("frames_per_s")),
            _fmt(web.get("web_cpu_percent"), " %"),
        ]
        for index, web in enumerate(run["per_web"], start=1)
    ]
    lines += _table(headers, rows)
    for index, text in enumerate(run.get("web_profiles") or [], start=1):
        if text:
            lines += ["", f"Profile of web process {index} (py-spy): {text}"]
    return lines


def _reconnect_section(result: dict | None) -> list[str]:
    lines = _section("Reconnect storm", result)
    if not result or "caught_up_s" not in result:
        return lines
    health = result.get("health", {})
    lines += [
        f"{_fmt(result.get('connected'))} operator sockets on one web process, held by "
        f"{_fmt(result.get('client_processes'))} client processes, under {_fmt(result.get('changes_per_s'))} "
        f"changes/s; {_fmt(result.get('warmup_s'))} s in, every socket is closed at once and reconnects at "
        "once with `?after=<highest seq it received>` (a failed handshake retried with the dashboard's "
        "backoff). Caught up: holding every event up to the head at the drop "
        f"(seq {_fmt(result.get('head_at_drop'))}). Throughout, `/healthz?scope=process` and `/healthz` "
        "every 200 ms, 4 s timeout.",
        "",
    ]
    headers = ["Sockets", "Reconnected", "All caught up", "Median", "Handshake p99", "Retries"]
    headers += ["Replayed", "Missing", "Duplicates", "Inversions", "Resnapshots", "Web CPU"]
    row = [
        _fmt(result.get("connected")),
        _fmt(result.get("reconnected")),
        _fmt(result.get("caught_up_s"), " s"),
        _fmt(result.get("caught_up_p50_s"), " s"),
        _fmt(result.get("reconnect_p99_s"), " s"),
        _fmt(result.get("retries")),
        _fmt(result.get("replayed_events")),
        _fmt(result.get("missing")),
        _fmt(result.get("duplicates")),
        _fmt(result.get("inversions")),
        _fmt(result.get("resnapshots")),
        _fmt(result.get("web_cpu_percent"), " %"),
    ]
    lines += _table(headers, [row])
    health_headers = ["Health check", "Probes", "p50", "p99", "Worst", "Worst in the storm"]
    health_rows = [
        [f"`{path}`", _fmt(health.get(scope, {}).get("count"))]
        + [_fmt(health.get(scope, {}).get(key), " ms") for key in ("p50_ms", "p99_ms", "worst_ms")]
        + [_fmt(health.get(scope, {}).get("worst_in_storm_ms"), " ms")]
        for scope, path in (("process", "/healthz?scope=process"), ("full", "/healthz"))
    ]
    lines += ["", *_table(health_headers, health_rows)]
    if health.get("failures"):
        lines += ["", f"Failed health checks: {health['failures']}: " + "; ".join(health["failure_samples"])]
    return lines + _limits(result)


def _fanout_section(result: dict | None, title: str = "Fan-out") -> list[str]:
    lines = _section(title, result)
    if not result:
        return lines
    headers = ["Run", "Sockets", "Changes/s", "Delivered / due", "Lowest socket", "Frames/s", "Largest frame"]
    headers += ["Bytes/event", "p50", "p99", "max", "Gaps", "Inversions", "Web CPU"]
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
        row += [_fmt(run.get("avg_event_bytes"), " B")]
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


def write_baseline(published: Path) -> None:
    """bench/baseline.json: the figures of a published report, the before of the next ones."""
    report = json.loads(published.read_text())
    baseline = {
        "source": f"docs/benchmarks.json, {report['command']} of {report['generated_at']}",
        "machine": report.get("machine"),
        "figures": figure_values(report["results"]),
    }
    BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
    logger.info("wrote %s from %s", BASELINE, published)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that every benchmark runs")
    parser.add_argument("--only", nargs="+", choices=[step.name for step in STEPS])
    parser.add_argument(
        "--out", type=Path, default=common.REPO / "docs", help="where benchmarks.md and benchmarks.json go"
    )
    parser.add_argument(
        "--baseline-from",
        type=Path,
        metavar="BENCHMARKS_JSON",
        help="write bench/baseline.json (the before figures) from a published benchmarks.json, and stop",
    )
    args = parser.parse_args()
    common.configure_logging()
    if args.baseline_from:
        write_baseline(args.baseline_from)
        return
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
