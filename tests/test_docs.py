"""The user-facing reference (README.md, docs/) stays self-contained and true to the code.

Fast and offline: no Ray, no Prefect server. Each check reads the code's own definitions
(the typer app, the pydantic models, the report builder) and looks them up in the pages, so
a new option, field or report key without documentation fails here.
"""

from __future__ import annotations

import ast
import re
from enum import Enum
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = ("README.md", "cli.md", "outputs.md", "model-bundles.md", "models.md", "label-files.md",
         "object-storage.md", "stac.md", "dicom.md", "nifti.md", "nightly.md", "cluster.md",
         "how-it-works.md", "performance.md", "segcore.md")

# Documents that exist only beside the repository; users of segpipe do not have them.
SCANNED = ("README.md", "docs", "pipeline", "flows", "segcore", "configs", "deploy")
FORBIDDEN = ("../shared", "CONTRACT.md", "SEED.md", "ENVIRONMENT.md", "ARCHITECTURE.md")
# The same documents cited by section without the file name ("SEED §2").
FORBIDDEN_SECTION_REF = re.compile(r"\b(?:SEED|CONTRACT|ENVIRONMENT|ARCHITECTURE)\s*§")


# --------------------------------------------------------------------------- helpers

def _text_files() -> list[Path]:
    """Every text file under SCANNED (binary files such as weights are skipped)."""
    files: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for p in candidates:
            if not p.is_file() or "__pycache__" in p.parts or p.stat().st_size > 4 * 2**20:
                continue
            if b"\0" in p.read_bytes()[:8192]:
                continue
            files.append(p)
    return files


def _hits(pattern) -> list[str]:
    """``path:line: text`` for every line of the scanned files matching ``pattern``."""
    out = []
    for p in _text_files():
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(lines, 1):
            if pattern(line):
                out.append(f"{p.relative_to(ROOT)}:{number}: {line.strip()}")
    return out


def _strip_code(text: str) -> str:
    """Markdown without fenced or indented code blocks and without inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    text = "\n".join(line for line in text.splitlines()
                     if not line.startswith(("    ", "\t")))
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _strip_code(path.read_text()))


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _section(text: str, heading: str) -> str:
    """The body under the first heading containing ``heading``, up to the next heading of
    the same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m and heading in m.group(2):
            level = len(m.group(1))
            body = []
            for nxt in lines[i + 1:]:
                n = re.match(r"^(#{1,6})\s", nxt)
                if n and len(n.group(1)) <= level:
                    break
                body.append(nxt)
            return "\n".join(body)
    raise AssertionError(f"no heading containing {heading!r}")


def _cells(line: str) -> list[str]:
    """Cells of a table row (``\\|`` inside a cell is a literal bar)."""
    inner = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def _table_rows(body: str) -> dict[str, list[str]]:
    """``{first cell: cells}`` of the table rows in ``body`` (separator rows excluded;
    header rows included)."""
    return {cells[0]: cells for cells in (_cells(line) for line in body.splitlines()
                                          if line.startswith("|")
                                          and not re.match(r"^\|\s*:?-", line))}


def _table_first_cells(body: str) -> list[str]:
    """First cells of the table rows in ``body``."""
    return list(_table_rows(body))


# --------------------------------------------------------------------------- self-contained

def test_scan_sees_the_sources():
    """The scan below must look at real files, or it would pass vacuously."""
    files = {p.relative_to(ROOT).as_posix() for p in _text_files()}
    for expected in ("README.md", "docs/cli.md", "flows/cli.py", "pipeline/bundle.py",
                     "segcore/openvocab.py", "configs/demo-satellite.yaml"):
        assert expected in files
    assert len(files) > 50


@pytest.mark.parametrize("name", FORBIDDEN)
def test_no_mention_of_documents_outside_the_repo(name):
    hits = _hits(lambda line: name in line)
    assert not hits, f"{len(hits)} line(s) mention {name!r}:\n" + "\n".join(hits)


def test_no_section_references_to_documents_outside_the_repo():
    hits = _hits(lambda line: FORBIDDEN_SECTION_REF.search(line) is not None)
    assert not hits, f"{len(hits)} line(s) cite a section of a document users do not have " \
                     "(describe the point in words):\n" + "\n".join(hits)


# --------------------------------------------------------------------------- links

def test_reference_pages_exist_and_are_linked():
    for page in PAGES:
        assert (DOCS / page).is_file(), f"docs/{page} is missing"
    readme_links = set(_links(README))
    for page in PAGES[1:]:
        assert f"docs/{page}" in readme_links, f"README.md does not link docs/{page}"
    index_links = {link.split("#")[0] for link in _links(DOCS / "README.md")}
    for page in PAGES[1:]:
        assert page in index_links, f"docs/README.md does not link {page}"


