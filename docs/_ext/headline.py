"""Sphinx glue for the generated parts of the docs (the numbers themselves: ``docs/generate.py``).

* role ``{hl}`cpu/02:path;spec``` — one number from the headline JSON, written as a tagged span
  that ``generate.py --check-html`` verifies against the JSON;
* directive ``{headline-table} NAME`` — a table of ``generate.TABLES`` (markdown with such roles);
* directive ``{committed-figures} [NN]`` — every committed figure (of notebook NN), `cpu` | `long`;
* on ``builder-inited``: the notebook pages in ``docs/notebooks/`` (an executed copy from
  ``executed/<profile>/`` when one exists, else the Jupytext notebook without outputs, followed by
  the committed figures; never executed here) — or, with ``docs_mode = "ci"``, a short stub page of
  the same name, so links resolve in both modes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import generate  # noqa: E402  (docs/generate.py, standard library only)

NOTEBOOKS = ["01_lm_stages", "02_regression_stages", "03_transient_ridge", "04_rllc_heads", "05_hessian_comparison"]
_DATA: dict = {}


def _data() -> dict:
    if not _DATA:
        _DATA.update(generate.load())
    return _DATA


def _uses_data(env) -> None:
    """Record that the page being read shows numbers or figures from the repository's data."""
    if not hasattr(env, "stagewise_data_docs"):
        env.stagewise_data_docs = set()
    env.stagewise_data_docs.add(env.docname)


def _data_digest() -> str:
    """A digest of everything the generated numbers and figure tables are read from."""
    payload = json.dumps(generate.load(), sort_keys=True, default=str)
    figures = "\n".join(str(p) for _, paths in generate.committed_figures() for p in paths.values())
    return hashlib.sha256((payload + figures).encode()).hexdigest()


def _outdated_by_data(app, env, added, changed, removed):
    """Pages whose JSON or figures changed are read again: Sphinx only sees their sources change,
    so an incremental build would otherwise keep stale numbers (which --check-html then rejects)."""
    digest = _data_digest()
    if getattr(env, "stagewise_data_digest", None) == digest:
        return []
    env.stagewise_data_digest = digest
    return sorted(d for d in getattr(env, "stagewise_data_docs", set()) if d in env.found_docs)


def _purge(app, env, docname):
    getattr(env, "stagewise_data_docs", set()).discard(docname)


def hl_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    _uses_data(inliner.document.settings.env)
    try:
        html = generate.span(_data(), text)
    except KeyError as exc:
        msg = inliner.reporter.error(f"headline number: {exc}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    return [nodes.raw(rawtext, html, format="html")], []


def _parse(directive: Directive, markdown: str) -> list[nodes.Node]:
    container = nodes.container(classes=["headline"])
    directive.state.nested_parse(StringList(markdown.splitlines(), source="generated"), directive.content_offset, container)
    return container.children


class HeadlineTable(Directive):
    required_arguments = 1

    def run(self):
        _uses_data(self.state.document.settings.env)
        name = self.arguments[0]
        if name not in generate.TABLES:
            raise self.error(f"no headline table {name!r} (have {', '.join(generate.TABLES)})")
        try:
            markdown = generate.TABLES[name](_data())
        except KeyError as exc:
            raise self.error(f"headline table {name}: {exc}") from None
        return _parse(self, markdown)


class CommittedFigures(Directive):
    """``{committed-figures} [NN]`` with an optional ``:profiles:`` option (space-separated; default
    ``cpu long``; ``variants`` = every ``figures/<profile>-<option>/`` folder)."""

    optional_arguments = 1
    option_spec = {"profiles": directives.unchanged}

    def run(self):
        env = self.state.document.settings.env
        _uses_data(env)
        depth = env.docname.count("/") + 1  # from docs/<docname> up to the repository root
        names = self.options.get("profiles", "cpu long").split()
        profiles = generate.variant_profiles() if names == ["variants"] else tuple(names)
        table = generate.figure_table("../" * depth, self.arguments[0] if self.arguments else None,
                                      profiles=profiles)
        node = nodes.container(classes=["figure-table"])
        self.state.nested_parse(StringList(table.splitlines(), source="generated"), self.content_offset, node)
        return [node]


def _notebook_pages(app) -> None:
    """Write docs/notebooks/NN_name.ipynb (full) or .md (ci); the other kind is removed."""
    import nbformat

    root, out = generate.ROOT, Path(app.srcdir) / "notebooks"
    mode = app.config.docs_mode
    for name in NOTEBOOKS:
        for ext in (".ipynb", ".md"):
            (out / f"{name}{ext}").unlink(missing_ok=True)
        source = root / "notebooks" / f"{name}.py"
        figures = "\n\n## The committed figures of this notebook\n\n```{committed-figures} " + name[:2] + "\n```\n"
        if mode == "ci":
            title = source.read_text().split("# # ", 1)[1].split("\n", 1)[0]
            (out / f"{name}.md").write_text(
                f"# {title}\n\n*Built in CI mode: the notebook itself is rendered by `make docs` only.* "
                f"Source: `notebooks/{name}.py`.\n{figures}")
            continue
        executed = [root / "executed" / p / f"{name}.ipynb" for p in ("cpu", "long")]
        executed = [p for p in executed if p.exists()]
        if executed:
            nb = nbformat.read(executed[0], as_version=4)
            note = f"*Rendered from the executed copy `{executed[0].relative_to(root)}` (its outputs as they were run).*"
        else:
            import jupytext

            nb = jupytext.read(source)
            note = (f"*Rendered from `notebooks/{name}.py` without outputs (no executed copy in `executed/`; "
                    "`make figures` makes one). The committed figures are at the end of the page.*")
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(note))
        nb.cells.append(nbformat.v4.new_markdown_cell(figures))
        nb.metadata.pop("jupytext", None)
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"c{i}"
        nbformat.write(nb, out / f"{name}.ipynb")


