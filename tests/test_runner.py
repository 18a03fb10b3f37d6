from pathlib import Path

import jupytext
import pytest

from stagewise.runner import NotebookFailure, _parse_param, discover_notebooks, main, run_notebook

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))


def test_all_five_notebooks_exist_in_order():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]
    assert discover_notebooks(REPO / "notebooks") == NOTEBOOKS
    assert [p.stem for p in discover_notebooks(REPO / "notebooks", ["02"])] == ["02_regression_stages"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_has_one_parameters_cell_with_profile(path):
    nb = jupytext.read(path)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "profile = None" in tagged[0].source
    # the profile is resolved right after, so nbmake (no injection) runs the smoke profile
    assert any("default_profile()" in c.source for c in nb.cells)


def test_unknown_notebook_selection_lists_what_exists():
    with pytest.raises(ValueError, match="02_regression_stages"):
        discover_notebooks(REPO / "notebooks", ["99"])


def test_failing_cell_is_reported_with_notebook_and_cell(tmp_path):
    src = tmp_path / "07_broken.py"
    src.write_text(
        "# %% tags=[\"parameters\"]\nprofile = None\n\n# %%\nx = 1\n\n# %%\nraise RuntimeError('bad cell here')\n"
    )
    with pytest.raises(NotebookFailure) as info:
        run_notebook(src, "smoke", executed_dir=tmp_path / "out")
    msg = str(info.value)
    assert "07_broken.py" in msg and "RuntimeError: bad cell here" in msg
    assert "raise RuntimeError" in msg and (tmp_path / "out" / "07_broken.ipynb").exists()


def test_parameters_cell_is_required(tmp_path):
    src = tmp_path / "08_noparams.py"
    src.write_text("# %%\nx = 1\n")
    with pytest.raises(ValueError, match="parameters"):
        run_notebook(src, "smoke", executed_dir=tmp_path / "out")


def test_cli_rejects_a_bad_profile(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--profile", "turbo"])
    assert info.value.code == 2
    assert "smoke, cpu, paper" in capsys.readouterr().err


def test_param_parsing():
    assert _parse_param("seeds=[0, 1]") == ("seeds", [0, 1])
    assert _parse_param("name=abc") == ("name", "abc")
