"""deploy/ checked as far as the tools here allow (no cluster, no docker): the YAML parses, the
probes and variables are s3proxy's own, and Debian's nginx accepts the balancer's config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from s3proxy.cli import env_names
from s3proxy.config import FIELDS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
#: Every variable s3proxy reads: the original's names and S3PROXY_<OPTION>.
VARIABLES = {name for f in FIELDS.values() for name in env_names(f)}


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def test_kubernetes_manifest() -> None:
    """A Deployment whose probes are /_proxy/ready and /_proxy/health on the container's port,
    whose variables s3proxy all reads, the Redis URL from a Secret, the cache on an emptyDir;
    and a Service in front of it."""
    kinds = {d["kind"]: d for d in _documents("kubernetes.yaml")}
    assert set(kinds) == {"Deployment", "Service"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert set(env) <= VARIABLES, set(env) - VARIABLES
    assert env["S3PROXY_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    assert container["readinessProbe"]["httpGet"]["path"] == "/_proxy/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/_proxy/health"
    (port,) = container["ports"]
    assert port["containerPort"] == int(env["PORT"]["value"])
    cache = next(
        m for m in container["volumeMounts"] if m["mountPath"] == env["CACHE_DIR"]["value"]
    )
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == cache["name"])
    assert (
        kinds["Service"]["spec"]["selector"]
        == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    )


def test_compose_file() -> None:
    """Three instances, each its own cache volume, Redis and nginx; s3proxy reads every
    variable the instances are given."""
    (compose,) = _documents("compose.yaml")
    services = compose["services"]
    instances = [s for name, s in services.items() if name.startswith("s3proxy-")]
    assert len(instances) == 3 and {"redis", "nginx"} <= set(services)
    for service in instances:
        assert set(service["environment"]) <= VARIABLES, set(service["environment"]) - VARIABLES
    assert len({s["volumes"][0].split(":")[0] for s in instances}) == 3


def test_nginx_config(tmp_path: Path) -> None:
    """Debian's nginx accepts deploy/nginx.conf (its hosts replaced: nothing resolves them
    here)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed (apt-get install nginx)")
    text = (DEPLOY / "nginx.conf").read_text()
    for i in (1, 2, 3):
        text = text.replace(f"s3proxy-{i}:8000", f"127.0.0.{i}:8000")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("listen 80;", "listen 127.0.0.1:8080;"))
    args = [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]
    args += ["-g", f"pid {tmp_path}/nginx.pid;"]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
