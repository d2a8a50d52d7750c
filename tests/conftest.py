"""Helpers for whole-system tests that start real processes from a copy of the repository."""

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL", "CHANNEL_LAYER_URL")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def clean_copy(tmp_path_factory) -> Path:
    """The tracked and untracked-but-not-ignored files, as a fresh clone would have them.

    The virtualenv is copied too (with its timestamps, so `make` sees it as installed): a clean
    install is what CI itself does before running this suite.
    """
    target = tmp_path_factory.mktemp("clone") / "liveops"
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    subprocess.run(["cp", "-a", str(REPO / ".venv"), str(target / ".venv")], check=True)
    return target
