"""Create the .env of the Docker deployment from .env.default, or check an existing .env.

    python docker/make_env.py [--public-url URL] [--output .env]   create it (never overwrites)
    python docker/make_env.py --check [.env]                      refuse unsafe values (`make up` runs it)

Creating copies .env.default line by line, comments included, and gives each variable whose comment
says "Docker: ..." that value:
  - "Docker: a random ..."         a fresh random 50-character secret (letters and digits);
  - "Docker: A and B (...)"        A for the first variable under the comment, B for the second;
  - "Docker: VALUE (...)"          VALUE for the first variable under the comment.
Six values depend on where the site runs and on the secrets drawn above, so they are computed
(COMPUTED below): ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS and PUBLIC_URL from --public-url (default http://localhost,
with NGINX_PORT when it is not 80), SECURE_SSL_REDIRECT and SECURE_HSTS_SECONDS from its scheme (on for
https://, off for a plain-HTTP site, which a redirect to https:// would make unreachable), and
DATABASE_URL from POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB. A "Docker:" text that fits no rule
stops with an error naming its variable, so a new setting cannot reach the containers with its laptop
value unnoticed.

Standard library only: it runs on the host, before any image exists.
"""

import argparse
import re
import secrets
import string
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

REPO_DIR = Path(__file__).resolve().parent.parent
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
DOCKER_NOTE = re.compile(r"\bDocker:\s*(.+?)\s*$")
SECRET_ALPHABET = string.ascii_letters + string.digits  # nothing that .env, URLs or compose would parse
SECRET_LENGTH = 50
SECRET_KEY_MIN_LENGTH = 50  # what core/settings.py requires with DEBUG=false (Django's check --deploy rule)
# Refused by core/settings.py with DEBUG=false when empty or left at .env.default's value
REQUIRED_SECRETS = (
    "MELANGE_API_KEY",
    "BUENO_API_KEY",
    "UKLON_API_KEY",
    "RAKETA_API_KEY",
    "BUENO_WEBHOOK_SECRET",
    "RAKETA_WEBHOOK_SECRET",
)
HSTS_SECONDS = 365 * 24 * 3600
LOOPBACK = re.compile(r"^(127\.|localhost$|::1$|\[::1\]$)")
COMPUTED = (
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "DATABASE_URL",
    "PUBLIC_URL",
)
# The Bueno simulator posts its webhooks to http://web:8000 inside the compose network (BUENO_WEBHOOK_URL),
# so Django must accept the Host "web" as well as the public one.
INTERNAL_HOSTS = ("web",)


class EnvDefaultError(Exception):
    """.env.default holds a "Docker:" note this script cannot turn into a value."""


def random_secret() -> str:
    return "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def parse_env(text: str) -> dict[str, str]:
    """KEY=value lines of a .env file; comments and blank lines skipped, surrounding quotes removed."""
    values = {}
    for line in text.splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match:
            value = match.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[match.group(1)] = value
    return values


def docker_notes(text: str) -> dict[str, str]:
    """Variable -> the "Docker:" text of its comment block, for the variables such a block applies to.

    A block is a run of comment lines followed by a run of assignments; the note applies to the
    first assignment (or the first two for "A and B").
    """
    notes: dict[str, str] = {}
    note: str | None = None
    names: list[str] = []

    def close_block() -> None:
        if note is None:
            return
        if not names:
            raise EnvDefaultError(f'"Docker: {note}" is followed by no variable')
        values = _note_values(note, names)
        notes.update(zip(names, values, strict=False))

    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("#"):
            if names:  # a new comment after assignments starts a new block
                close_block()
                note, names = None, []
            found = DOCKER_NOTE.search(stripped)
            if found:
                note = found.group(1)
        elif ASSIGNMENT.match(stripped):
            names.append(ASSIGNMENT.match(stripped).group(1))
        else:  # blank line
            close_block()
            note, names = None, []
    return notes


def _note_values(note: str, names: list[str]) -> list[str]:
    """The note's text per variable it applies to; "a random ..." stays as is, meaning a secret."""
    if note.lower().startswith("a random"):
        return [note]
    if names[0] in COMPUTED:
        return [note]
    text = re.sub(r"\s*\(.*\)\s*$", "", note).rstrip(".")
    values = [value.strip() for value in text.split(" and ")]
    if len(values) > len(names) or any(not value or " " in value for value in values):
        raise EnvDefaultError(
            f'{names[0]}: cannot read the Docker value from "Docker: {note}"; write it as a single value '
            f'("Docker: VALUE (explanation)"), "a random ...", or teach docker/make_env.py'
        )
    return values


def docker_values(env_default: str, public_url: str | None) -> dict[str, str]:
    """Every variable that gets a Docker value, with that value (secrets drawn fresh)."""
    defaults = parse_env(env_default)
    values = {}
    for name, note in docker_notes(env_default).items():
        if name not in COMPUTED:
            values[name] = random_secret() if note.lower().startswith("a random") else note
    merged = {**defaults, **values}

    port = merged.get("NGINX_PORT", "80")
    url = urlsplit(public_url or ("http://localhost" if port == "80" else f"http://localhost:{port}"))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"--public-url must look like https://ops.example.com, not {public_url!r}")
    values["ALLOWED_HOSTS"] = ",".join([url.hostname, *INTERNAL_HOSTS])
    values["CSRF_TRUSTED_ORIGINS"] = f"{url.scheme}://{url.netloc}"
    values["PUBLIC_URL"] = f"{url.scheme}://{url.netloc}"
    https = url.scheme == "https"
    values["SECURE_SSL_REDIRECT"] = "true" if https else "false"
    values["SECURE_HSTS_SECONDS"] = str(HSTS_SECONDS) if https else "0"
    values["DATABASE_URL"] = "postgres://{}:{}@postgres:5432/{}".format(
        quote(merged["POSTGRES_USER"], safe=""),
        quote(merged["POSTGRES_PASSWORD"], safe=""),
        quote(merged["POSTGRES_DB"], safe=""),
    )
    return values


