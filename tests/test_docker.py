"""The Docker deployment, checked without a Docker engine (docs/docker.md says what this cannot prove).

Tools: hadolint and shellcheck come from PyPI (the `test` extra); nginx, and docker-compose v1 for a
second opinion on the compose file, from Debian (.ci/run installs them). No test here needs the
database: the ones that reach PostgreSQL or Redis use the URLs in the environment and skip without them.
"""

import hashlib
import http.server
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
from urllib.parse import urlsplit, urlunsplit

import jsonschema
import pytest
import yaml

from .conftest import free_port

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker" / "Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint"
NGINX_CONF = REPO / "docker" / "nginx" / "default.conf"
COMPOSE_FILE = REPO / "docker-compose.yml"
VENV_BIN = Path(sys.executable).parent

# The Compose Specification's JSON schema, vendored unchanged from the PyPI package docker-compose 1.29.2
# (Apache-2.0), file compose/config/compose_spec.json: the newest copy any registry package ships.
# Compose v2 accepts a superset of it (it adds keys such as `depends_on.restart`, which we do not use).
COMPOSE_SCHEMA = REPO / "docker" / "compose-spec.json"
COMPOSE_SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"

# Services running our image (docker/Dockerfile, last stage) and those running someone else's.
APP_SERVICES = {"migrate", "web", "worker", "relay", "beat", "melange", "bueno", "uklon"}
SIMULATORS = {"melange", "bueno", "uklon"}
# Variables that docker compose itself reads from .env (its "pre-defined environment variables").
COMPOSE_CLI_VARIABLES = {"COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"}
ENV_NAME = r"([A-Z][A-Z0-9_]*)"


# --- helpers ---------------------------------------------------------------------------------------


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_env = load_module(REPO / "docker" / "make_env.py")
healthcheck = load_module(REPO / "docker" / "healthcheck.py")


def tool(name: str) -> str:
    """A test tool: from the virtualenv (PyPI packages) or the PATH (Debian packages)."""
    path = (
        VENV_BIN / name
        if (VENV_BIN / name).exists()
        else shutil.which(name) or shutil.which(f"/usr/sbin/{name}")
    )
    if not path:
        pytest.fail(
            f"{name} is not installed: `make install` (PyPI tools) or .ci/run (Debian tools) installs it"
        )
    return str(path)


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def procfile_commands() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    pairs = [line.split(":", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): command.strip() for name, command in pairs}


def env_default_text() -> str:
    return (REPO / ".env.default").read_text()


def env_default_names() -> set[str]:
    return set(re.findall(rf"(?m)^{ENV_NAME}=", env_default_text()))


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


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            current = arguments.split()[-1] if " as " in arguments.lower() else arguments
            stages[current] = [(keyword, arguments)]
        elif current is not None:
            stages[current].append((keyword, arguments))
    return stages


