"""The Docker deployment and the lock files, checked without a Docker engine. `make docker-smoke` runs the
real thing (images built, every service healthy, orders delivered through nginx), so what it proves is
not repeated here; docs/docker.md says what these tests cannot prove.

Behaviour only: each test runs a tool on a file (hadolint, shellcheck, `nginx -t`, the compose JSON
schema), runs the file itself (the entrypoint, docker/make_env.py, the nginx config, the Dockerfile's
collectstatic line), or compares files that must agree (the Procfile and compose, the settings and
.env.default, pyproject.toml and requirements/, the code and the image's lock). hadolint and shellcheck
come from PyPI (the `test` extra), nginx from Debian (tools/ensure-debian-tools).
"""

import ast
import hashlib
import http.server
import importlib.metadata
import importlib.util
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import free_port

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker" / "Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint"
NGINX_CONF = REPO / "docker" / "nginx" / "default.conf"
COMPOSE_FILE = REPO / "docker-compose.yml"
OFFLINE = REPO / "docker" / "offline"
VENV_BIN = Path(sys.executable).parent

# The Compose Specification's JSON schema, vendored unchanged from the PyPI package docker-compose 1.29.2
# (Apache-2.0), file compose/config/compose_spec.json: the newest copy any registry package ships.
# Compose v2 accepts a superset of it (it adds keys such as `depends_on.restart`, which we do not use).
COMPOSE_SCHEMA = REPO / "docker" / "compose-spec.json"
COMPOSE_SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"

# Variables that docker compose itself reads from .env (its "pre-defined environment variables").
COMPOSE_CLI_VARIABLES = {"COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"}
ENV_NAME = r"([A-Z][A-Z0-9_]*)"


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_env = load_module(REPO / "docker" / "make_env.py")
lock = load_module(REPO / "tools" / "lock.py")


def tool(name: str) -> str:
    """A test tool: from the virtualenv (PyPI packages) or the PATH (Debian packages)."""
    path = (
        VENV_BIN / name
        if (VENV_BIN / name).exists()
        else shutil.which(name) or shutil.which(f"/usr/sbin/{name}")
    )
    if not path:
        pytest.fail(f"{name} is not installed: `make install` (PyPI) or tools/ensure-debian-tools (Debian)")
    return str(path)