_LITERAL = re.compile(r"(``[^`]+``|`[^`]+`)")


def _escape_plain_text(app, what, name, obj, options, lines):
    """The docstrings are plain text in the papers' notation (|x|, P(b|a)) with reST literals; make
    the few constructs reST reads otherwise literal, without changing the docstrings themselves:
    pipes outside literals (reST substitutions), a literal glued to a word (``Module``s), and a
    paragraph that follows a bullet list with no blank line."""
    out, bullet_indent = [], None
    for line in lines:
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if bullet_indent is not None and stripped and indent <= bullet_indent and not stripped.startswith(("* ", "- ")):
            out.append("")
            bullet_indent = None
        if stripped.startswith(("* ", "- ")):
            bullet_indent = indent
        elif not stripped:
            bullet_indent = None
        if not stripped.startswith(("+-", "+=")) and not re.match(r"\s*\|.*\|\s*$", line):
            parts = _LITERAL.split(line)
            line = "".join(
                (p + ("\\ " if re.match(r"\w", parts[i + 1] if i + 1 < len(parts) else "") else ""))
                if p.startswith("`") else p.replace("|", "\\|") for i, p in enumerate(parts))
        out.append(line)
    lines[:] = out


def _canonical(target: str, current_module: str | None) -> tuple[str, str] | None:
    """(name, role) of what a reference into stagewise means: the object's defining module and
    name when it is documented there, else the module that holds an undocumented constant."""
    import importlib

    target = target.lstrip("~.")
    modules = [m for m in sorted(sys.modules) if m == "stagewise" or m.startswith("stagewise.")]
    if "." in target and target.startswith("stagewise."):
        owner, _, attr = target.rpartition(".")
        candidates = [owner]
    else:
        attr = target.rsplit(".", 1)[-1]
        candidates = ([current_module] if current_module else []) + modules
    for name in candidates:
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        if not hasattr(module, attr):
            continue
        obj = getattr(module, attr)
        home = getattr(obj, "__module__", None)
        if isinstance(home, str) and home.startswith("stagewise") and hasattr(obj, "__qualname__"):
            return f"{home}.{obj.__qualname__}", "obj"
        return name, "mod"  # a constant: link to the module that defines it
    return None


def _resolve_stagewise_refs(app, env, node, contnode):
    """References the docstrings write through a package (``stagewise.llc.estimate_llc``, defined
    in ``stagewise.llc.sampler``), by a bare name (``estimate_llc``), or to a module constant
    without a docstring: resolve to the object's canonical page (or its module's)."""
    if node.get("refdomain") != "py":
        return None
    found = _canonical(node["reftarget"], node.get("py:module"))
    if found is None:
        return None
    name, role = found
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, role, name, node, contnode)


def setup(app):
    app.add_config_value("docs_mode", os.environ.get("STAGEWISE_DOCS_MODE", "full"), "env")
    app.add_role("hl", hl_role)
    app.add_directive("headline-table", HeadlineTable)
    app.add_directive("committed-figures", CommittedFigures)
    app.connect("builder-inited", _notebook_pages)
    app.connect("env-get-outdated", _outdated_by_data)
    app.connect("env-purge-doc", _purge)
    app.connect("autodoc-process-docstring", _escape_plain_text)
    app.connect("missing-reference", _resolve_stagewise_refs)
    return {"version": "1", "parallel_read_safe": True}