def _broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file, or whose heading anchor, does not exist."""
    broken = []
    for link in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:, ...
            continue
        target, _, anchor = link.partition("#")
        dest = page if not target else (page.parent / target).resolve()
        if not dest.exists():
            broken.append(f"{link}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{link}: no heading with anchor #{anchor} in {dest.name}")
    return broken


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = _broken_links(page)
    assert not broken, f"{page.name}:\n" + "\n".join(broken)


def test_link_checker_catches_broken_links(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## `--labels`: matching files\n")
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nSee [gone](missing.md), [ok](#title), [bad](#nothing),\n"
                    "[there](other.md#--labels-matching-files), [not there](other.md#labels)\n"
                    "and [web](https://example.org/x.md).\n\n    [in code](also-missing.md)\n"
                    "```\n[fenced](fenced-missing.md)\n```\n")
    assert _broken_links(page) == [
        f"missing.md: {tmp_path / 'missing.md'} does not exist",
        "#nothing: no heading with anchor #nothing in page.md",
        "other.md#labels: no heading with anchor #labels in other.md",
    ]


# --------------------------------------------------------------------------- cli.md

def _cli():
    from flows.cli import app

    return typer.main.get_command(app)


def _commands(group, prefix: tuple[str, ...] = ()):
    """``("config show", command)`` for every leaf command (groups have ``commands``), and
    for every group that does something by itself (``segpipe models``)."""
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if getattr(command, "commands", None):
            if getattr(command, "invoke_without_command", False):
                yield " ".join(path), command
            yield from _commands(command, path)
        else:
            yield " ".join(path), command


def _options(command) -> list[str]:
    """Every spelling of every option of a command (``--model``, ``-m``, ``--no-debug``)."""
    return [opt for p in command.params if p.param_type_name == "option"
            for opt in (*p.opts, *getattr(p, "secondary_opts", []))]


def test_every_command_has_a_section():
    text = (DOCS / "cli.md").read_text()
    names = [name for name, _ in _commands(_cli())]
    assert {"run", "demo", "models", "train", "nightly", "config show"} <= set(names)
    for name in names:
        assert re.search(rf"^##+ `segpipe {re.escape(name)}`\s*$", text, re.M), \
            f"docs/cli.md has no section '## `segpipe {name}`'"


def _documented_options(body: str) -> set[str]:
    """Options named in the first column of the option tables of a command's section."""
    return {o for cell in _table_first_cells(body) for o in re.findall(r"`(-{1,2}[\w-]+)", cell)}


def test_run_options_documented():
    run = _cli().commands["run"]
    opts = _options(run)
    assert {"--model", "-m", "--out", "--labels", "--no-resume", "--prompts"} <= set(opts)
    body = _section((DOCS / "cli.md").read_text(), "`segpipe run`")
    missing = [o for o in opts if o not in _documented_options(body)]
    assert not missing, f"segpipe run options without a row in docs/cli.md: {missing}"


@pytest.mark.parametrize("name", ["run", "demo", "models", "train", "nightly", "config show"])
def test_options_of_each_command_documented_and_real(name):
    command = dict(_commands(_cli()))[name]
    opts = set(_options(command))
    documented = _documented_options(_section((DOCS / "cli.md").read_text(), f"`segpipe {name}`"))
    missing = sorted(opts - documented)
    assert not missing, f"segpipe {name}: options without a row in docs/cli.md: {missing}"
    invented = sorted(documented - opts)
    assert not invented, f"segpipe {name}: docs/cli.md lists options it does not have: {invented}"


def _exit_codes() -> set[int]:
    """The exit codes the command line defines (``ExitCode``, or ``EXIT_*`` constants)."""
    import flows.cli as cli

    codes = {int(v) for k, v in vars(cli).items() if k.startswith("EXIT_") and isinstance(v, int)}
    try:
        from flows.exit_codes import ExitCode
    except ModuleNotFoundError:
        return codes
    return codes | {int(c) for c in ExitCode}


def test_exit_codes_documented():
    codes = _exit_codes()
    assert {0, 1, 2} <= codes
    rows = _table_rows(_section((DOCS / "cli.md").read_text(), "Exit codes"))
    missing = sorted(c for c in codes if str(c) not in rows)
    assert not missing, f"exit codes without a row in docs/cli.md: {missing}"


def test_run_config_keys_documented():
    from pipeline.options import RunOptions

    body = _section((DOCS / "cli.md").read_text(), "`--config run.yaml`")
    missing = [f for f in RunOptions.model_fields if f"`{f}`" not in body]
    assert not missing, f"run options missing from docs/cli.md (--config run.yaml): {missing}"


def test_nightly_settings_and_variables_documented():
    from pydantic import BaseModel

    from flows.settings import Settings, env_name

    text = (DOCS / "cli.md").read_text()
    leaves = []
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            leaves += [(name, sub) for sub in ann.model_fields]
        else:
            leaves.append((name,))
    assert ("run", "workers") in leaves and ("log_level",) in leaves
    missing_keys = [".".join(k) for k in leaves if f"`{'.'.join(k)}`" not in text]
    assert not missing_keys, f"settings missing from docs/cli.md: {missing_keys}"
    missing_vars = [env_name(k) for k in leaves if env_name(k) not in text]
    assert not missing_vars, f"environment variables missing from docs/cli.md: {missing_vars}"
    assert "RAY_ADDRESS" in text


