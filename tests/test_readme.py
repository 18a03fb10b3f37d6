"""The README as a front door: short, every local link resolves, nothing outside the repository,
its example runs as written; LICENSE and CITATION.cff are what pyproject and CFF 1.2.0 say."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE_HEADING = "## LLC, stages and essential dynamics of your own model"
# links [text](target) / images ![alt](target), and HTML src= / href= attributes
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:src|href)=\"([^\"]+)\"")
OUTSIDE = re.compile(r"\bSPEC\b|shared/|/work/")


def _local_targets(text: str) -> list[str]:
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def _example_block(text: str) -> str:
    section = text.split(EXAMPLE_HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"the example section must hold exactly one python block, found {len(blocks)}"
    return blocks[0]


def test_readme_fits_on_a_few_screens():
    assert len(README.read_text().splitlines()) <= 250


@pytest.mark.parametrize("name", ["README.md", "data/README.md"])
def test_local_links_resolve(name):
    path = ROOT / name
    targets = _local_targets(path.read_text())
    assert targets, f"{name}: no local links found (the link pattern is broken?)"
    missing = [t for t in targets if not (path.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{name} links to missing files: {missing}"


def test_link_pattern_sees_links_and_images():
    text = '[a](docs/x.md#y) ![b](fig.png "t") [c](https://e.org) <img src="z.png"> [d](#top)'
    assert _local_targets(text) == ["docs/x.md#y", "fig.png", "z.png"]


@pytest.mark.parametrize("name", ["README.md", "data/README.md", "CITATION.cff", "LICENSE"])
def test_nothing_points_outside_the_repository(name):
    hits = [line for line in (ROOT / name).read_text().splitlines() if OUTSIDE.search(line)]
    assert not hits, f"{name} refers to files outside the repository: {hits}"


def test_verdict_block_markers():
    text = README.read_text()
    start, end = "<!-- verdicts:start -->", "<!-- verdicts:end -->"
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)
    rows = [r for r in text.split(start)[1].split(end)[0].splitlines() if r.startswith("|")]
    assert len(rows) >= 3 and all("docs/results/" in r for r in rows[2:]), "one linked row per claim"


def test_licence_is_mit_as_pyproject_says():
    assert re.search(r'^license = \{ text = "MIT" \}$', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the stagewise authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_citation_cff_is_valid_cff_1_2_0():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors"):  # required by CFF 1.2.0
        assert cff.get(key), f"CITATION.cff lacks {key}"
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["license"] == "MIT"
    assert all(a.get("name") or a.get("family-names") for a in cff["authors"])
    refs = {r["title"]: r for r in cff["references"]}
    arxiv = {"Loss Landscape Degeneracy and Stagewise Development in Transformers": "2402.02364",
             "The Developmental Landscape of In-Context Learning": "2402.02364v1",
             "Dynamics of Transient Structure in In-Context Linear Regression Transformers": "2501.17745",
             "Differentiation and Specialization of Attention Heads via the Refined Local Learning Coefficient":
                 "2410.02984"}
    assert set(arxiv) <= set(refs)
    for title, number in arxiv.items():
        ref = refs[title]
        assert ref["type"] and isinstance(ref["year"], int) and ref["authors"], title
        assert all(a.get("family-names") and a.get("given-names") for a in ref["authors"]), title
        assert ref["url"] == f"https://arxiv.org/abs/{number}", title
        assert {"type": "other", "value": f"arXiv:{number}", "description": "arXiv identifier"} in ref["identifiers"]


def test_readme_example_runs_as_written():
    """The example block, exec'd as it stands (≤ 20 lines): λ̂ at 16 checkpoints, stages, ED forms."""
    code = _example_block(README.read_text())
    assert len(code.splitlines()) <= 20
    namespace: dict = {"__name__": "readme_example"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md example", "exec"), namespace)  # noqa: S102 - the README's own code
    assert "direction" in out.getvalue() and "corroborated" in out.getvalue()
    llc, stages, ed, steps = namespace["llc"], namespace["stages"], namespace["ed"], np.array(namespace["steps"])
    lam = np.array([r.llc_mean for r in llc])
    assert len(llc) == len(namespace["checkpoints"]) == 16 and np.all(np.isfinite(lam))
    flagged = sum(bool(r.diagnostics) or r.unconverged for r in llc)
    assert flagged <= 2, f"{flagged} estimates flagged: checkpoints past the first saddle should not be"
    # λ̂ steps up with the rank the network has learned: rank 1 (to step ~210), 2 (~350-700), 3 (from ~1,200)
    rank1, rank2, rank3 = (lam[(steps >= a) & (steps <= b)].mean() for a, b in ((150, 211), (355, 709), (1191, 2000)))
    assert rank1 + 0.1 < rank2 < rank3, (rank1, rank2, rank3)
    assert all(150 < b < 2000 for b in stages.boundaries) and len(stages.stages) == len(stages.boundaries) + 1
    assert len(ed.forms) >= 1 and all(150 < f.step < 2000 for f in ed.forms)
