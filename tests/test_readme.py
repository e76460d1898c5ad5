"""README.md's examples are what operators copy, so they are checked by the code they describe:

- every ```toml block is a sites file, or part of one, and is loaded by
  :func:`s3proxy.sitesfile.load` (what startup and ``s3proxy check --config`` use), with the
  secrets and files it names provided here;
- every JSON example of the management API parses, a site registration body passes
  :func:`s3proxy.registry.add` (what ``PUT /_proxy/_private/sites/NAME`` applies), and the
  error shape is :class:`s3proxy.registry.Refused`'s;
- every ``s3proxy ...`` command line in a code block parses with the real click commands, and
  every option named in the text exists.

(The option table is checked against ``--help`` in ``tests/test_cli.py``.) No server is
started: these are parses and loads only.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from s3proxy import registry, sitesfile
from s3proxy.cli import check, main, publish, sign
from s3proxy.config import Config

README = Path(__file__).parents[1] / "README.md"
COMMANDS: dict[str, click.Command] = {"check": check, "publish": publish, "sign": sign}
#: Options the README names that belong to other programs, not to s3proxy.
FOREIGN = {
    "--cpus": "docker run",
    "--cpuset-cpus": "docker run",
    "-v": "docker run",
    "-e": "docker run",
    "-ra": "pytest",
    "--baseline": "scripts/bench",
    "--sinks": "scripts/bench",
    "--pin": "scripts/bench",
    "--quick": "scripts/soak",
    "--memory": "scripts/soak",
}
#: The bucket a completed fragment's site reads (any valid name: the loader reads no bucket).
BUCKET = "readme-example"
SECRET = "readme-example-secret-0123456789"  # over MIN_SECRET_BYTES


@dataclass(frozen=True)
class Block:
    """A fenced code block: the section it is in, its language and text, where it starts."""

    section: str
    lang: str
    text: str
    line: int

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.section})"


@functools.cache
def blocks() -> list[Block]:
    """Every fenced block of README.md, indented ones (in a list item) included."""
    found: list[Block] = []
    lines: list[str] = []
    section, fence, start, indent = "", "", 0, 0
    for number, line in enumerate(README.read_text().splitlines(), 1):
        stripped = line.strip()
        if fence:
            if stripped == "```":
                found.append(Block(section, fence, "\n".join(lines), start))
                fence = ""
            else:
                lines.append(line[indent:] if line[:indent].isspace() else line.lstrip())
        elif stripped.startswith("```"):
            fence, start, lines = stripped[3:] or "text", number, []
            indent = len(line) - len(line.lstrip())
        elif line.startswith("#"):
            section = line.lstrip("#").strip()
    return found


@functools.cache
def inline_spans() -> list[str]:
    """The text's `code spans` outside fenced blocks, line breaks made spaces (as rendered)."""
    prose, fenced = [], False
    for line in README.read_text().splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        prose.append("" if fenced or line.strip().startswith("```") else line)
    return [" ".join(m.split()) for m in re.findall(r"`([^`]+)`", "\n".join(prose))]


def _ids(items: list[Block]) -> list[str]:
    return [f"line{b.line}-{re.sub(r'[^a-z]+', '-', b.section.lower()).strip('-')}" for b in items]


TOML = [b for b in blocks() if b.lang == "toml"]


@pytest.fixture
def base() -> Config:
    """The command line's options without ``--bucket``: what each file's sites inherit."""
    return Config.build()


# -- TOML: the sites file --------------------------------------------------------------------


def complete(text: str) -> str:
    """A fragment made a whole sites file, minimally: each site whose tables it shows
    (``[[sites.docs.access]]``, ``[sites.app.cors]``) without the ``[sites.NAME]`` table itself
    gets that table, with a bucket and a host only, put before the fragment; a fragment without any
    site gets a default site. Nothing the fragment shows is changed, so each of its keys is
    still checked by the loader."""
    named = set(re.findall(r"^\s*\[\[?sites\.([A-Za-z0-9_-]+)", text, re.M))
    whole = set(re.findall(r"^\s*\[sites\.([A-Za-z0-9_-]+)\]", text, re.M))
    added = [
        f'[sites.{n}]\nbucket = "{BUCKET}"\nhosts = ["{n}.example.com"]\n'
        for n in sorted(named - whole)
    ]
    if not named:
        added.append(f'[sites.readme]\nbucket = "{BUCKET}"\ndefault = true\n')
    return "\n".join([*added, text])


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, key)


