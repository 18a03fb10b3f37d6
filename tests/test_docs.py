"""The documentation's numbers against the committed headline JSON (docs/generate.py).

Fast (no Sphinx): the pages' sources are rendered the way the Sphinx extension renders them and
every tagged number is checked against the JSON; a mutated copy of a JSON must make the check fail.
The Sphinx build itself (warnings as errors, no broken link or missing image) and the same check on
the built HTML run in CI (`.ci/run`: `make docs DOCS_MODE=ci`).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _generate():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


g = _generate()
DATA = g.load()
RESULT_PAGES = sorted((DOCS / "results").glob("0*.md"))


def test_every_reference_and_table_resolves():
    assert g.check_sources(DATA) == []


@pytest.mark.parametrize("page", RESULT_PAGES + [DOCS / "index.md"], ids=lambda p: p.name)
def test_rendered_page_agrees_with_its_json(page):
    rendered = g.render_markdown(page.read_text(), DATA)
    spans = g.SPAN.findall(rendered)
    assert len(spans) >= 10, f"{page.name}: only {len(spans)} generated numbers"
    assert g.check_spans(rendered, DATA) == []


def _copy_tree(tmp_path: Path) -> Path:
    for folder in ("figures", "data/runs", "benchmarks/results"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("*.png", "*.pdf", "*.pt", "*.csv"))
    return tmp_path


def test_a_page_that_disagrees_with_its_json_fails(tmp_path):
    page = g.render_markdown((DOCS / "results" / "05_hessian_comparison.md").read_text(), DATA)
    assert g.check_spans(page, DATA) == []
    root = _copy_tree(tmp_path)
    path = root / "figures" / "05_hessian_comparison.json"
    record = json.loads(path.read_text())
    record["toy_potentials"][0]["llc_estimate"] = 1.501  # the 3-d quadratic, as an old README had it
    path.write_text(json.dumps(record))
    problems = g.check_spans(page, g.load(root))
    assert any("quadratic_3d.llc_estimate" in p and "'1.548'" in p and "'1.501'" in p for p in problems), problems


def test_a_reference_the_json_lost_fails(tmp_path):
    page = g.render_markdown((DOCS / "results" / "02_regression_stages.md").read_text(), DATA)
    root = _copy_tree(tmp_path)
    path = root / "figures" / "02_regression_stages.json"
    record = json.loads(path.read_text())
    del record["reference_losses"]
    path.write_text(json.dumps(record))
    assert any("reference_losses" in p for p in g.check_spans(page, g.load(root)))


def test_the_known_drifts_come_out_as_the_json_says():
    text = "\n".join(g.render_markdown(p.read_text(), DATA, spans=False) for p in RESULT_PAGES)
    assert "1.548" in text and "within 0.03" not in text  # quadratic_3d, exact 1.5
    # the cpu boundaries with their intervals, as the JSON has them (once typed by hand and drifted)
    checked = 0
    for seed in ("seed_0", "seed_2", "seed_3"):
        for b in DATA["cpu/02"]["seeds"][seed]["boundaries_vs_paper"]:
            if b["detected"] is None:
                continue
            lo, hi = b["interval"]
            assert f"{g.fmt(b['detected'], 'int')} [{g.fmt(lo, 'int')}–{g.fmt(hi, 'int')}]" in text, (seed, b)
            checked += 1
    assert checked >= 6
    assert "1.554" in text and "ridge's 1.66" not in text  # reference_losses.ridge
    assert "0.16%" in text and not re.search(r"(?<![\d.])0\.8%", text)  # 8.2M of 5.12B tokens
    profiles = g.render_markdown((DOCS / "profiles.md").read_text(), DATA, spans=False)
    # notebook 01's cpu wall_time_s as the JSON has it (was typed as ≈ 43 min while the JSON said 3,188 s)
    assert g.fmt(DATA["cpu/01"]["wall_time_s"], "min") in profiles
    cache = g.render_markdown((DOCS / "guide" / "cache.md").read_text(), DATA, spans=False)
    assert "15,328 s / 3,776 s" in cache  # the long run's training: all pieces / the last piece


def test_format_rules():
    assert g.fmt(7201.4986) == "7,201" and g.fmt(1.5475, ".3f") == "1.548" and g.fmt(None) == "–"
    assert g.fmt(0.0016, ".2%") == "0.16%" and g.fmt(3776.4, "int") == "3,776" and g.fmt(15328, "h") == "4 h 15 min"
    assert g.fmt([10_101, 303_030], "len") == "2" and g.fmt([10_101, 303_030], "int") == "10,101, 303,030"
    assert g.lookup(DATA, "cpu/05:toy_potentials.potential=lau.llc_exact") == 0.25
    with pytest.raises(KeyError):
        g.lookup(DATA, "cpu/05:toy_potentials.potential=nonesuch.llc_exact")


def test_gallery_shows_every_committed_figure():
    # the gallery page's two tables: cpu | long, and the runs with a non-default model option
    table = g.figure_table("../") + g.figure_table("../", profiles=g.variant_profiles())
    pngs = [p for _, folder in g.profile_folders() for p in sorted(folder.glob("fig*.png"))]
    assert len(pngs) == DATA["derived"]["committed_pngs"]
    for png in pngs:
        assert f"(../{png.relative_to(ROOT).as_posix()})" in table, png
    for nb in ("01", "02", "03", "04", "05"):  # and each results page shows its notebook's
        assert g.figure_table("../../", nb).count("![") >= 6


def test_readme_verdict_block_is_in_sync():
    readme = (ROOT / "README.md").read_text()
    if g.README_START not in readme:
        pytest.skip("README.md has no verdict block (<!-- verdicts:start --> … <!-- verdicts:end -->)")
    assert g.readme_in_sync(ROOT / "README.md", DATA), "run: python docs/generate.py --readme"


def test_readme_block_rewrite(tmp_path):
    readme = tmp_path / "README.md"
    start, end, _ = g.README_BLOCKS["times"]
    readme.write_text(f"# x\n\n{g.README_START}\nSTALE\n{g.README_END}\n\nmid\n{start}\nSTALE\n{end}\nrest\n")
    assert not g.readme_in_sync(readme, DATA)
    assert g.rewrite_readme(readme, DATA)
    text = readme.read_text()
    assert g.readme_in_sync(readme, DATA) and text.endswith("rest\n") and "\nmid\n" in text and "STALE" not in text
    assert "[02](docs/results/02_regression_stages.md)" in text
    # the make figures time is the timed run's, read from its record
    run, cached = DATA["bench/make_figures_cpu_timings"], DATA["bench/make_figures_cpu_cached"]
    block = text.split(start)[1]
    assert g.fmt(run["wall_seconds_running"], "h") in block and g.fmt(cached["wall_seconds"], "int") + " s" in block
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        g.rewrite_readme(readme, DATA)


def test_docs_point_at_nothing_outside_the_repository():
    for path in DOCS.rglob("*"):
        if path.suffix in {".md", ".py", ".txt", ".css"} and "_autosummary" not in path.parts:
            text = path.read_text()
            assert "/work/shared" not in text and "shared/papers" not in text and not re.search(r"\bSPEC\b", text), path


@pytest.mark.slow
def test_own_model_example_runs_as_written(tmp_path):
    page = (DOCS / "guide" / "own_model.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    script = tmp_path / "own_model.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "STAGEWISE_CACHE": str(tmp_path / "cache"),
                              "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LLC:" in out.stdout and "forms at" in out.stdout
    llcs = [float(v) for v in re.search(r"LLC: \[(.*?)\]", out.stdout, re.S).group(1).split()]
    assert llcs[0] < 0.5 < 1.0 < llcs[-1] < 3.0  # rises from ~0 to a plateau, as the page says


def test_link_check_finds_broken_links_and_remote_assets(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "ok.html").write_text('<img src="a.png"><a href="ok.html#x">x</a><a href="https://arxiv.org">p</a>')
    assert g.check_links(tmp_path) == []
    (tmp_path / "bad.html").write_text('<img src="missing.png"><script src="https://cdn.example/x.js"></script>')
    problems = g.check_links(tmp_path)
    assert any("broken link missing.png" in p for p in problems) and any("another host" in p for p in problems)


def test_notebook_pages_use_an_executed_copy_when_there_is_one(tmp_path, monkeypatch):
    pytest.importorskip("docutils")  # the docs extra
    import types

    import jupytext
    import nbformat

    sys.path.insert(0, str(DOCS / "_ext"))
    import headline

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "executed" / "cpu").mkdir(parents=True)
    (tmp_path / "docs" / "notebooks").mkdir(parents=True)
    for nb in headline.NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / f"{nb}.py", tmp_path / "notebooks")
    executed = jupytext.read(ROOT / "notebooks" / "05_hessian_comparison.py")
    code = next(c for c in executed.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="an output as it was run\n")]
    nbformat.write(executed, tmp_path / "executed" / "cpu" / "05_hessian_comparison.ipynb")
    monkeypatch.setattr(headline.generate, "ROOT", tmp_path)
    app = types.SimpleNamespace(srcdir=str(tmp_path / "docs"), config=types.SimpleNamespace(docs_mode="full"))
    headline._notebook_pages(app)
    pages = tmp_path / "docs" / "notebooks"
    with_outputs = nbformat.read(pages / "05_hessian_comparison.ipynb", as_version=4)
    assert any("an output as it was run" in str(c.get("outputs", "")) for c in with_outputs.cells)
    without = nbformat.read(pages / "02_regression_stages.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in without.cells)
    assert "committed-figures} 02" in without.cells[-1].source  # the committed figures close the page
    app.config.docs_mode = "ci"  # CI mode: stubs of the same names, the notebooks gone
    headline._notebook_pages(app)
    assert sorted(p.name for p in pages.iterdir()) == [f"{nb}.md" for nb in headline.NOTEBOOKS]