def run_tool(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def procfile_commands() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    pairs = [line.split(":", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): command.strip() for name, command in pairs}


def env_default_text() -> str:
    return (REPO / ".env.default").read_text()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def docker_env(tmp_path: Path, public_url: str | None = None) -> dict[str, str]:
    """The .env `make up` would create, parsed."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    output = tmp_path / "docker.env"
    args = ["--output", str(output)] + (["--public-url", public_url] if public_url else [])
    assert make_env.main(args) == 0
    return make_env.parse_env(output.read_text())


# --- lock files: requirements/ (tools/lock.py, `make lock`) ----------------------------------------


def pins(name: str) -> dict[str, str]:
    """Package -> pinned version of a lock file, for the lines whose markers hold on this interpreter."""
    found = {}
    for line in (REPO / name).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = Requirement(line.rstrip(" \\"))
            if requirement.marker is None or requirement.marker.evaluate():
                found[canonicalize_name(requirement.name)] = str(requirement.specifier).removeprefix("==")
    return found


def test_lock_files_are_resolved_from_the_current_pyproject():
    result = subprocess.run([sys.executable, REPO / "tools" / "lock.py", "--check"], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_lock_check_notices_a_changed_dependency_list(tmp_path):
    (tmp_path / "requirements").mkdir()
    for name in ("pyproject.toml", *lock.LOCKS):
        shutil.copy(REPO / name, tmp_path / name)
    assert lock.stale(tmp_path) == []
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('    "pytest>=8,', '    "pytest-timeout>=2,<3",\n    "pytest>=8,', 1))
    assert lock.stale(tmp_path) == ["requirements/dev.txt was not regenerated after pyproject.toml changed"]
    pyproject.write_text(text.replace('"django>=5.2,<5.3"', '"django>=5.2,<5.4"', 1))
    assert len(lock.stale(tmp_path)) == 2, "a runtime dependency is in both lock files"
    pyproject.write_text(text.replace("dependencies = [\n", "dependencies = [\n    # a comment\n", 1))
    assert lock.stale(tmp_path) == []


def test_lock_files_pin_what_pyproject_asks_for():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    dev, runtime = pins("requirements/dev.txt"), pins("requirements/runtime.txt")
    for name, requirements in (
        ("requirements/runtime.txt", project["dependencies"]),
        ("requirements/dev.txt", project["dependencies"] + optional["embedded"] + optional["test"]),
    ):
        locked = pins(name)
        for requirement in map(Requirement, requirements):
            version = locked.get(canonicalize_name(requirement.name))
            assert version is not None, f"{name} lacks {requirement.name}"
            assert requirement.specifier.contains(version, prereleases=True), f"{name}: {requirement}"
    # The image runs the versions the tests ran on, and none of the laptop-only packages.
    assert {package: dev.get(package) for package in runtime} == runtime
    embedded = {canonicalize_name(Requirement(line).name) for line in optional["embedded"]}
    assert not embedded & set(runtime), "pgserver and co. never go into the image"


# Files the image carries that never run there: the laptop's engine runner and the simulators' test harness.
NOT_RUN_IN_CONTAINERS = {"backend/core/embedded.py", "simulators/testing.py"}


def test_code_the_containers_run_imports_only_packages_of_the_runtime_lock():
    """Every third-party import of backend/ and simulators/ outside tests (lazy imports included) comes from
    a package pinned in requirements/runtime.txt, which is all the image installs."""
    sources = [
        path
        for path in [
            *REPO.glob("backend/**/*.py"),
            *REPO.glob("simulators/**/*.py"),
            REPO / "docker" / "healthcheck.py",
        ]
        if "tests" not in path.parts
        and path.name != "conftest.py"
        and str(path.relative_to(REPO)) not in NOT_RUN_IN_CONTAINERS
    ]
    first_party = {path.stem for path in (REPO / "backend").iterdir()} | {"simulators"}
    providers = importlib.metadata.packages_distributions()
    runtime = set(pins("requirements/runtime.txt"))
    missing = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in first_party:
                    continue
                packages = {canonicalize_name(name) for name in providers.get(top, [])}
                if not packages & runtime:
                    missing.append(
                        f"{path.relative_to(REPO)}: {module} ({', '.join(packages) or 'not installed'})"
                    )
    assert not missing, "imported, but not in requirements/runtime.txt:\n" + "\n".join(missing)


# --- Dockerfile, shell scripts, offline image kit ----------------------------------------------------


def test_dockerfiles_pass_hadolint():
    dockerfiles = [DOCKERFILE, *sorted(OFFLINE.glob("*/Dockerfile"))]
    run_tool(tool("hadolint"), "--no-color", "--config", str(REPO / ".hadolint.yaml"), *map(str, dockerfiles))


def test_entrypoint_passes_shellcheck_as_posix_sh():
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    run_tool(tool("shellcheck"), "--shell=sh", str(ENTRYPOINT))


def test_scripts_are_executable_and_pass_shellcheck():
    """Those run from the checkout must be executable; the stand-ins' entrypoints get COPY --chmod."""
    run_from_checkout = [ENTRYPOINT, OFFLINE / "build-images", REPO / "tools" / "ensure-debian-tools"]
    for script in run_from_checkout:
        assert os.access(script, os.X_OK), f"{script.relative_to(REPO)} is not executable"
    run_tool(tool("shellcheck"), *map(str, [*run_from_checkout[1:], *OFFLINE.glob("*/entrypoint")]))


def test_collectstatic_line_of_the_dockerfile_runs_without_engines(tmp_path):
    """Runs the Dockerfile's collectstatic line as written, only STATIC_ROOT moved: the settings import from
    its placeholders alone and nothing connects to PostgreSQL or Redis. The placeholders exist for that one
    command: no ENV or ARG of the image carries a secret or an engine URL."""
    instructions = dockerfile_instructions()
    for keyword, arguments in instructions:
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"\b(SECRET_KEY|DATABASE_URL|REDIS_URL)\b", arguments), arguments
    [line] = [arguments for _, arguments in instructions if "collectstatic" in arguments]
    words = shlex.split(line)
    assignments = dict(word.split("=", 1) for word in words if re.match(rf"{ENV_NAME}=", word))
    command = [word for word in words if not re.match(rf"{ENV_NAME}=", word)]
    assert command[:2] == ["python", "backend/manage.py"]
    assignments["STATIC_ROOT"] = str(tmp_path / "static")
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"} | assignments
    result = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "static" / "admin" / "css" / "base.css").exists()


