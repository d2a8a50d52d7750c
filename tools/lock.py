"""The lock files: every package installed anywhere, pinned with its hashes, from pyproject.toml's lists.

    python tools/lock.py            regenerate them, keeping each pin that still fits (`make lock`)
    python tools/lock.py --upgrade  regenerate them with the newest versions the ranges allow
    python tools/lock.py --check    exit 1 when pyproject.toml's lists changed since they were written

requirements/dev.txt    [project] dependencies + the `embedded` and `test` extras: `make install`
requirements/runtime.txt  [project] dependencies only: the Docker image (docker/Dockerfile)

uv resolves them (`uv pip compile --universal`) for every Python 3.11.x and every platform at once, so
the files hold environment markers where a dependency differs (redis-py needs async-timeout below Python
3.11.3, and Debian's is 3.11.2) and the hashes of each release's files for every platform. pip reads
them: `pip install --require-hashes -r requirements/dev.txt`. runtime.txt is resolved within dev.txt's
pins, so the image runs the very versions the tests ran on.

Each file's header records a fingerprint of the lists it was resolved from; --check compares it with
pyproject.toml (offline, standard library only; tests/test_docker.py runs the same comparison).
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"
# lock file (relative to the repository) -> the extras resolved into it besides [project] dependencies
LOCKS = {
    "requirements/dev.txt": ["embedded", "test"],
    "requirements/runtime.txt": [],
}
FINGERPRINT = "# pyproject.toml fingerprint: "


def fingerprint(pyproject: Path, extras: list[str]) -> str:
    """sha256 of what a lock file is resolved from: requires-python, dependencies and `extras`."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "extras": {extra: optional[extra] for extra in extras},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_fingerprint(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(FINGERPRINT):
            return line.removeprefix(FINGERPRINT).strip()
        if not line.startswith("#"):
            return None
    return None


def stale(root: Path = REPO) -> list[str]:
    """One line per lock file that is missing or older than pyproject.toml's lists."""
    problems = []
    for name, extras in LOCKS.items():
        lock = root / name
        if not lock.exists():
            problems.append(f"{name} is missing")
        elif recorded_fingerprint(lock) != fingerprint(root / "pyproject.toml", extras):
            problems.append(f"{name} was not regenerated after pyproject.toml changed")
    return problems


def compile_lock(name: str, extras: list[str], constraints: list[str], upgrade: bool) -> None:
    """Resolve one lock file; it is rewritten only when its content changes (`make install` follows it)."""
    lock = REPO / name
    draft = lock.with_name(f".{lock.name}.new")
    if lock.exists():
        draft.write_text(lock.read_text())  # uv keeps the pins of its output file that still fit
    command = [
        str(UV), "pip", "compile", "pyproject.toml", "--output-file", str(draft.relative_to(REPO)),
        "--universal", "--generate-hashes", "--custom-compile-command", "make lock", "--quiet",
        *(f"--extra={extra}" for extra in extras),
        *(f"--constraint={constraint}" for constraint in constraints),
        *(["--upgrade"] if upgrade else []),
    ]  # fmt: skip
    try:
        subprocess.run(command, cwd=REPO, check=True)
        lines = [line for line in draft.read_text().splitlines() if not line.startswith(FINGERPRINT)]
    finally:
        draft.unlink(missing_ok=True)
    header = 0
    while header < len(lines) and lines[header].startswith("#"):
        header += 1
    lines.insert(header, FINGERPRINT + fingerprint(REPO / "pyproject.toml", extras))
    text = "\n".join(lines) + "\n"
    if not lock.exists() or lock.read_text() != text:
        lock.write_text(text)
        sys.stdout.write(f"{name}: written\n")
    else:
        sys.stdout.write(f"{name}: unchanged\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the lock files are current")
    parser.add_argument("--upgrade", action="store_true", help="the newest versions the ranges allow")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            sys.stderr.write(f"{problem}: run `make lock`\n")
        return 1 if problems else 0
    if not UV.exists():
        sys.stderr.write(f"{UV} is missing: `make install` installs uv (the `test` extra)\n")
        return 1
    (REPO / "requirements").mkdir(exist_ok=True)
    # dev.txt first: runtime.txt is resolved within its pins (a subset of a valid whole is valid).
    dev, runtime = "requirements/dev.txt", "requirements/runtime.txt"
    compile_lock(dev, LOCKS[dev], constraints=[], upgrade=args.upgrade)
    compile_lock(runtime, LOCKS[runtime], constraints=[dev], upgrade=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