def render(env_default: str, values: dict[str, str], created: datetime) -> str:
    lines = [
        f"# Created by `make up` (docker/make_env.py) from .env.default on {created:%Y-%m-%d %H:%M} UTC,",
        '# with its "Docker:" values and fresh secrets. Yours to edit: `make up` never overwrites it.',
        "# It holds the deployment's secrets: keep it out of version control and backups you share.",
        "",
    ]
    for line in env_default.splitlines():
        match = ASSIGNMENT.match(line)
        if match and match.group(1) in values:
            line = f"{match.group(1)}={values[match.group(1)]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def problems(env: dict[str, str], defaults: dict[str, str]) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a Docker .env; errors stop `make up`."""
    errors, warnings = [], []

    def current(name: str) -> str:
        return env.get(name, defaults.get(name, "")).strip()

    def is_on(name: str, blank: bool) -> bool:
        return current(name).lower() in ("1", "true", "yes", "on") if current(name) else blank

    debug = is_on("DEBUG", False)
    key = env.get("SECRET_KEY", "")
    if not debug and key == defaults.get("SECRET_KEY"):
        errors.append(
            "DEBUG=false with the default SECRET_KEY: set SECRET_KEY to a random value "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')"
        )
    elif not debug and len(key) < SECRET_KEY_MIN_LENGTH:
        errors.append(f"DEBUG=false needs a SECRET_KEY of at least {SECRET_KEY_MIN_LENGTH} characters")
    if not debug:
        for name in REQUIRED_SECRETS:
            if not current(name) or current(name) == defaults.get(name):
                errors.append(f"DEBUG=false with an empty or default {name}: set it to a random value")
        if current("DEMO_PASSWORD") and current("DEMO_PASSWORD") == defaults.get("DEMO_PASSWORD"):
            errors.append("DEBUG=false with the default DEMO_PASSWORD: set it to a random value, or empty it")
        profiles = {profile.strip() for profile in current("COMPOSE_PROFILES").split(",")}
        grafana_password = current("GRAFANA_ADMIN_PASSWORD")
        if "monitoring" in profiles and grafana_password in ("", defaults.get("GRAFANA_ADMIN_PASSWORD")):
            errors.append(
                "DEBUG=false, the monitoring profile on, and an empty or default GRAFANA_ADMIN_PASSWORD: "
                "set it to a random value"
            )
    # Empty SECURE_SSL_REDIRECT follows DEBUG in core/settings.py: on in production.
    site = current("CSRF_TRUSTED_ORIGINS").split(",")[0].strip()
    if site.startswith("http://") and is_on("SECURE_SSL_REDIRECT", not debug):
        errors.append(
            f"the site is {site} (CSRF_TRUSTED_ORIGINS) but SECURE_SSL_REDIRECT is on: every page would "
            "redirect to https://. Set SECURE_SSL_REDIRECT=false and SECURE_HSTS_SECONDS=0, or serve https://"
        )
    for name in ("WEB_HOST", "SIM_HOST"):
        value = env.get(name, defaults.get(name, ""))
        if LOOPBACK.match(value):
            errors.append(f"{name}={value}: in a container it must be 0.0.0.0 (others connect to it)")
    for name in ("DATABASE_URL", "REDIS_URL", "POSTGRES_PASSWORD"):
        if not env.get(name):
            errors.append(f"{name} is empty: the containers have no embedded engines (see .env.default)")
    missing = sorted(set(defaults) - set(env))
    if missing:
        warnings.append(
            f"not in .env, so .env.default's local values apply: {', '.join(missing)} "
            '(copy them over, with their "Docker:" value where the comment gives one)'
        )
    return errors, warnings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="docker/make_env.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", nargs="?", const=".env", metavar="ENV", help="check ENV (default .env)")
    parser.add_argument("--output", default=".env", help="file to create (default .env)")
    parser.add_argument("--public-url", help="where users open the site (default http://localhost)")
    parser.add_argument("--env-default", default=str(REPO_DIR / ".env.default"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    env_default = Path(args.env_default).read_text()

    if args.check:
        path = Path(args.check)
        if not path.exists():
            sys.stderr.write(f"{path} does not exist: run `make up`, which creates it\n")
            return 1
        errors, warnings = problems(parse_env(path.read_text()), parse_env(env_default))
        for warning in warnings:
            sys.stderr.write(f"warning: {path}: {warning}\n")
        for error in errors:
            sys.stderr.write(f"error: {path}: {error}\n")
        if errors:
            sys.stderr.write(f"Refusing to start: fix {path} first.\n")
            return 1
        origins = parse_env(path.read_text()).get("CSRF_TRUSTED_ORIGINS", "")
        sys.stdout.write(
            f"{path} is fit for Docker; the site: {origins.split(',')[0] or 'see ALLOWED_HOSTS'}\n"
        )
        return 0

    output = Path(args.output)
    if output.exists():
        sys.stderr.write(f"{output} exists; not overwriting it (delete it to start afresh)\n")
        return 1
    try:
        values = docker_values(env_default, args.public_url)
    except (EnvDefaultError, ValueError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    output.touch(mode=0o600)  # secrets: readable by the owner only, from the first byte
    output.write_text(render(env_default, values, datetime.now(UTC)))
    sys.stdout.write(
        f"Created {output} from .env.default with the Docker values; the site will answer at "
        f"{values['CSRF_TRUSTED_ORIGINS']}.\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
