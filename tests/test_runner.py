import json
import os
from pathlib import Path

import jupytext
import pytest

from stagewise.profiles import PROFILE_NAMES
from stagewise.runner import (NotebookFailure, NotebookTiming, _parse_param, dependency_chains, discover_notebooks,
                              job_environment, job_threads, main, run_notebook, schedule, timings_table)

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_with_its_help(path):
    """`papermill --help-notebook` lists what the parameters cell assigns (a second `=` on a line,
    even in its comment, makes papermill skip that parameter with a warning)."""
    import ast

    from papermill.translators import PythonTranslator

    cell = next(c for c in jupytext.read(path).cells if "parameters" in c.metadata.get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    parsed = PythonTranslator.inspect(cell)
    assert [p.name for p in parsed] == assigned
    assert all(p.help for p in parsed), "every parameter carries a comment saying what it does"


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
    assert ", ".join(PROFILE_NAMES) in capsys.readouterr().err


def test_param_parsing():
    assert _parse_param("seeds=[0, 1]") == ("seeds", [0, 1])
    assert _parse_param("name=abc") == ("name", "abc")


def test_dependent_notebooks_share_a_chain_after_the_notebook_they_read():
    chains = dependency_chains(NOTEBOOKS)
    assert [[p.stem[:2] for p in c] for c in chains] == [["01", "04"], ["02", "05"], ["03"]]
    # a dependent notebook selected without its dependency runs on its own
    only = [p for p in NOTEBOOKS if p.stem[:2] in ("03", "04", "05")]
    assert [[p.stem[:2] for p in c] for c in dependency_chains(only)] == [["03"], ["04"], ["05"]]


def test_schedule_runs_the_wide_notebook_alone_before_the_chains():
    wide, narrow = schedule(NOTEBOOKS)
    assert [[p.stem[:2] for p in c] for c in wide] == [["03"]]
    assert [[p.stem[:2] for p in c] for c in narrow] == [["01", "04"], ["02", "05"]]
    assert schedule([p for p in NOTEBOOKS if p.stem[:2] != "03"])[0] == []


def test_job_threads_never_oversubscribe():
    for jobs in range(1, 20):
        for cores in (1, 2, 3, 16):
            j, t = job_threads(jobs, cores)
            assert 1 <= j <= min(jobs, cores) and t >= 1 and j * t <= cores
    assert job_threads(3, 16) == (3, 5) and job_threads(4, 2) == (2, 1)
    with pytest.raises(ValueError, match="jobs"):
        job_threads(0, 2)
    env = job_environment(5, base={"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "5"
    assert env["PATH"] == "/bin"


def test_timings_table_lists_every_notebook_with_status():
    rows = [NotebookTiming("01_a", 90.0, "ok"), NotebookTiming("02_b", 30.0, "failed", "boom"),
            NotebookTiming("03_c", 0.0, "not run")]
    text = timings_table(rows, wall_seconds=100.0)
    lines = text.splitlines()
    assert lines[0].split() == ["notebook", "status", "minutes", "seconds"]
    assert lines[2].split() == ["01_a", "ok", "1.5", "90"] and lines[4].split() == ["03_c", "not", "run", "0.0", "0"]
    assert "total (sum)" in text and "120" in text and "wall time" in text


def _notebook(path, body):
    path.write_text('# %% tags=["parameters"]\nprofile = None\n\n# %%\n' + body)


def test_each_kernel_gets_the_allocator_settings_and_its_own_run_token(tmp_path, monkeypatch):
    """What a notebook's kernel inherits from stagewise-figures: glibc's allocator settings
    (stagewise.hardware.MALLOC_SETTINGS, unless the user set their own) and a run token of its own,
    under which its cache writes are counted apart from another notebook's."""
    from stagewise.hardware import MALLOC_SETTINGS

    for name in MALLOC_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")  # a user's own value is kept
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    seen = tmp_path / "seen"
    for name in ("01_a", "02_b"):
        _notebook(nbs / f"{name}.py", "import json, os\n"
                  f"open({str(seen / name)!r}, 'w').write(json.dumps({{k: os.environ.get(k) for k in "
                  "('MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_', 'STAGEWISE_RUN_TOKEN')}))\n")
    seen.mkdir()
    assert main(["--profile", "smoke", "--notebooks", str(nbs), "--executed-dir", str(tmp_path / "out")]) == 0
    a, b = (json.loads((seen / name).read_text()) for name in ("01_a", "02_b"))
    assert a["MALLOC_MMAP_MAX_"] == MALLOC_SETTINGS["MALLOC_MMAP_MAX_"] and a["MALLOC_TRIM_THRESHOLD_"] == "12345"
    assert a["STAGEWISE_RUN_TOKEN"] and b["STAGEWISE_RUN_TOKEN"] and a["STAGEWISE_RUN_TOKEN"] != b["STAGEWISE_RUN_TOKEN"]


def test_sequential_run_writes_timings_json_and_stops_at_a_failure(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_ok.py", "x = 1\n")
    _notebook(nbs / "02_bad.py", "raise RuntimeError('bad cell')\n")
    _notebook(nbs / "03_after.py", "x = 3\n")
    out = tmp_path / "out"
    assert main(["--profile", "smoke", "--notebooks", str(nbs), "--executed-dir", str(out)]) == 1
    record = json.loads((out / "timings.json").read_text())
    assert record["profile"] == "smoke" and record["jobs"] == 1
    status = {r["notebook"]: r["status"] for r in record["notebooks"]}
    assert status == {"01_ok": "ok", "02_bad": "failed", "03_after": "not run"}
    assert "RuntimeError: bad cell" in record["notebooks"][1]["error"]
    assert record["notebooks"][0]["seconds"] > 0
    printed = capsys.readouterr().out
    assert "01_ok" in printed and "failed" in printed and "not run" in printed


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores and Linux affinity")
def test_parallel_jobs_split_threads_and_order_dependent_notebooks(tmp_path):
    """Two jobs on two cores: 03 (wide) first, alone on both cores with two threads; then one thread
    each (environment and torch inside the kernel), each job pinned to its own core, and 04 starts
    only after 01 (whose cache it reads) has finished."""
    nbs, log = tmp_path / "nbs", tmp_path / "log"
    nbs.mkdir()
    log.mkdir()
    body = ("import json, os, time, torch\n"
            "start = time.time()\n"
            "time.sleep(1.0)\n"
            f"json.dump({{'start': start, 'end': time.time(), 'omp': os.environ.get('OMP_NUM_THREADS'), "
            f"'torch': torch.get_num_threads(), 'cores': sorted(os.sched_getaffinity(0))}}, "
            f"open(os.path.join({str(log)!r}, NAME + '.json'), 'w'))\n")
    for stem in ("01_lm_stages", "02_regression_stages", "03_transient_ridge", "04_rllc_heads"):
        _notebook(nbs / f"{stem}.py", f"NAME = {stem!r}\n" + body)
    out = tmp_path / "out"
    assert main(["--profile", "smoke", "--notebooks", str(nbs), "--executed-dir", str(out), "--jobs", "2"]) == 0
    seen = {p.stem: json.loads(p.read_text()) for p in log.glob("*.json")}
    assert set(seen) == {"01_lm_stages", "02_regression_stages", "03_transient_ridge", "04_rllc_heads"}
    wide = seen.pop("03_transient_ridge")
    assert wide["omp"] == "2" and wide["torch"] == 2 and len(wide["cores"]) == 2
    assert all(s["start"] >= wide["end"] for s in seen.values())
    assert all(s["omp"] == "1" and s["torch"] == 1 and len(s["cores"]) == 1 for s in seen.values())
    assert seen["04_rllc_heads"]["start"] >= seen["01_lm_stages"]["end"]
    assert seen["01_lm_stages"]["cores"] == seen["04_rllc_heads"]["cores"] != seen["02_regression_stages"]["cores"]
    record = json.loads((out / "timings.json").read_text())
    assert record["jobs"] == 2 and [r["status"] for r in record["notebooks"]] == ["ok"] * 4
    assert [r["threads"] for r in record["notebooks"]] == [1, 1, 2, 1]


def test_plan_flag_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--profile", "smoke", "--plan", "--plan-no-calibration", "--only", "02", "--executed-dir",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## 02_regression_stages" in printed and "(model)" in printed and "01_lm_stages" not in printed
    report = json.loads((out / "plan.json").read_text())
    assert report["profile"] == "smoke" and [n["notebook"] for n in report["notebooks"]] == ["02_regression_stages"]
    assert not (out / "timings.json").exists()


def test_notebook_helper_lines_and_notebook_04s_helper(tmp_path):
    from stagewise.runner import notebook_helper, notebook_helpers, run_helper  # noqa: F401

    nb = tmp_path / "07_x.py"
    _notebook(nb, "# a comment\n# stagewise-helper: pkg.mod:work_hard\nx = 1\n")
    assert notebook_helper(nb) == "pkg.mod:work_hard"
    _notebook(nb, "x = 1  # stagewise-helper: pkg.mod:work_hard\n")  # not a line of its own: nothing declared
    assert notebook_helper(nb) is None
    # notebook 04 declares its sweeps' helper, which exists; the others declare none
    helpers = notebook_helpers(NOTEBOOKS, {})
    assert helpers == {"04_rllc_heads": "stagewise.runs:rllc_sweep_helper"}
    import stagewise.runs

    assert callable(stagewise.runs.rllc_sweep_helper)
    # a parameter override may change what the notebook computes: no helper then
    assert notebook_helpers(NOTEBOOKS, {"dask_scheduler": "tcp://x:1"}) == {}


@pytest.mark.slow
def test_an_idle_job_runs_the_notebooks_helper_until_the_notebook_ends(tmp_path, monkeypatch):
    """`--jobs 2 --only` one notebook that declares a helper: the second job runs the helper (with
    the profile, pinned to its own cores) while the notebook runs, and stops it when the notebook
    ends; timings.json lists it. Both jobs are put on this process's first core, so the test needs one."""
    import stagewise.runner as runner

    core = runner.available_cores()[0]
    monkeypatch.setattr(runner, "available_cores", lambda: [core, core])
    monkeypatch.setattr(runner, "HELPER_POLL_S", 0.2)
    mods, nbs, log = tmp_path / "mods", tmp_path / "nbs", tmp_path / "log"
    for d in (mods, nbs, log):
        d.mkdir()
    (mods / "fake_helper.py").write_text(
        "import json, os, sys, time\n"
        "def work(profile):\n"
        f"    json.dump({{'profile': profile, 'pid': os.getpid(), 'cores': sorted(os.sched_getaffinity(0))}}, "
        f"open({str(log / 'helper.json')!r}, 'w'))\n"
        "    time.sleep(600)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(mods), os.environ.get("PYTHONPATH", "")]))
    _notebook(nbs / "07_helped.py",
              "# stagewise-helper: fake_helper:work\n"
              "import json, os, time\n"
              f"path = {str(log / 'helper.json')!r}\n"
              "deadline = time.time() + 120\n"
              "while not os.path.exists(path) and time.time() < deadline:\n"
              "    time.sleep(0.2)\n"
              "time.sleep(0.5)\n"
              f"json.dump({{'saw_helper': os.path.exists(path)}}, open({str(log / 'nb.json')!r}, 'w'))\n")
    out = tmp_path / "out"
    assert main(["--profile", "smoke", "--notebooks", str(nbs), "--executed-dir", str(out), "--jobs", "2"]) == 0
    helper = json.loads((log / "helper.json").read_text())
    assert json.loads((log / "nb.json").read_text()) == {"saw_helper": True}
    assert helper["profile"] == "smoke" and helper["cores"] == [core]
    with pytest.raises(ProcessLookupError):  # stopped when the notebook ended, not left running
        os.kill(helper["pid"], 0)
    record = json.loads((out / "timings.json").read_text())
    assert [r["status"] for r in record["notebooks"]] == ["ok"]
    assert [(h["notebook"], h["status"], h["cores"]) for h in record["helpers"]] == [("07_helped", "stopped", [core])]
    # with a parameter override the same run has no helper (and one job)
    (log / "helper.json").unlink()
    _notebook(nbs / "07_helped.py", "# stagewise-helper: fake_helper:work\nx = 1\n")
    assert main(["--profile", "smoke", "--notebooks", str(nbs), "--executed-dir", str(out), "--jobs", "2",
                 "-p", "x=2"]) == 0
    assert not (log / "helper.json").exists()
    assert json.loads((out / "timings.json").read_text())["helpers"] == []