def provide(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``text`` with what it refers to present: each ``{ env = NAME }`` secret set, each
    ``{ file = PATH }`` secret and ``htpasswd`` file made under ``tmp_path``, their paths (only
    paths, never keys) rewritten to those files."""
    made = itertools.count()
    for key, value in _walk(tomllib.loads(text)):
        if isinstance(value, dict) and set(value) == {"env"}:
            monkeypatch.setenv(value["env"], SECRET)
        paths = [value["file"]] if isinstance(value, dict) and set(value) == {"file"} else []
        paths += [value] if key == "htpasswd" and isinstance(value, str) else []
        for path in paths:
            local = tmp_path / f"provided-{next(made)}"
            local.write_text(SECRET + "\n" if key != "htpasswd" else "")
            for quote in ('"', "'"):
                text = text.replace(f"{quote}{path}{quote}", json.dumps(str(local)))
    return text


@pytest.mark.parametrize("block", TOML, ids=_ids(TOML))
def test_toml_example_loads(
    block: Block, base: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each TOML example, completed if it is a fragment, is a sites file the loader accepts,
    with every site it shows."""
    text = provide(complete(block.text), tmp_path, monkeypatch)
    path = tmp_path / "sites.toml"
    path.write_text(text)
    try:
        sites = sitesfile.load(str(path), base)
    except sitesfile.SitesFileError as exc:
        pytest.fail(f"{block.where}: the sites file loader refuses it: {exc}")
    shown = set(re.findall(r"^\s*\[\[?sites\.([A-Za-z0-9_-]+)", block.text, re.M))
    assert shown <= set(sites.sites), block.where


def test_refusal_shown_is_the_loaders(base: Config) -> None:
    """The refusal the text shows (``s3proxy: error: sites.toml: site app: ttl: -1 ...``) is
    what the loader says of the "Many sites" example with that value, word for word."""
    shown = re.compile(r"s3proxy: error: sites\.toml: site ([\w-]+): (\w+): (\S+) ")
    (line,) = [span for span in inline_spans() if shown.match(span)]
    name, key, value = shown.findall(line)[0]
    data = tomllib.loads(many_sites().text)
    data["sites"][name][key] = tomllib.loads(f"value = {value}")["value"]
    with pytest.raises(sitesfile.SitesFileError) as refused:
        sitesfile.parse(data, "sites.toml", base)
    assert f"s3proxy: error: {refused.value}" == line


def many_sites() -> Block:
    """The whole sites file of "Many sites" (servers and sites)."""
    (block,) = [b for b in TOML if b.section == "Many sites" and "[servers." in b.text]
    return block


def test_readme_has_the_sites_file_examples() -> None:
    """The examples checked above are there (a renamed section would silently skip them)."""
    sections = {b.section for b in TOML}
    assert {"Many sites", "Private paths"} <= sections
    assert any("[[sites.docs.access]]" in b.text for b in TOML)


# -- JSON: the management API --------------------------------------------------------------


def json_examples() -> list[Any]:
    """Every JSON object the text shows, its placeholders made values: ``...`` as a value is
    null, as an element or member it is dropped, a bare ``N`` is 0. A list of keys
    (``{"file", "version"}``) is not JSON and not an example of a body: it is left out."""
    found = []
    for span in inline_spans() + [b.text for b in blocks() if b.lang == "json"]:
        if not span.startswith("{") or re.fullmatch(r'\{"[^"]+"(, "[^"]+")*\}', span):
            continue
        text = re.sub(r",\s*\.\.\.\s*(?=[}\]])", "", span)
        text = re.sub(r"\[\s*\.\.\.\s*\]", "[]", text)
        text = re.sub(r":\s*\.\.\.", ": null", text)
        text = re.sub(r":\s*N\b", ": 0", text)
        try:
            found.append(json.loads(text))
        except ValueError as exc:
            pytest.fail(f"README's JSON example is not JSON: {span}: {exc}")
    return found


def test_json_examples_parse() -> None:
    """Every JSON example parses (placeholders aside); there are some."""
    assert len(json_examples()) >= 4


def test_registration_body_is_accepted_as_registry_checks_it(base: Config, tmp_path: Path) -> None:
    """A site registration body shown (an object of a site table's keys) is accepted by the
    check a ``PUT /_proxy/_private/sites/NAME`` makes, beside the "Many sites" file."""
    bodies = [
        body
        for body in json_examples()
        if set(body) <= sitesfile.SITE_KEYS and {"bucket", "hosts"} & set(body)
    ]
    assert bodies, "README shows no site registration body"
    path = tmp_path / "sites.toml"
    path.write_text(many_sites().text)
    file_sites = sitesfile.load(str(path), base)
    for body in bodies:
        try:
            sites = registry.add(file_sites, "registered", body, base)
        except registry.Refused as exc:
            pytest.fail(f"README's registration {body} is refused: {exc.answer()}")
        assert "registered" in sites.sites


def _shape(value: Any) -> Any:
    return {k: _shape(v) for k, v in value.items()} if isinstance(value, dict) else None


def test_error_shape_is_the_apis() -> None:
    """The refusal shape shown is what :class:`registry.Refused` answers."""
    errors = [body for body in json_examples() if set(body) == {"error"}]
    assert errors, "README shows no error shape"
    actual = registry.Refused(400, "INVALID_SITE", "a reason").answer()[1]
    for body in errors:
        assert _shape(body) == _shape(actual)


# -- command lines -------------------------------------------------------------------------


def shell_lines() -> list[tuple[Block, str]]:
    """Each line of every shell block, continuations joined."""
    blocks_ = [b for b in blocks() if b.lang == "sh"]
    return [(b, line) for b in blocks_ for line in b.text.replace("\\\n", " ").splitlines()]


def command_lines() -> list[tuple[str, list[str]]]:
    """Each ``s3proxy ...`` line of a shell block (comments dropped): where it is, and its
    arguments."""
    return [
        (f"{block.where}: {line.split('#')[0].strip()}", shlex.split(line, comments=True)[1:])
        for block, line in shell_lines()
        if line.startswith("s3proxy ")
    ]


LINES = command_lines()


def _line_id(where: str, args: list[str]) -> str:
    return f"line{where.split(':')[1].split()[0]}-{args[0] if args[0] in COMMANDS else 'serve'}"


@pytest.mark.parametrize(("where", "args"), LINES, ids=[_line_id(w, a) for w, a in LINES])
def test_command_line_parses(
    where: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line's options exist for its command and its values convert, as click parses them
    before running anything (the directory ``publish`` names is made here)."""
    monkeypatch.chdir(tmp_path)
    command = COMMANDS.get(args[0]) if args else None
    if command is publish:
        (tmp_path / args[1]).mkdir()
    try:
        # A copy: click's parser consumes the list it is given.
        (command or main).make_context("s3proxy", list(args[1:] if command else args))
    except click.ClickException as exc:
        pytest.fail(f"{where}: {exc.format_message()}")


def test_readme_has_command_lines() -> None:
    """Serving, check and publish are shown as command lines."""
    assert {args[0] for _, args in LINES} >= {"check", "publish", "--bucket"}


def test_docker_variables_are_options() -> None:
    """Each ``-e NAME`` of a ``docker run`` line is a variable some option reads."""
    names = {name for p in main.params for name in _env(p)}
    shown = []
    for _, line in shell_lines():
        if line.startswith("docker run"):
            words = shlex.split(line, comments=True)
            shown += [v.split("=")[0] for f, v in zip(words, words[1:], strict=False) if f == "-e"]
    assert shown, "README shows no docker run -e"
    assert set(shown) <= names, f"not a variable of any option: {sorted(set(shown) - names)}"


def _env(param: click.Parameter) -> list[str]:
    envvar = getattr(param, "envvar", None)
    return [envvar] if isinstance(envvar, str) else list(envvar or [])


def _flags(command: click.Command) -> set[str]:
    return {flag for param in command.params for flag in getattr(param, "opts", [])} | {"--help"}


def test_every_option_named_in_the_text_exists() -> None:
    """Each option in a code span of the text (``--ttl``, ``--site NAME --config FILE``,
    ``s3proxy sign ... --expires 1h``) is one of its command's, or a named other program's."""
    known = set().union(*(_flags(c) for c in (main, *COMMANDS.values())))
    unknown = set()
    for span in inline_spans():
        words = span.split()
        if words[0] == "s3proxy" and len(words) > 1:
            command = COMMANDS.get(words[1], main)
            unknown |= {
                w for w in words if w.startswith("-") and w.split("=")[0] not in _flags(command)
            }
        elif span.startswith("-") and span != "-":
            for word in re.split(r"[ ,/]+", span):
                flag = word.split("=")[0]
                if word.startswith("-") and flag not in known and flag not in FOREIGN:
                    unknown.add(word)
    assert not unknown, f"README names options no command has: {sorted(unknown)}"