def docker_env(tmp_path: Path, public_url: str | None = None) -> dict[str, str]:
    """The .env `make up` would create, parsed."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    output = tmp_path / "docker.env"
    args = ["--output", str(output)] + (["--public-url", public_url] if public_url else [])
    assert make_env.main(args) == 0
    return make_env.parse_env(output.read_text())


def run_entrypoint(args: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    base = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(ENTRYPOINT), *args], env=base | env, capture_output=True, text=True, timeout=timeout
    )


# --- Dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_each_carry_a_reason():
    config = (REPO / ".hadolint.yaml").read_text()
    ignored = re.findall(r"(?m)^\s*-\s*(DL\d+|SC\d+)\s*$", config)
    for rule in ignored:
        assert re.search(rf"#\s*{rule}\b.+", config), f"{rule} is ignored without a reason comment"


def test_entrypoint_passes_shellcheck_as_posix_sh():
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint must be executable"
    result = subprocess.run(
        [tool("shellcheck"), "--shell=sh", str(ENTRYPOINT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_has_build_stages_and_a_slim_non_root_runtime_with_healthcheck():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert list(stages)[-1] == "runtime", "the app image must be the default (last) stage"
    runtime = stages["runtime"]
    assert runtime[0][1].startswith("python:3.11-slim ")
    keywords = [keyword for keyword, _ in runtime]

    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "HEALTHCHECK" in keywords
    assert dict(runtime)["ENTRYPOINT"] == '["/app/docker/entrypoint"]'
    assert "PYTHONPATH=/app/backend:/app" in dict(runtime)["ENV"]

    # Only the build stage has compilers; the runtime installs finished wheels and copies static files.
    runtime_text = " ".join(arguments for _, arguments in runtime)
    for build_tool in ("apt-get", "build-essential", "gcc", "g++", "make ", "-dev ", "pip wheel"):
        assert build_tool not in runtime_text, f"{build_tool!r} in the runtime stage"
    assert "build-essential" in " ".join(arguments for _, arguments in stages["build"])
    from_build = [arguments for keyword, arguments in runtime if "from=build" in arguments]
    assert [arguments for arguments in from_build if arguments.startswith("--from=build ")] == [
        "--from=build /app/static static/"
    ]
    assert [arguments.split()[0] for arguments in from_build if arguments.startswith("--mount=")] == [
        "--mount=type=bind,from=build,source=/wheels,target=/wheels"
    ]


def test_dockerfile_keeps_build_only_settings_on_the_collectstatic_line():
    instructions = dockerfile_instructions()
    for keyword, arguments in instructions:
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"\b(SECRET_KEY|DATABASE_URL|REDIS_URL)\b", arguments), arguments
    collect = [arguments for keyword, arguments in instructions if "collectstatic" in arguments]
    assert len(collect) == 1 and collect[0].startswith("DATABASE_URL=")


def test_collectstatic_line_of_the_dockerfile_runs_without_engines(tmp_path):
    """Runs the Dockerfile's collectstatic line as written, only STATIC_ROOT moved: proves that the
    settings import from the placeholders alone and that nothing connects to PostgreSQL or Redis."""
    line = next(arguments for keyword, arguments in dockerfile_instructions() if "collectstatic" in arguments)
    words = shlex.split(line)
    assignments = dict(word.split("=", 1) for word in words if re.match(rf"{ENV_NAME}=", word))
    command = [word for word in words if not re.match(rf"{ENV_NAME}=", word)]
    assert command[:2] == ["python", "backend/manage.py"]
    assignments["STATIC_ROOT"] = str(tmp_path / "static")
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"} | assignments
    result = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "static" / "admin" / "css" / "base.css").exists()


def test_image_requirements_are_pyproject_dependencies_less_the_local_only_ones():
    requirements = load_module(REPO / "docker" / "requirements.py")
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "requirements.py"), str(REPO / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
    )
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {requirements.requirement_name(dependency) for dependency in dependencies}
    assert requirements.LOCAL_ONLY <= names, "a LOCAL_ONLY package left pyproject.toml: drop it there"
    assert result.stdout.splitlines() == [
        dependency
        for dependency in dependencies
        if requirements.requirement_name(dependency) not in requirements.LOCAL_ONLY
    ]
    # Nothing the containers run may import them: only the laptop runner does.
    pattern = re.compile(rf"^\s*(import|from)\s+({'|'.join(requirements.LOCAL_ONLY)})\b", re.M)
    for path in [*REPO.glob("backend/**/*.py"), *REPO.glob("simulators/**/*.py")]:
        if path.name != "embedded.py" and "tests" not in path.parts:
            assert not pattern.search(path.read_text()), f"{path} imports a package the image lacks"


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
        # A pattern matching a directory excludes everything below it.
        if re.fullmatch(f"{regex}(/.*)?", path):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_secrets_and_local_state_out_and_build_inputs_in():
    for path in (
        ".env",
        ".env.local",
        ".venv/bin/python",
        ".run/postgres/PG_VERSION",
        ".git/HEAD",
        "backend/core/__pycache__/settings.cpython-311.pyc",
        ".pytest_cache/v",
        "htmlcov/index.html",
    ):
        assert dockerignore_excludes(path), f"{path} would be sent to docker build"
    copied = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in arguments:
            copied.update(word for word in arguments.split()[:-1] if not word.startswith("--"))
    assert {".env.default", "backend/", "docker/entrypoint"} <= copied
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not dockerignore_excludes(source.rstrip("/")), f"COPY {source} is excluded by .dockerignore"


# --- The offline image kit: docker/offline/ (docs/docker.md, "Offline builds") ----------------------

OFFLINE = REPO / "docker" / "offline"


def test_offline_kit_scripts_pass_shellcheck():
    scripts = [
        OFFLINE / "build-images",
        *OFFLINE.glob("*/entrypoint"),
        REPO / "tools" / "ensure-debian-tools",
    ]
    assert os.access(REPO / "tools" / "ensure-debian-tools", os.X_OK), (
        "tools/ensure-debian-tools: not executable"
    )
    assert os.access(OFFLINE / "build-images", os.X_OK), "docker/offline/build-images must be executable"
    result = subprocess.run([tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_offline_stand_in_dockerfiles_pass_hadolint():
    dockerfiles = sorted(OFFLINE.glob("*/Dockerfile"))
    assert dockerfiles
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--config", str(REPO / ".hadolint.yaml"), *map(str, dockerfiles)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_offline_kit_has_a_recipe_for_every_public_image():
    """What the Dockerfile's FROM lines and compose's `image:` keys name, less our own images."""
    result = subprocess.run([str(OFFLINE / "build-images"), "--list"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    recipes = dict(line.split() for line in result.stdout.splitlines())
    named = {arguments.split()[0] for keyword, arguments in dockerfile_instructions() if keyword == "FROM"}
    named |= {service["image"] for service in compose()["services"].values() if "image" in service}
    assert set(recipes) == {image for image in named if not image.startswith("liveops")}
    for recipe in recipes.values():
        assert (REPO / recipe / "Dockerfile").exists(), recipe


def test_offline_wheelhouse_is_in_every_checkout_and_build_context():
    """The build stage bind-mounts docker/offline/wheels whether or not OFFLINE_WHEELS is set."""
    assert (OFFLINE / "wheels" / ".gitignore").exists()
    assert not dockerignore_excludes("docker/offline/wheels/django-5.2-py3-none-any.whl")
    mounts = [arguments for _, arguments in dockerfile_instructions() if "target=/wheelhouse" in arguments]
    assert len(mounts) == 1 and "source=docker/offline/wheels," in mounts[0]


# --- docker-compose.yml ----------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification_schema():
    assert hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest() == COMPOSE_SCHEMA_SHA256, (
        "docker/compose-spec.json differs from the vendored copy: see the comment at COMPOSE_SCHEMA"
    )
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # Its "$schema" is draft 2019-09, spelt in a way jsonschema does not look up: name the draft.
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda error: list(error.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors)


def has_healthcheck(name: str, service: dict) -> bool:
    """Declared in compose, or inherited from our image's HEALTHCHECK unless compose disables it."""
    declared = service.get("healthcheck")
    if declared is not None:
        return not declared.get("disable", False)
    return name in APP_SERVICES


