"""The startup checks that touch the machine: each unusable directory is named with the reason
(a file in the way, a missing parent that cannot be made, read-only, not writable, no space),
and the command names the flag or variable that chose it."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3proxy import environment, server
from s3proxy.cli import main
from s3proxy.config import Config
from s3proxy.environment import check_environment, directory_problem
from s3proxy.settings import SettingError


def _failing_open(code: int) -> Callable[..., Any]:
    """``open`` as the kernel answers on a read-only, foreign or full file system."""

    def fake(path: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code), str(path))

    return fake


def test_a_usable_directory_is_made_with_its_parents(tmp_path: Path) -> None:
    """A missing directory whose parents can be made is made, and is fine."""
    target = tmp_path / "a" / "b" / "cache"
    assert directory_problem(str(target)) is None
    assert target.is_dir() and list(target.iterdir()) == []  # the probe file is gone


def test_a_file_in_place_of_the_directory(tmp_path: Path) -> None:
    """A regular file where the directory should be."""
    (tmp_path / "cache").write_text("x")
    problem = directory_problem(str(tmp_path / "cache"))
    assert problem == f"{tmp_path / 'cache'} is a file, not a directory"


def test_a_missing_parent_that_cannot_be_made(tmp_path: Path) -> None:
    """A parent that is missing because a file is in its way."""
    (tmp_path / "var").write_text("x")
    target = tmp_path / "var" / "cache" / "s3proxy"
    assert directory_problem(str(target)) == (
        f"{target} is missing and cannot be created: {tmp_path / 'var'} is a file, not a directory"
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        pytest.param(errno.EROFS, "is on a read-only file system", id="read-only"),
        pytest.param(errno.EACCES, "is not writable by this user (uid", id="permissions"),
        pytest.param(errno.ENOSPC, "has no space left", id="full"),
    ],
)
def test_an_unwritable_directory_says_why(
    code: int, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's refusal, in words, with the directory it concerns."""
    monkeypatch.setattr(environment, "open", _failing_open(code), raising=False)
    problem = directory_problem(str(tmp_path))
    assert problem is not None and problem.startswith(f"{tmp_path} {reason}"), problem


def test_a_nearly_full_disk_counts_as_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writable but with less than MIN_FREE bytes free: no room for cache or log files."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(environment.shutil, "disk_usage", lambda path: usage._replace(free=4096))
    assert directory_problem(str(tmp_path)) == f"{tmp_path} has no space left (4096 bytes free)"


def test_the_error_names_the_setting(tmp_path: Path) -> None:
    """check_environment raises for the setting at fault: the log dir here."""
    (tmp_path / "logs").write_text("x")
    config = Config.build(bucket="b", cache_dir=str(tmp_path / "c"), log_dir=str(tmp_path / "logs"))
    with pytest.raises(SettingError) as raised:
        check_environment(config)
    assert raised.value.setting == "log_dir"
    assert str(raised.value) == f"--dir: {tmp_path / 'logs'} is a file, not a directory"


@pytest.mark.parametrize(
    ("args", "env", "source"),
    [
        pytest.param(["-d", "{file}", "-o", "{tmp}/logs"], {}, "--cache-dir", id="cache-flag"),
        pytest.param(["-o", "{tmp}/logs"], {"CACHE_DIR": "{file}"}, "CACHE_DIR", id="cache-env"),
        pytest.param(["-d", "{tmp}/cache", "-o", "{file}"], {}, "--dir", id="log-flag"),
        pytest.param(["-d", "{tmp}/cache"], {"LOG_DIR": "{file}"}, "LOG_DIR", id="log-env"),
    ],
)
def test_the_command_names_the_flag_or_variable(
    args: list[str],
    env: dict[str, str],
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``s3proxy`` stops with one line naming what the user set and why it cannot be used."""
    monkeypatch.setattr(server.uvicorn, "run", _refuse)
    for name in ("CACHE_DIR", "LOG_DIR", "S3PROXY_CACHE_DIR", "S3PROXY_DIR"):
        monkeypatch.delenv(name, raising=False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    fill = {"file": blocker, "tmp": tmp_path}
    argv = ["-b", "b", "-p", "0", "-n", "1", *(a.format(**fill) for a in args)]
    environ = {name: value.format(**fill) for name, value in env.items()}
    result = CliRunner().invoke(main, argv, env=environ, prog_name="s3proxy")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"s3proxy: error: {source}: {blocker} is a file, not a directory"
    )


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("uvicorn started: the startup check did not fail")