def dockerignore_excludes(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, `!` re-includes."""
    excluded = False
    for pattern in (REPO / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = regex.replace(r"\[", "[").replace(r"\]", "]")
        if re.fullmatch(f"{regex}(/.*)?", path):  # a directory's pattern excludes everything below it
            excluded = not negated
    return excluded


def test_build_context_leaves_secrets_and_local_state_out_and_takes_what_the_build_reads():
    for path in (".env", ".env.local", ".venv/bin/python", ".run/postgres/PG_VERSION", ".git/HEAD"):
        assert dockerignore_excludes(path), f"{path} would be sent to docker build"
    sources = {"docker/offline/wheels/django-5.2-py3-none-any.whl"}  # bind-mounted, empty in a checkout
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in arguments:
            sources.update(word for word in arguments.split()[:-1] if not word.startswith("--"))
    for source in sources:
        assert not dockerignore_excludes(source.rstrip("/")), f"{source}: excluded by .dockerignore"
    assert (OFFLINE / "wheels").is_dir(), "the wheelhouse directory must exist in every checkout"


def test_offline_kit_has_a_recipe_for_every_public_image():
    """What the Dockerfile's FROM lines and compose's `image:` keys name, less our own images."""
    result = subprocess.run([str(OFFLINE / "build-images"), "--list"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    recipes = dict(line.split() for line in result.stdout.splitlines())
    named = {arguments.split()[0] for keyword, arguments in dockerfile_instructions() if keyword == "FROM"}
    named |= {service["image"] for service in compose()["services"].values() if "image" in service}
    assert set(recipes) == {image for image in named if not image.startswith("liveops")}
    # Grafana is packaged by no Debian release: the `monitoring` profile's images are pulled, never stood in
    # for, and no offline run (docker/smoke.py) starts that profile.
    monitoring = {
        service["image"]
        for service in compose()["services"].values()
        if "monitoring" in service.get("profiles", [])
    }
    for image, recipe in recipes.items():
        if recipe == "-":
            assert image in monitoring, f"{image}: only the monitoring profile's images go without a stand-in"
        else:
            assert (REPO / recipe / "Dockerfile").exists(), recipe


# --- docker-compose.yml and the Procfile -------------------------------------------------------------


def test_compose_file_matches_the_compose_specification_schema():
    assert hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest() == COMPOSE_SCHEMA_SHA256, (
        "docker/compose-spec.json differs from the vendored copy: see the comment at COMPOSE_SCHEMA"
    )
    # Its "$schema" is draft 2019-09, spelt in a way jsonschema does not look up: name the draft.
    validator = jsonschema.Draft201909Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(compose()), key=lambda error: list(error.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors)


def test_compose_services_start_in_order():
    """depends_on waits for what a service needs: a one-shot's success, a health check's pass, else a start;
    never on a service that a profile may leave out."""
    services = compose()["services"]
    app_services = {name for name, service in services.items() if service.get("image") == "liveops:latest"}
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions, not a bare list"
        for target, rule in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            target_service = services[target]
            declared = target_service.get("healthcheck")
            healthy = not declared.get("disable", False) if declared is not None else target in app_services
            if target_service.get("restart") == "no":
                expected = "service_completed_successfully"
            else:
                expected = "service_healthy" if healthy else "service_started"
            assert rule["condition"] == expected, f"{name} -> {target}: {rule['condition']}, want {expected}"
            assert "profiles" not in target_service, (
                f"{name} depends on {target}, which a profile may leave out"
            )
    for name in ("web", "worker", "relay", "beat"):  # migrations run once, before anything uses the schema
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_publishes_only_the_site_and_the_local_mailpit_and_grafana_uis():
    services = compose()["services"]
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert set(published) == {"nginx", "mailpit", "grafana"}, (
        "PostgreSQL, Redis, Prometheus and the app stay inside the network"
    )
    for name in ("mailpit", "grafana"):
        assert all(port.startswith("127.0.0.1:") for port in published[name]), name
    for name, service in services.items():
        if service.get("image") == "liveops:latest":
            assert "ALL" in service["cap_drop"], name


def test_compose_commands_are_the_procfile_lines():
    """For every Procfile process P, compose service P has `command:` as a one-element list whose string, with
    compose's `$$` escape read as `$`, is P's Procfile command. docker/entrypoint runs a one-argument command
    with /bin/sh like honcho does (test_entrypoint_runs_a_procfile_line_like_sh_...), so variables expand
    from the same environment in both."""
    services = compose()["services"]
    for name, command in procfile_commands().items():
        assert name in services, f"Procfile process {name} has no compose service"
        compose_command = services[name]["command"]
        assert isinstance(compose_command, list) and len(compose_command) == 1, name
        assert compose_command[0].replace("$$", "$") == command, name
        # `exec env LINE` in the entrypoint keeps shell semantics only for a simple command.
        assert not re.search(r"[;&|<>`()]", command), f"{name}: keep Procfile lines simple commands"


# --- docker/entrypoint ---------------------------------------------------------------------------------


def run_entrypoint(args: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    base = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(ENTRYPOINT), *args], env=base | env, capture_output=True, text=True, timeout=timeout
    )


def test_entrypoint_runs_a_procfile_line_like_sh_and_becomes_the_process():
    code = "import os; print(os.getpid(), os.environ['SIM_API_KEY'])"
    line = f'SIM_API_KEY=$KEY_SOURCE python -c "{code}" ${{PORT:-8101}}'
    env = {"WAIT_FOR": "", "KEY_SOURCE": "s3cret"}
    base = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    expected = subprocess.run(["sh", "-c", line], env=base | env, capture_output=True, text=True)
    process = subprocess.Popen(
        [str(ENTRYPOINT), line], env=base | env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    pid, key = stdout.split()
    assert int(pid) == process.pid, "the command must replace the entrypoint (exec), to get docker's signals"
    assert key == "s3cret" == expected.stdout.split()[1]
    assert "s3cret" not in stderr, "what the entrypoint logs must not expand secrets"


def test_entrypoint_passes_several_arguments_through_untouched():
    result = run_entrypoint(
        [sys.executable, "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME"], {"WAIT_FOR": ""}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['a b', '$HOME']"


def test_entrypoint_gives_up_on_an_unreachable_engine_without_logging_its_password():
    started = time.monotonic()
    result = run_entrypoint(
        ["echo", "ran"],
        {
            "WAIT_FOR": "postgres",
            "WAIT_TIMEOUT_SECONDS": "2",
            "DATABASE_URL": f"postgres://u:pw-9f3@127.0.0.1:{free_port()}/x",
        },
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert time.monotonic() - started < 20
    assert "pw-9f3" not in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WAIT_FOR": "mysql"}, "mysql"),
        ({"WAIT_FOR": "redis", "REDIS_URL": ""}, "REDIS_URL"),
        (
            {"WAIT_FOR": "redis", "REDIS_URL": "redis://x", "WAIT_TIMEOUT_SECONDS": "soon"},
            "WAIT_TIMEOUT_SECONDS",
        ),
    ],
)
def test_entrypoint_refuses_bad_wait_settings(env, named):
    result = run_entrypoint(["echo", "ran"], env, timeout=10)
    assert result.returncode != 0 and result.stdout == ""
    assert named in result.stderr, "the error names the setting to fix"


# --- environment variables -----------------------------------------------------------------------------


def compose_variables() -> set[str]:
    """Variables compose interpolates from .env (`$$` is an escape, not a variable)."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            names.update(re.findall(rf"(?<!\$)\$\{{?{ENV_NAME}", node.replace("$$", "")))

    walk(compose())
    return names


def variables_read() -> dict[str, set[str]]:
    """Who reads which variable, found by regexes over the files (not a list kept by hand)."""
    settings = (REPO / "backend" / "core" / "settings.py").read_text()
    found = {
        "settings": set(
            re.findall(rf'\benv\.\w+\(\s*"{ENV_NAME}"', settings)
            + re.findall(rf'\b_url\(\s*"{ENV_NAME}"', settings)
            + re.findall(rf'\b_is_blank\(\s*"{ENV_NAME}"', settings)
        ),
        "Procfile": set(),
        "simulators": set(),
        "docker": set(),
        "compose": compose_variables(),
    }
    provided_by_procfile = set()
    for command in procfile_commands().values():
        found["Procfile"].update(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", command))
        for word in command.split():
            if not re.match(rf"{ENV_NAME}=", word):
                break
            provided_by_procfile.add(word.split("=", 1)[0])
    python_reads = [
        rf'environ\.get\(\s*"{ENV_NAME}"',
        rf'environ\[\s*"{ENV_NAME}"\s*\]',
        rf'getenv\(\s*"{ENV_NAME}"',
        rf'env_int\(\s*\w+,\s*"{ENV_NAME}"',
        rf'Setting\(\s*"[^"]*",\s*"{ENV_NAME}"',
    ]
    for path in (REPO / "simulators").glob("*.py"):
        for pattern in python_reads:
            found["simulators"].update(re.findall(pattern, path.read_text()))
    # Comment lines dropped: they mention $VARS in prose.
    entrypoint = "\n".join(
        line for line in ENTRYPOINT.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    script_variables = set(re.findall(rf"(?m)^\s*{ENV_NAME}=", entrypoint))
    found["docker"].update(set(re.findall(rf"\$\{{?{ENV_NAME}", entrypoint)) - script_variables)
    for text in (entrypoint, (REPO / "docker" / "healthcheck.py").read_text()):
        for pattern in python_reads:
            found["docker"].update(re.findall(pattern, text))
    found["provided by the Procfile"] = provided_by_procfile
    return found


def env_default_names() -> set[str]:
    return set(re.findall(rf"(?m)^{ENV_NAME}=", env_default_text()))


def test_every_variable_the_code_reads_is_in_env_default():
    documented = env_default_names()
    read = variables_read()
    provided = read.pop("provided by the Procfile")
    missing = {source: sorted(names - documented) for source, names in read.items() if names - documented}
    # The simulators' own knobs (fault injection, seed, log level) are documented with their defaults in
    # simulators/README.md, and SIM_API_KEY is set by the Procfile: neither belongs to a deployment's .env.
    simulator_docs = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (REPO / "simulators" / "README.md").read_text()))
    if "simulators" in missing:
        missing["simulators"] = [
            name for name in missing["simulators"] if name not in simulator_docs | provided
        ]
        if not missing["simulators"]:
            del missing["simulators"]
    assert not missing, f"read but not in .env.default: {missing}"


class RecordingEnviron(dict):
    """An empty environment that remembers every name asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        self.asked.add(name)
        return super().__contains__(name)

    def get(self, name: str, default: object = None) -> object:
        self.asked.add(name)
        return super().get(name, default)


def variables_read_at_run_time() -> set[str]:
    """What the settings and the simulators read when they start, names built at run time included
    (`<NAME>_URL` for each of PROVIDERS): environs records every variable the settings read (Env.dump()),
    and each simulator is started on an environment that records what it is asked."""
    code = "import json, core.settings; print(json.dumps(sorted(core.settings.env.dump())))"
    placeholders = {"DATABASE_URL": "postgres://test@localhost/test", "REDIS_URL": "redis://localhost/0"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": f"{REPO / 'backend'}{os.pathsep}{REPO}"}
        | placeholders,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    read = set(json.loads(result.stdout))
    for path in (REPO / "simulators").glob("*.py"):
        importlib.import_module(f"simulators.{path.stem}")
    from simulators.base import ProviderSimulator

    for simulator in ProviderSimulator.__subclasses__():
        environ = RecordingEnviron()
        simulator(environ)
        read |= environ.asked
    return read


def test_every_variable_in_env_default_is_read_by_something():
    read = set().union(*variables_read().values()) | variables_read_at_run_time() | COMPOSE_CLI_VARIABLES
    unread = sorted(env_default_names() - read)
    assert not unread, f"in .env.default but read by nothing: {unread}"


# --- make up: docker/make_env.py -------------------------------------------------------------------------


def test_make_env_writes_fresh_secrets_readable_by_the_owner_only_and_never_overwrites(tmp_path):
    first, second = docker_env(tmp_path / "a"), docker_env(tmp_path / "b")
    for name in (*make_env.REQUIRED_SECRETS, "POSTGRES_PASSWORD", "DEMO_PASSWORD"):
        assert first[name] != second[name], name
    assert all("$" not in value for value in first.values()), "compose would interpolate a $ in env_file"
    assert (tmp_path / "a" / "docker.env").stat().st_mode & 0o077 == 0
    output = tmp_path / ".env"
    output.write_text("SECRET_KEY=mine\n")
    assert make_env.main(["--output", str(output)]) == 1
    assert output.read_text() == "SECRET_KEY=mine\n"


def test_make_env_trusts_nginx_only_and_turns_https_on_for_an_https_site(tmp_path):
    env = docker_env(tmp_path, public_url="https://ops.example.com")
    assert (env["ALLOWED_HOSTS"], env["CSRF_TRUSTED_ORIGINS"]) == (
        "ops.example.com,web",
        "https://ops.example.com",
    )
    assert (env["SECURE_SSL_REDIRECT"], env["SECURE_HSTS_SECONDS"]) == ("true", "31536000")
    local = docker_env(tmp_path / "local")
    assert (local["SECURE_SSL_REDIRECT"], local["SECURE_HSTS_SECONDS"]) == ("false", "0")
    # Only nginx's forwarding headers are believed, and no other container can take its fixed address.
    config = compose()["networks"]["default"]["ipam"]["config"][0]
    nginx_address = compose()["services"]["nginx"]["networks"]["default"]["ipv4_address"]
    assert env["TRUSTED_PROXIES"] == nginx_address
    assert ipaddress.ip_address(nginx_address) in ipaddress.ip_network(config["subnet"])
    assert ipaddress.ip_address(nginx_address) not in ipaddress.ip_network(config["ip_range"])


def test_make_env_check_refuses_unsafe_values(tmp_path, capsys):
    docker_env(tmp_path)
    path = tmp_path / "docker.env"
    text = path.read_text()
    assert make_env.main(["--check", str(path)]) == 0
    env, defaults = make_env.parse_env(text), make_env.parse_env(env_default_text())
    # The shipped secrets, and an HTTPS redirect (empty: on with DEBUG=false) on a plain-HTTP site.
    unsafe = text.replace("SECURE_SSL_REDIRECT=false", "SECURE_SSL_REDIRECT=")
    for name in ("SECRET_KEY", "MELANGE_API_KEY", "BUENO_WEBHOOK_SECRET", "DEMO_PASSWORD"):
        unsafe = unsafe.replace(f"{name}={env[name]}", f"{name}={defaults[name]}")
    path.write_text(unsafe)
    capsys.readouterr()
    assert make_env.main(["--check", str(path)]) == 1
    errors = capsys.readouterr().err
    for name in (
        "SECRET_KEY",
        "MELANGE_API_KEY",
        "BUENO_WEBHOOK_SECRET",
        "DEMO_PASSWORD",
        "SECURE_SSL_REDIRECT",
    ):
        assert name in errors
    # With DEBUG=true the development key is accepted.
    path.write_text(
        text.replace("DEBUG=false", "DEBUG=true").replace(env["SECRET_KEY"], defaults["SECRET_KEY"])
    )
    assert make_env.main(["--check", str(path)]) == 0
    # .env.default copied as it is, DEBUG turned off: refused, naming what to change.
    path.write_text(env_default_text().replace("DEBUG=true", "DEBUG=false"))
    capsys.readouterr()
    assert make_env.main(["--check", str(path)]) == 1
    errors = capsys.readouterr().err
    for name in ("SECRET_KEY", "WEB_HOST", "SIM_HOST", "DATABASE_URL"):
        assert name in errors


def test_make_env_rejects_docker_notes_it_cannot_read():
    with pytest.raises(make_env.EnvDefaultError, match="NEW_SETTING"):
        make_env.docker_notes("# A new setting. Docker: whatever fits your site\nNEW_SETTING=1\n")


# --- nginx: docker/nginx/default.conf ------------------------------------------------------------------


def render_nginx(tmp_path: Path, replacements: dict[str, str], foreground: bool = False) -> Path:
    """docker/nginx/default.conf inside a main config like the nginx image's /etc/nginx/nginx.conf."""
    config = NGINX_CONF.read_text()
    for old, new in replacements.items():
        assert config.count(old) == 1, f"{old!r} should occur once in {NGINX_CONF.name}"
        config = config.replace(old, new)
    # The image's /var/log/nginx/ (its files lead to the container's stdout and stderr) moves to logs/.
    config = config.replace("/var/log/nginx/", f"{tmp_path}/logs/")
    (tmp_path / "default.conf").write_text(config)
    for directory in ("logs", "temp"):
        (tmp_path / directory).mkdir(exist_ok=True)
    (tmp_path / "mime.types").write_text(
        "types { text/html html; text/css css; application/javascript js; application/json json; }\n"
    )
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"""
        worker_processes 1;
        error_log stderr;
        pid {tmp_path}/nginx.pid;
        {"daemon off; master_process off;" if foreground else ""}
        events {{ worker_connections 64; }}
        http {{
            include {tmp_path}/mime.types;
            default_type application/octet-stream;
            access_log off;
            client_body_temp_path {tmp_path}/temp/body;
            proxy_temp_path {tmp_path}/temp/proxy;
            fastcgi_temp_path {tmp_path}/temp/fastcgi;
            uwsgi_temp_path {tmp_path}/temp/uwsgi;
            scgi_temp_path {tmp_path}/temp/scgi;
            include {tmp_path}/default.conf;
        }}
        """
    )
    return main


def test_nginx_config_passes_nginx_t(tmp_path):
    """`nginx -t` resolves upstream names, and those exist only in the compose network: each upstream host,
    which must be a compose service, is mapped to 127.0.0.1 (as Docker's DNS does inside the network)."""
    hosts = set(re.findall(r"^\s*server\s+([A-Za-z][\w.-]*):\d+", NGINX_CONF.read_text(), re.M))
    assert hosts and hosts <= set(compose()["services"])
    main = render_nginx(tmp_path, {f"server {host}:": "server 127.0.0.1:" for host in hosts})
    run_tool(tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(main), "-e", "stderr")


class Upstream(http.server.ThreadingHTTPServer):
    """Stands in for daphne: records each request's path and headers, answers 200."""

    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        super().__init__(("127.0.0.1", 0), UpstreamHandler)


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append((self.path, {key.lower(): value for key, value in self.headers.items()}))
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def nginx_site(tmp_path) -> Iterator[tuple[int, Upstream]]:
    """The real config served by nginx on a free port, `web` mapped to a fake daphne, /static/ to a temporary
    folder; nothing else changed."""
    upstream = Upstream()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "site.css").write_text("body { color: black; }\n")
    port = free_port()
    main = render_nginx(
        tmp_path,
        {
            "server web:8000": f"server 127.0.0.1:{upstream.server_address[1]}",
            "listen 80 default_server": f"listen 127.0.0.1:{port} default_server",
            "alias /usr/share/nginx/static/": f"alias {tmp_path}/static/",
        },
        foreground=True,
    )
    process = subprocess.Popen(
        [tool("nginx"), "-p", str(tmp_path), "-c", str(main), "-e", "stderr"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        yield port, upstream
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        upstream.shutdown()


def http_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_nginx_proxies_with_trusted_forwarding_headers(nginx_site):
    port, upstream = nginx_site
    answer = http_request(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: ops.example.com\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"\r\nServer: nginx\r\n" in answer  # no version
    path, headers = upstream.requests[-1]
    assert path == "/healthz"
    assert headers["host"] == "ops.example.com"
    assert headers["x-forwarded-for"] == "127.0.0.1", "a client-sent X-Forwarded-For must not reach daphne"
    assert headers["x-forwarded-proto"] == "http"
    assert "connection" not in headers  # keep-alive to the upstream


def test_nginx_serves_static_files_itself_with_security_headers(nginx_site):
    port, upstream = nginx_site
    answer = http_request(port, b"GET /static/site.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = answer.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 200")
    assert "X-Content-Type-Options: nosniff" in head and "X-Frame-Options: DENY" in head
    assert "Cache-Control: max-age=3600" in head
    assert answer.endswith(b"body { color: black; }\n")
    assert upstream.requests == []


def test_nginx_refuses_oversized_bodies(nginx_site):
    port, upstream = nginx_site
    size = 2 * 1024 * 1024
    head = f"POST /api/orders/ HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(head.encode())  # nginx answers from the headers, before any body byte
        assert connection.recv(1024).startswith(b"HTTP/1.1 413")
    assert upstream.requests == []


def test_nginx_access_log_leaves_the_query_string_out(nginx_site, tmp_path):
    port, upstream = nginx_site
    answer = http_request(
        port, b"GET /healthz?ticket=s3cret-ticket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200")
    assert upstream.requests[-1][0] == "/healthz?ticket=s3cret-ticket"  # daphne still gets it
    log = (tmp_path / "logs" / "access.log").read_text()
    assert "/healthz" in log and "s3cret" not in log


def test_nginx_limits_sign_in_attempts_per_address(nginx_site):
    port, upstream = nginx_site
    request = b"POST /api/auth/token/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    statuses = [http_request(port, request).split(b" ")[1] for _ in range(10)]
    # The first, then a burst of 5 at once; the rest wait 6 s each (10r/m), so they get 429 here.
    assert statuses == [b"200"] * 6 + [b"429"] * 4
    assert len(upstream.requests) == 6
    answer = http_request(port, b"GET /api/orders/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), "the rest of the API has a zone of its own"