def test_compose_dependencies_exist_and_wait_for_health_or_completion():
    services = compose()["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions, not a bare list"
        for target, rule in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            target_service = services[target]
            if target_service.get("restart") == "no":
                expected = "service_completed_successfully"
            elif has_healthcheck(target, target_service):
                expected = "service_healthy"
            else:
                expected = "service_started"
            assert rule["condition"] == expected, f"{name} -> {target}: {rule['condition']}, want {expected}"
            assert "profiles" not in target_service, (
                f"{name} depends on {target}, which a profile may leave out"
            )
    for name in ("web", "worker", "relay", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["nginx"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert services["migrate"]["command"][-2:] == ["migrate", "--noinput"]


def test_compose_publishes_only_the_site_and_the_local_mailpit_ui():
    services = compose()["services"]
    for name in ("postgres", "redis"):
        assert "ports" not in services[name], f"{name} must not be published"
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"nginx", "mailpit"}
    assert all(port.startswith("127.0.0.1:") for port in services["mailpit"]["ports"])
    assert services["postgres"]["image"] == "postgres:16" and services["redis"]["image"] == "redis:7"
    assert services["nginx"]["build"]["target"] == "nginx"
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for name in ("postgres", "redis"):
        assert has_healthcheck(name, services[name])


def test_app_services_run_our_image_and_read_env_file():
    services = compose()["services"]
    app = {name for name, service in services.items() if service.get("image") == "liveops:latest"}
    assert app == APP_SERVICES
    for name in APP_SERVICES:
        service = services[name]
        assert service["env_file"] == ".env", name
        assert service["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}, name
        assert "ALL" in service["cap_drop"], name
    for name in SIMULATORS:  # the simulators use neither engine: the entrypoint must not wait
        assert services[name]["environment"]["WAIT_FOR"] == "", name
    for name in (
        "worker",
        "relay",
        "beat",
        "migrate",
    ):  # no HTTP endpoint: the image's check has nothing to probe
        assert services[name]["healthcheck"] == {"disable": True}, name
    assert services["migrate"]["restart"] == "no"
    assert "deploy" not in services["beat"] and "scale" not in services["beat"], "beat must stay single"


def test_compose_commands_are_the_procfile_lines():
    """The rule: for every Procfile process P, compose service P has `command:` as a one-element list
    whose string, with compose's `$$` escape read as `$`, is P's Procfile command character for
    character. docker/entrypoint runs a one-argument command with /bin/sh like honcho does (next test),
    so variables expand from the same environment in both."""
    services = compose()["services"]
    for name, command in procfile_commands().items():
        assert name in services, f"Procfile process {name} has no compose service"
        compose_command = services[name]["command"]
        assert isinstance(compose_command, list) and len(compose_command) == 1, (
            f"{name}: write the command as a one-element list, so the entrypoint gets one command line"
        )
        assert compose_command[0].replace("$$", "$") == command, name
        # `exec env LINE` in the entrypoint keeps shell semantics only for a simple command.
        assert not re.search(r"[;&|<>`()]", command), f"{name}: keep Procfile lines simple commands"


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
    assert "starting: SIM_API_KEY=$KEY_SOURCE" in stderr  # the line is logged unexpanded: no secrets


def test_entrypoint_passes_several_arguments_through_untouched():
    result = run_entrypoint(
        [sys.executable, "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME"], {"WAIT_FOR": ""}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['a b', '$HOME']"


def test_entrypoint_gives_up_on_an_unreachable_engine_with_a_clear_message():
    closed_port = free_port()
    started = time.monotonic()
    result = run_entrypoint(
        ["true"],
        {
            "WAIT_FOR": "postgres",
            "WAIT_TIMEOUT_SECONDS": "2",
            "DATABASE_URL": f"postgres://u:pw@127.0.0.1:{closed_port}/x",
        },
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 20
    assert "PostgreSQL is not reachable after 2s: OperationalError" in result.stderr
    assert "pw@" not in result.stderr, "the URL (with its password) must not be logged"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WAIT_FOR": "mysql"}, "unknown engine 'mysql'"),
        ({"WAIT_FOR": "redis", "REDIS_URL": ""}, "REDIS_URL is empty"),
        (
            {"WAIT_FOR": "redis", "REDIS_URL": "redis://x", "WAIT_TIMEOUT_SECONDS": "soon"},
            "not a whole number",
        ),
    ],
)
def test_entrypoint_refuses_bad_wait_settings(env, message):
    result = run_entrypoint(["true"], env)
    assert result.returncode != 0
    assert message in result.stderr


def test_entrypoint_waits_for_reachable_engines():
    """Uses the test run's own engines (CI's PostgreSQL and Redis); the maintenance database `postgres`
    stands in for the application's, which need not exist yet."""
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not database_url or not redis_url:
        pytest.skip("DATABASE_URL and REDIS_URL are not set")
    maintenance_url = urlunsplit(urlsplit(database_url)._replace(path="/postgres"))
    result = run_entrypoint(
        ["true"], {"WAIT_FOR": "postgres,redis", "DATABASE_URL": maintenance_url, "REDIS_URL": redis_url}
    )
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL is up" in result.stderr and "Redis is up" in result.stderr


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


def test_compose_file_is_accepted_by_docker_compose(tmp_path):
    """A second opinion from a real compose implementation: interpolation, anchors, `$$`, profiles.
    Debian's docker-compose is v1 (1.29); `docker compose` v2 is used instead where it exists."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.fail("neither `docker compose` nor docker-compose is installed (tools/ensure-debian-tools)")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(COMPOSE_FILE, project / "docker-compose.yml")
    docker_env(tmp_path)  # writes tmp_path/docker.env
    shutil.copy(tmp_path / "docker.env", project / ".env")
    # Compose prefers the shell's variables over .env; `make test` exports .env.default's values.
    written = make_env.parse_env((project / ".env").read_text())
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in written and not key.startswith("COMPOSE_")
    }
    result = subprocess.run([*command, "config"], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert set(resolved) == set(compose()["services"])  # COMPOSE_PROFILES=demo from .env enables all
    assert (
        resolved["postgres"]["environment"]["POSTGRES_PASSWORD"]
        == make_env.parse_env((project / ".env").read_text())["POSTGRES_PASSWORD"]
    )


# --- nginx -----------------------------------------------------------------------------------------


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
    (tmp_path / "mime.types").write_text(
        "types { text/html html; text/css css; application/javascript js; application/json json; }\n"
    )
    return main


def upstream_hosts() -> set[str]:
    return set(re.findall(r"^\s*server\s+([A-Za-z][\w.-]*):\d+", NGINX_CONF.read_text(), re.M))


def test_nginx_config_passes_nginx_t(tmp_path):
    """`nginx -t` resolves upstream names, and `web` exists only in the compose network. The test maps
    each upstream host, which must be a compose service, to 127.0.0.1 (port and every other directive
    unchanged), exactly what Docker's DNS does with the name inside the network."""
    hosts = upstream_hosts()
    assert hosts == {"web"} and hosts <= set(compose()["services"])
    main = render_nginx(tmp_path, {f"server {host}:": "server 127.0.0.1:" for host in hosts})
    result = subprocess.run(
        [tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(main), "-e", "stderr"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_serves_static_files_from_where_the_dockerfile_puts_them():
    alias = re.search(r"location /static/ \{\s*alias (\S+);", NGINX_CONF.read_text()).group(1)
    nginx_stage = dict(dockerfile_stages()["nginx"])
    assert nginx_stage["FROM"] == "nginx:1.27-alpine AS nginx"
    copies = [arguments for keyword, arguments in dockerfile_stages()["nginx"] if keyword == "COPY"]
    assert f"--from=build /app/static {alias.rstrip('/')}" in copies
    assert "docker/nginx/default.conf /etc/nginx/conf.d/default.conf" in copies


class Upstream(http.server.ThreadingHTTPServer):
    """Stands in for daphne: records each request's headers; answers a WebSocket handshake with 101 and
    then echoes the first bytes it receives."""

    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        super().__init__(("127.0.0.1", 0), UpstreamHandler)


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append((self.path, {key.lower(): value for key, value in self.headers.items()}))
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            self.connection.sendall(self.connection.recv(1024))
            self.close_connection = True
            return
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
    """The real config served by nginx on a free port, `web` mapped to a fake daphne, /static/ to a
    temporary folder; nothing else changed."""
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
    body_size = 2 * 1024 * 1024
    head = (
        f"POST /api/orders/ HTTP/1.1\r\nHost: x\r\nContent-Length: {body_size}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(head.encode())  # nginx answers from the headers, before any body byte
        assert connection.recv(1024).startswith(b"HTTP/1.1 413")
    assert upstream.requests == []


def nginx_directives(name: str) -> list[str]:
    """The arguments of every `name ...;` directive (one starting a line) of the config, comments
    dropped, lines joined."""
    text = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())
    return [" ".join(found.split()) for found in re.findall(rf"(?m)^\s*{name}\s+([^;]*);", text)]


def test_nginx_logs_no_query_strings():
    formats = nginx_directives("log_format")
    assert formats, "the config defines its own access log format"
    for log_format in formats:
        for variable in ("request", "request_uri", "args", "query_string", "http_referer"):
            assert not re.search(rf"\${variable}\b", log_format), f"${variable} in log_format {log_format}"
        assert not re.search(r"\$arg_", log_format), log_format
    names = {log_format.split()[0] for log_format in formats}
    access_logs = nginx_directives("access_log")
    # Server level: it replaces the stock nginx.conf's http-level log (format `main`, with $request).
    assert any(log.split()[-1] in names for log in access_logs), access_logs
    assert all(log == "off" or log.split()[-1] in names for log in access_logs), access_logs


def test_nginx_limits_per_client_address():
    zones = {
        re.search(r"zone=(\w+)", zone).group(1): zone
        for zone in nginx_directives("limit_req_zone") + nginx_directives("limit_conn_zone")
    }
    assert all(zone.startswith("$binary_remote_addr ") for zone in zones.values()), zones
    assert "rate=10r/m" in zones["signin"]
    used = {
        re.search(r"zone=(\w+)", limit).group(1) if "zone=" in limit else limit.split()[0]
        for limit in nginx_directives("limit_req") + nginx_directives("limit_conn")
    }
    assert used == set(zones), f"zones {sorted(zones)}, used {sorted(used)}"
    assert nginx_directives("limit_req_status") == nginx_directives("limit_conn_status") == ["429"]
    assert nginx_directives("client_max_body_size") == ["1m"]


def test_nginx_access_log_leaves_the_query_string_out(nginx_site, tmp_path):
    port, upstream = nginx_site
    answer = http_request(
        port, b"GET /healthz?ticket=s3cret-ticket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200")
    assert upstream.requests[-1][0] == "/healthz?ticket=s3cret-ticket"  # daphne still gets it
    log = (tmp_path / "logs" / "access.log").read_text()
    assert '"GET /healthz HTTP/1.1" 200' in log
    assert "s3cret" not in log


def test_nginx_limits_sign_in_attempts_per_address(nginx_site):
    port, upstream = nginx_site
    request = b"POST /api/auth/token/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    statuses = [http_request(port, request).split(b" ")[1] for _ in range(10)]
    # The first, then a burst of 5 at once; the rest wait 6 s each (10r/m), so they get 429 here.
    assert statuses == [b"200"] * 6 + [b"429"] * 4
    assert len(upstream.requests) == 6
    assert http_request(
        port, b"GET /api/orders/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).startswith(b"HTTP/1.1 200"), "the rest of the API has a zone of its own"


def test_nginx_upgrades_websockets_and_tunnels_them(nginx_site):
    port, upstream = nginx_site
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(
            b"GET /ws/operators/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += connection.recv(1024)
        assert head.startswith(b"HTTP/1.1 101"), head
        connection.sendall(b"frame bytes")
        assert connection.recv(1024) == b"frame bytes"
    path, headers = upstream.requests[-1]
    assert path == "/ws/operators/"
    assert headers["upgrade"] == "websocket" and headers["connection"].lower() == "upgrade"


# --- environment variables -------------------------------------------------------------------------


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


def test_every_variable_in_env_default_is_read_by_something():
    read = set().union(*variables_read().values()) | COMPOSE_CLI_VARIABLES
    unread = sorted(env_default_names() - read)
    assert not unread, f"in .env.default but read by nothing: {unread}"


def test_env_default_ends_with_the_compose_only_section():
    sections = env_default_text().split("\n# --- Docker Compose only ---\n")
    assert len(sections) == 2, "the compose-only section must appear once"
    compose_only = set(re.findall(rf"(?m)^{ENV_NAME}=", sections[1]))
    assert compose_only, "the section lists its variables"
    consumers = compose_variables() | COMPOSE_CLI_VARIABLES | variables_read()["docker"]
    assert compose_only <= consumers, f"not read by compose or the containers: {compose_only - consumers}"
    lines = sections[1].splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"{ENV_NAME}=", line):
            assert lines[index - 1].startswith("# "), f"{line}: needs its one-line comment above"


# --- make up: docker/make_env.py -------------------------------------------------------------------


def test_make_env_applies_every_docker_note_of_env_default(tmp_path):
    env = docker_env(tmp_path)
    defaults = make_env.parse_env(env_default_text())
    assert set(env) == set(defaults), "every variable of .env.default is kept"
    notes = make_env.docker_notes(env_default_text())
    assert notes, 'no "Docker:" note found'
    for name, note in notes.items():
        if name in make_env.COMPUTED:
            continue
        if note.lower().startswith("a random"):
            assert len(env[name]) == 50 and env[name] != defaults[name], name
        else:
            assert env[name] == note, f"{name}={env[name]}, the note says {note}"
    assert env["DEBUG"] == "false" and env["WEB_HOST"] == env["SIM_HOST"] == "0.0.0.0"
    assert env["WEB_PORT"] == "8000" and env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["ALLOWED_HOSTS"] == "localhost,web" and env["CSRF_TRUSTED_ORIGINS"] == "http://localhost"
    for value in env.values():
        assert "$" not in value, "compose would interpolate a $ in an env_file value"
    assert (tmp_path / "docker.env").stat().st_mode & 0o077 == 0, ".env holds secrets: owner only"


def test_make_env_database_url_matches_the_postgres_service(tmp_path):
    env = docker_env(tmp_path, public_url="https://ops.example.com")
    url = urlsplit(env["DATABASE_URL"])
    assert (url.username, url.password, url.hostname, url.port, url.path) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        "postgres",
        5432,
        f"/{env['POSTGRES_DB']}",
    )
    assert env["POSTGRES_PASSWORD"] != "liveops"
    assert env["ALLOWED_HOSTS"] == "ops.example.com,web"
    assert env["CSRF_TRUSTED_ORIGINS"] == "https://ops.example.com"
    # With the default password, the URL is the one .env.default's Docker note documents.
    defaults = make_env.parse_env(env_default_text())
    documented = make_env.docker_notes(env_default_text())["DATABASE_URL"]
    assert documented == env["DATABASE_URL"].replace(env["POSTGRES_PASSWORD"], defaults["POSTGRES_PASSWORD"])


def test_make_env_trusts_the_forwarding_headers_of_nginx_only(tmp_path):
    env = docker_env(tmp_path)
    network = compose()["networks"]["default"]["ipam"]["config"][0]["subnet"]
    nginx_address = compose()["services"]["nginx"]["networks"]["default"]["ipv4_address"]
    assert ipaddress.ip_address(nginx_address) in ipaddress.ip_network(network)
    assert env["TRUSTED_PROXIES"] == nginx_address


def test_no_other_container_can_take_nginx_fixed_address():
    """Docker hands out addresses from the ip_range in order: nginx's fixed one must lie outside it."""
    config = compose()["networks"]["default"]["ipam"]["config"][0]
    dynamic = ipaddress.ip_network(config["ip_range"])
    nginx_address = compose()["services"]["nginx"]["networks"]["default"]["ipv4_address"]
    assert dynamic.subnet_of(ipaddress.ip_network(config["subnet"]))
    assert ipaddress.ip_address(nginx_address) not in dynamic


def test_make_env_draws_new_secrets_each_time(tmp_path):
    first, second = docker_env(tmp_path / "a"), docker_env(tmp_path / "b")
    for name in ("SECRET_KEY", "BUENO_WEBHOOK_SECRET", "POSTGRES_PASSWORD"):
        assert first[name] != second[name]


def test_settings_load_from_the_generated_env(tmp_path):
    """The containers' settings: the generated .env as the whole environment, DEBUG off."""
    env = docker_env(tmp_path)
    env["STATIC_ROOT"] = str(tmp_path / "static")  # /app/static does not exist here
    code = (
        "import django; from django.conf import settings; django.setup(); "
        "print(settings.DEBUG, settings.SERVE_STATIC, settings.EMAIL_HOST, "
        "settings.PROVIDERS['melange']['url'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env
        | {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": f"{REPO / 'backend'}{os.pathsep}{REPO}",
            "DJANGO_SETTINGS_MODULE": "core.settings",
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "False", "mailpit", "http://melange:8101"]


def test_make_env_never_overwrites(tmp_path):
    output = tmp_path / ".env"
    output.write_text("SECRET_KEY=mine\n")
    assert make_env.main(["--output", str(output)]) == 1
    assert output.read_text() == "SECRET_KEY=mine\n"


def test_make_env_check_refuses_debug_off_with_the_default_secret_key(tmp_path, capsys):
    docker_env(tmp_path)
    path = tmp_path / "docker.env"
    assert make_env.main(["--check", str(path)]) == 0
    text = path.read_text()
    key = make_env.parse_env(text)["SECRET_KEY"]
    path.write_text(text.replace(key, "insecure-local-development-key-change-me"))
    capsys.readouterr()
    assert make_env.main(["--check", str(path)]) == 1
    assert "DEBUG=false with the default SECRET_KEY" in capsys.readouterr().err
    path.write_text(
        text.replace("DEBUG=false", "DEBUG=true").replace(key, "insecure-local-development-key-change-me")
    )
    assert make_env.main(["--check", str(path)]) == 0


def test_make_env_check_refuses_an_env_copied_verbatim(tmp_path, capsys):
    path = tmp_path / ".env"
    path.write_text(env_default_text().replace("DEBUG=true", "DEBUG=false"))
    assert make_env.main(["--check", str(path)]) == 1
    errors = capsys.readouterr().err
    for expected in (
        "default SECRET_KEY",
        "WEB_HOST=127.0.0.1",
        "SIM_HOST=127.0.0.1",
        "DATABASE_URL is empty",
    ):
        assert expected in errors


def test_make_env_turns_https_on_only_for_an_https_site(tmp_path):
    local = docker_env(tmp_path / "local")
    assert (local["SECURE_SSL_REDIRECT"], local["SECURE_HSTS_SECONDS"]) == ("false", "0")
    public = docker_env(tmp_path / "public", public_url="https://ops.example.com")
    assert (public["SECURE_SSL_REDIRECT"], public["SECURE_HSTS_SECONDS"]) == ("true", "31536000")
    for env in (local, public):  # keys the settings refuse with DEBUG=false are drawn fresh
        for name in (*make_env.REQUIRED_SECRETS, "DEMO_PASSWORD"):
            assert len(env[name]) == 50, name


def test_make_env_check_refuses_default_secrets_and_a_redirecting_plain_http_site(tmp_path, capsys):
    docker_env(tmp_path)
    path = tmp_path / "docker.env"
    text = path.read_text()
    env = make_env.parse_env(text)
    defaults = make_env.parse_env(env_default_text())
    for name in ("MELANGE_API_KEY", "BUENO_WEBHOOK_SECRET", "DEMO_PASSWORD"):
        text = text.replace(f"{name}={env[name]}", f"{name}={defaults[name]}")
    text = text.replace("SECURE_SSL_REDIRECT=false", "SECURE_SSL_REDIRECT=")  # empty: on with DEBUG=false
    path.write_text(text)
    capsys.readouterr()
    assert make_env.main(["--check", str(path)]) == 1
    errors = capsys.readouterr().err
    for name in ("MELANGE_API_KEY", "BUENO_WEBHOOK_SECRET", "DEMO_PASSWORD", "SECURE_SSL_REDIRECT"):
        assert name in errors
    assert "BUENO_API_KEY" not in errors and "UKLON_API_KEY" not in errors


def test_make_env_rejects_docker_notes_it_cannot_read():
    with pytest.raises(make_env.EnvDefaultError, match="NEW_SETTING"):
        make_env.docker_notes("# A new setting. Docker: whatever fits your site\nNEW_SETTING=1\n")


def test_makefile_docker_targets_exist():
    result = subprocess.run(
        ["make", "-n", "up", "down", "logs", "ps", "shell", "createsuperuser"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "docker/make_env.py --check .env" in result.stdout
    assert "docker compose exec web python backend/manage.py createsuperuser" in result.stdout


# --- HEALTHCHECK: docker/healthcheck.py ------------------------------------------------------------


def expanded_argv(service: str, env: dict[str, str]) -> list[str]:
    """PID 1's argv for a compose service: its command expanded by sh, the NAME=value words consumed by
    `env`, a console script run by its interpreter (as the kernel does for `#!` scripts)."""
    line = compose()["services"][service]["command"][0].replace("$$", "$")
    words = (
        subprocess.run(
            ["sh", "-c", f"printf '%s\\n' {line}"],
            env=env | {"PATH": os.environ["PATH"]},
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .splitlines()
    )
    while re.match(rf"{ENV_NAME}=", words[0]):
        words.pop(0)
    if words[0] != "python":
        words = ["/usr/local/bin/python3.11", f"/usr/local/bin/{words[0]}", *words[1:]]
    return words


def test_healthcheck_probes_the_process_each_service_runs(tmp_path):
    env = docker_env(tmp_path, public_url="https://ops.example.com")
    assert healthcheck.probe_for(expanded_argv("web", env), env) == healthcheck.Probe(
        "http://127.0.0.1:8000/healthz", "ops.example.com"
    )
    for service, port in (("melange", 8101), ("bueno", 8102), ("uklon", 8103)):
        probe = healthcheck.probe_for(expanded_argv(service, env), env)
        assert probe.url == f"http://127.0.0.1:{port}/_sim/health"
    for service in ("worker", "relay", "beat"):
        assert healthcheck.probe_for(expanded_argv(service, env), env) is None
    assert healthcheck.probe_for(["python", "backend/manage.py", "migrate", "--noinput"], env) is None
    assert healthcheck.public_host(".example.com,web") == "example.com"
    assert healthcheck.public_host("*") == "localhost"


def test_healthcheck_reports_a_live_simulator_healthy():
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "SIM_HOST": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.melange", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = healthcheck.probe_for(["python", "-m", "simulators.melange", "--port", str(port)], {})
        deadline = time.monotonic() + 15
        while not (result := healthcheck.check(probe))[0]:
            assert process.poll() is None and time.monotonic() < deadline, result
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not healthcheck.check(probe)[0], "a stopped simulator is unhealthy"


def test_healthcheck_sends_an_allowed_host_and_needs_200():
    upstream = Upstream()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        probe = healthcheck.probe_for(
            ["daphne", "--port", str(upstream.server_address[1])], {"ALLOWED_HOSTS": "ops.example.com,web"}
        )
        assert healthcheck.check(probe)[0]
        path, headers = upstream.requests[-1]
        assert path == "/healthz" and headers["host"] == "ops.example.com"
    finally:
        upstream.shutdown()