# --------------------------------------------------------------------------- model-bundles.md

def _spec_models():
    from pipeline.bundle import ClassSpec, InputSpec, InstanceSpec, ModelSpec

    return {"ModelSpec": ModelSpec, "InputSpec": InputSpec, "ClassSpec": ClassSpec,
            "InstanceSpec": InstanceSpec}


def _default_text(value) -> str | None:
    """How a default is written in the tables (None: not checked)."""
    if isinstance(value, Enum):
        return str(value.value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, str)) for v in value):
        return "[" + ", ".join(map(str, value)) + "]"
    if value == {}:
        return "{}"
    return None


@pytest.mark.parametrize("name", ["ModelSpec", "InputSpec", "ClassSpec", "InstanceSpec"])
def test_bundle_fields_documented(name):
    model = _spec_models()[name]
    text = (DOCS / "model-bundles.md").read_text()
    for field in model.model_fields:  # anywhere on the page
        assert f"`{field}`" in text, f"{name}.{field} is not in docs/model-bundles.md"
    rows = _table_rows(_section(text, f"(`{name}`)"))
    documented = {re.sub(r"`", "", k) for k in rows} - {"field"}
    assert set(model.model_fields) == documented, (
        f"{name}: table rows {sorted(documented)} != fields {sorted(model.model_fields)}")
    for field, info in model.model_fields.items():
        default_cell = rows[f"`{field}`"][2].replace("`", "")
        if info.is_required():
            assert default_cell == "required", f"{name}.{field}: documented default " \
                                               f"{default_cell!r}, but the field is required"
            continue
        expected = _default_text(info.get_default(call_default_factory=True))
        if expected is not None:
            assert expected in default_cell, (
                f"{name}.{field}: default is {expected!r}, docs say {default_cell!r}")


def test_bundled_models_documented():
    from pipeline.bundle import bundled_models

    body = _section((DOCS / "model-bundles.md").read_text(), "Bundled models")
    rows = _table_rows(body)
    for name in bundled_models():
        assert f"`{name}`" in rows, f"bundled model {name} has no row in docs/model-bundles.md"
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"`make ([\w-]+)`", body):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), \
            f"docs/model-bundles.md names `make {target}`, which the Makefile lacks"
    for config in re.findall(r"`(configs/[\w./-]+)`", body):
        assert (ROOT / config).is_file(), f"{config} does not exist"


# --------------------------------------------------------------------------- outputs.md

def _function_dict_keys(names: tuple[str, ...]) -> set[str]:
    """String keys of the dict literals (and string tuples) in the functions ``names``
    anywhere under pipeline/: the report fields each input format adds."""
    keys: set[str] = set()
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(fn, ast.FunctionDef) and fn.name in names):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Dict):
                    keys |= {k.value for k in node.keys
                             if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                elif isinstance(node, ast.Tuple):
                    keys |= {e.value for e in node.elts
                             if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return keys


def _model_field_names(model, seen=None) -> set[str]:
    """Field names of a pydantic model and of every model nested in its annotations."""
    from typing import get_args

    from pydantic import BaseModel

    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)

    def walk(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(_model_field_names(annotation, seen))
        for arg in get_args(annotation):
            walk(arg)

    for field in model.model_fields.values():
        walk(field.annotation)
    return names


def _report_keys() -> set[str]:
    """Keys of report.json: the typed report (if the code has one), the per-format grid
    fields and the report builder's own dict literals."""
    keys = _function_dict_keys(("build_report", "_grid_fields", "grid_fields"))
    try:
        from pipeline.report.model import SceneReport
    except ModuleNotFoundError:
        return keys
    return keys | _model_field_names(SceneReport)


def test_report_keys_documented():
    keys = _report_keys()
    assert {"scene_id", "tiles", "timings_s", "fingerprint", "crs", "affine", "read"} <= keys
    body = _section((DOCS / "outputs.md").read_text(), "`report.json`")
    # a key is documented as `key`, as the last part of `a.key`, or as the head of `key.sub`
    missing = sorted(k for k in keys
                     if f"`{k}`" not in body and f".{k}`" not in body and f"`{k}." not in body)
    assert not missing, f"report.json keys missing from docs/outputs.md: {missing}"


def _batch_columns() -> list[str]:
    import pipeline.report.batch as batch

    row = getattr(batch, "BatchRow", None)
    if row is not None:
        return list(row.model_fields)
    from dataclasses import fields

    return [f.name for f in fields(batch.SceneOutcome)]


def test_batch_columns_documented():
    columns = _batch_columns()
    assert {"scene_id", "status", "reason", "reused"} <= set(columns)
    rows = _table_rows(_section((DOCS / "outputs.md").read_text(), "`batch.json`"))
    documented = {name.strip("` ") for cell in rows for name in cell.split(",")}
    missing = [c for c in columns if c not in documented]
    assert not missing, f"batch.json columns missing from docs/outputs.md: {missing}"
