"""``stagewise-figures``: execute the notebooks with Papermill and regenerate every figure.

    stagewise-figures                      # all notebooks at the default cpu profile
    stagewise-figures --profile smoke --only 02 --only 05
    stagewise-figures --only 02 -p seeds='[0, 1]'
    stagewise-figures --jobs 3             # notebooks in parallel, cores split between the jobs
    stagewise-figures --profile paper --plan   # the work, memory and time of a profile; trains nothing

Each ``notebooks/NN_name.py`` (Jupytext percent format) is converted in memory, its ``parameters``
cell is overridden by Papermill, and the executed notebook is written to
``executed/<profile>/NN_name.ipynb`` (ignored by git) for inspection. At the end a table of
seconds and status per notebook is printed and written to ``executed/<profile>/timings.json``.

``--jobs N`` runs up to N notebooks at once, each in its own process with ``cores // N`` threads
(OMP/MKL/OpenBLAS thread variables, which torch reads at start-up) and, on Linux, pinned to its own
cores. A notebook that reads another's cache (04 after 01, 05 after 02:
:data:`stagewise.plan.DEPENDENCIES`) runs after it in the same job, never beside it: the training
cache is not locked against two writers. A notebook that spreads its own work over one worker
process per core (03: :data:`stagewise.plan.WIDE`) runs first, alone, on all the cores, and the other
chains after it side by side (:func:`schedule`): on 2 cores this keeps both busy to the end instead of
leaving 03 to run on one core after the longest chain. A job left without a notebook helps one that
declares a helper (a ``# stagewise-helper: module:function`` line; 04's runs its LLC sweeps from the
other end, sharing them through the cache) until that notebook ends — so ``--jobs 2 --only 04``
uses both cores too. Helpers run only when no ``-p`` parameter changes what the notebook computes.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stagewise.profiles import DEFAULT_PROFILE, PROFILE_NAMES, check_profile

__all__ = ["NotebookFailure", "NotebookTiming", "discover_notebooks", "run_notebook", "dependency_chains",
           "schedule", "job_threads", "job_environment", "notebook_helper", "timings_table", "write_timings", "main"]

CORES_VARIABLE = "STAGEWISE_JOB_CORES"  # cores a --jobs child pins itself to (comma-separated)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")

log = logging.getLogger(__name__)

# A notebook may declare work that another core can do beside it: a top-level comment line
# "# stagewise-helper: module:function"; the function is called with the profile name.
HELPER_LINE = re.compile(r"^# stagewise-helper: ([A-Za-z_][\w.]*:[A-Za-z_]\w*)[ \t]*$", re.MULTILINE)
HELPER_POLL_S = 2.0  # how often an idle job looks for a notebook to help, and a helper's notebook for its end


@dataclass
class NotebookFailure(Exception):
    notebook: str
    cell: int | None
    source: str
    error: str
    executed_path: Path

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "before any cell ran"
        first = self.source.strip().splitlines()[0] if self.source.strip() else ""
        return (f"notebook {self.notebook} failed in {where} ({first!r}): {self.error}\n"
                f"  executed notebook with the traceback: {self.executed_path}")


def repo_root() -> Path:
    from stagewise.cache import _repo_root

    root = _repo_root()
    if root is None:
        raise RuntimeError("stagewise-figures must run from a stagewise checkout (notebooks/ not found)")
    return root


def discover_notebooks(notebook_dir: Path, only: list[str] | None = None) -> list[Path]:
    """Notebooks ``NN_*.py`` in order; ``only`` selects by number prefix or name (e.g. '02')."""
    paths = sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.py"))
    if only:
        chosen = [p for p in paths if any(p.stem == o or p.stem.startswith(o) for o in only)]
        missing = [o for o in only if not any(p.stem == o or p.stem.startswith(o) for p in paths)]
        if missing:
            names = ", ".join(p.stem for p in paths)
            raise ValueError(f"--only {missing} matches no notebook; available: {names}")
        return chosen
    return paths


def run_notebook(path: Path, profile: str, parameters: dict | None = None,
                 executed_dir: Path | None = None, kernel_name: str = "python3") -> Path:
    """Execute one Jupytext notebook with Papermill; raises :class:`NotebookFailure` on error."""
    import jupytext
    import nbformat
    import papermill as pm

    path = Path(path)
    executed_dir = Path(executed_dir or repo_root() / "executed" / profile)
    executed_dir.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(path)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ValueError(f"notebook {path.name} has no cell tagged 'parameters'")
    source_nb = executed_dir / f".{path.stem}.input.ipynb"
    nbformat.write(nb, source_nb)
    out = executed_dir / f"{path.stem}.ipynb"
    params = {"profile": profile, **(parameters or {})}
    from stagewise.cache import new_run

    new_run()  # the kernel and its workers count their cache writes apart from other notebooks'
    try:
        pm.execute_notebook(str(source_nb), str(out), parameters=params, kernel_name=kernel_name, language="python",
                            cwd=str(path.parent), progress_bar=False, log_output=False)
    except pm.PapermillExecutionError as exc:
        executed = nbformat.read(out, as_version=4)
        # papermill adds an error banner cell; the failing cell is the one holding an error output
        failed = [c for c in executed.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        src = failed[0].source if failed else ""
        raise NotebookFailure(path.name, exc.exec_count, src, f"{exc.ename}: {exc.evalue}", out) from None
    finally:
        source_nb.unlink(missing_ok=True)
    return out


def _parse_param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"parameter must look like name=value, got {text!r}")
    name, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare string
    return name.strip(), parsed


# ------------------------------------------------------------------------------------ timings


@dataclass
class NotebookTiming:
    """One notebook's outcome: ``status`` is 'ok', 'failed' or 'not run' (an earlier failure stopped
    it); ``seconds`` its wall time (0 when not run); ``error`` the failure message."""

    notebook: str
    seconds: float
    status: str
    error: str = ""
    threads: int | None = None


def timings_table(timings: list[NotebookTiming], wall_seconds: float | None = None) -> str:
    """A plain-text table: notebook, status, minutes, seconds; a total row (sum, and wall time if given)."""
    name_w = max([len("notebook")] + [len(t.notebook) for t in timings])
    lines = [f"{'notebook':<{name_w}}  {'status':<7}  {'minutes':>8}  {'seconds':>8}",
             f"{'-' * name_w}  {'-' * 7}  {'-' * 8}  {'-' * 8}"]
    for t in timings:
        lines.append(f"{t.notebook:<{name_w}}  {t.status:<7}  {t.seconds / 60:8.1f}  {t.seconds:8.0f}")
    total = sum(t.seconds for t in timings)
    lines.append(f"{'total (sum)':<{name_w}}  {'':<7}  {total / 60:8.1f}  {total:8.0f}")
    if wall_seconds is not None:
        lines.append(f"{'wall time':<{name_w}}  {'':<7}  {wall_seconds / 60:8.1f}  {wall_seconds:8.0f}")
    return "\n".join(lines)


def write_timings(path: Path, profile: str, timings: list[NotebookTiming], jobs: int, wall_seconds: float,
                  helpers: list[dict] | None = None) -> Path:
    """``timings.json``: profile, jobs, wall and summed seconds, one record per notebook, and the
    helpers that ran beside them ({notebook, cores, seconds, status})."""
    from stagewise.cache import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"profile": profile, "jobs": jobs, "wall_seconds": wall_seconds,
              "total_seconds": sum(t.seconds for t in timings), "written": time.strftime("%Y-%m-%d %H:%M:%S"),
              "notebooks": [asdict(t) for t in timings], "helpers": list(helpers or [])}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------ parallel jobs


def dependency_chains(notebooks: list[Path]) -> list[list[Path]]:
    """The selected notebooks grouped into chains that run in order: a notebook that reads another's
    cache (:data:`stagewise.plan.DEPENDENCIES`) joins the chain of that notebook when both are
    selected; chains are independent of each other and may run concurrently."""
    from stagewise.plan import DEPENDENCIES

    chains: list[list[Path]] = []
    where: dict[str, int] = {}
    for nb in notebooks:
        dep = DEPENDENCIES.get(nb.stem)
        if dep in where:
            chains[where[dep]].append(nb)
            where[nb.stem] = where[dep]
        else:
            where[nb.stem] = len(chains)
            chains.append([nb])
    return chains


def schedule(notebooks: list[Path]) -> tuple[list[list[Path]], list[list[Path]]]:
    """(wide, narrow): the dependency chains of ``notebooks`` split into those led by a notebook of
    :data:`stagewise.plan.WIDE` (run one at a time, each on all the cores) and the rest (run side by
    side afterwards, ``cores // jobs`` threads each)."""
    from stagewise.plan import WIDE

    chains = dependency_chains(notebooks)
    wide = [c for c in chains if c[0].stem in WIDE]
    return wide, [c for c in chains if c[0].stem not in WIDE]


def notebook_helper(nb: Path) -> str | None:
    """The ``module:function`` that ``nb`` declares an idle core may run beside it (its
    ``# stagewise-helper:`` line), or None."""
    match = HELPER_LINE.search(nb.read_text())
    return match.group(1) if match else None


def run_helper(spec: str, profile: str) -> None:
    """Call the helper ``spec`` ('module:function') with ``profile``."""
    module, _, name = spec.partition(":")
    getattr(importlib.import_module(module), name)(profile)


def available_cores() -> list[int]:
    """The cores this process may run on (its affinity mask on Linux, else 0..cpu_count-1)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def job_threads(jobs: int, cores: int) -> tuple[int, int]:
    """(jobs, threads per job) for ``jobs`` concurrent notebooks on ``cores`` cores: never more jobs
    than cores, and threads = cores // jobs, so jobs × threads <= cores."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    jobs = min(jobs, cores)
    return jobs, cores // jobs


def job_environment(threads: int, base: dict | None = None) -> dict[str, str]:
    """The environment of one job's kernel: every BLAS/OpenMP thread variable set to ``threads``
    (torch sizes its intra-op pool from OMP_NUM_THREADS when it starts)."""
    env = dict(os.environ if base is None else base)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    env["STAGEWISE_JOB_THREADS"] = str(threads)
    return env


def _child_command(nb: Path, profile: str, params: dict, executed_dir: Path | None, notebook_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "stagewise.runner", "--profile", profile, "--only", nb.stem, "--notebooks",
           str(notebook_dir), "--child"]
    if executed_dir is not None:
        cmd += ["--executed-dir", str(executed_dir)]
    for name, value in params.items():
        cmd += ["-p", f"{name}={value!r}"]
    return cmd


def notebook_helpers(notebooks: list[Path], params: dict) -> dict[str, str]:
    """{stem: helper spec} of the ``notebooks`` that declare one — none when ``params`` override
    anything (a helper recomputes the notebook's work from the profile alone)."""
    if params:
        return {}
    return {nb.stem: spec for nb in notebooks if (spec := notebook_helper(nb))}


def run_parallel(notebooks: list[Path], profile: str, params: dict, executed_dir: Path, jobs: int,
                 notebook_dir: Path, helper_log: list | None = None) -> list[NotebookTiming]:
    """Run ``notebooks`` on up to ``jobs`` concurrent jobs (:func:`schedule`): the wide chains first,
    one at a time on all the cores, then the other dependency chains side by side, each notebook in
    its own process with its job's threads and cores; a failure stops only its own chain. A job with
    no chain left helps a running notebook that declares a helper (:func:`notebook_helper`); each
    help is appended to ``helper_log`` ({notebook, cores, seconds, status})."""
    cores = available_cores()
    wide, narrow = schedule(notebooks)
    helpers = notebook_helpers(notebooks, params)
    results: dict[str, NotebookTiming] = {}
    lock = threading.Lock()
    helper_log = [] if helper_log is None else helper_log
    if wide:
        log.info("%d wide chain(s) first, each alone on %d core(s)", len(wide), len(cores))
        _run_chains(wide, 1, cores, profile, params, executed_dir, notebook_dir, results, lock, {}, helper_log)
    if narrow:
        _run_chains(narrow, jobs, cores, profile, params, executed_dir, notebook_dir, results, lock, helpers,
                    helper_log)
    return [results[nb.stem] for nb in notebooks]


def _helper_command(spec: str, profile: str) -> list[str]:
    return [sys.executable, "-m", "stagewise.runner", "--profile", profile, "--helper", spec]


def _run_chains(chains: list[list[Path]], jobs: int, cores: list[int], profile: str, params: dict,
                executed_dir: Path, notebook_dir: Path, results: dict, lock: threading.Lock,
                helpers: dict[str, str], helper_log: list) -> None:
    """Run ``chains`` on ``min(jobs, cores, chains + chains led by a helped notebook)`` slots of
    ``cores // jobs`` pinned cores each; a slot with no chain left runs helpers (:func:`_help`)."""
    jobs, threads = job_threads(jobs, len(cores))
    # a chain that starts with a notebook declaring a helper gets a second slot to run it
    jobs = min(jobs, len(chains) + sum(c[0].stem in helpers for c in chains))
    log.info("%d chain(s) on %d job(s) x %d thread(s)", len(chains), jobs, threads)
    work: queue.Queue = queue.Queue()
    for chain in chains:
        work.put(chain)
    state = {"chains_left": len(chains), "running": set(), "helped": set()}

    def slot(k: int) -> None:
        mine = cores[k * threads:(k + 1) * threads]
        env = job_environment(threads)
        env[CORES_VARIABLE] = ",".join(map(str, mine))  # the child pins itself (and so its kernel) to them
        while True:
            try:
                chain = work.get_nowait()
            except queue.Empty:
                if helpers:
                    _help(k, mine, env, profile, executed_dir, helpers, state, lock, helper_log)
                return
            try:
                failed = None
                for nb in chain:
                    if failed is not None:
                        with lock:
                            results[nb.stem] = NotebookTiming(nb.stem, 0.0, "not run", f"after {failed} failed", threads)
                        continue
                    logfile = executed_dir / f"{nb.stem}.log"
                    logfile.parent.mkdir(parents=True, exist_ok=True)
                    log.info("start %s (job %d, cores %s)", nb.stem, k, mine)
                    t0 = time.perf_counter()
                    with lock:
                        state["running"].add(nb.stem)
                    try:
                        with open(logfile, "w") as fh:
                            proc = subprocess.run(_child_command(nb, profile, params, executed_dir, notebook_dir),
                                                  env=env, stdout=fh, stderr=subprocess.STDOUT)
                    finally:
                        with lock:
                            state["running"].discard(nb.stem)
                    secs = time.perf_counter() - t0
                    if proc.returncode == 0:
                        timing = NotebookTiming(nb.stem, secs, "ok", threads=threads)
                    else:
                        tail = logfile.read_text(errors="replace").strip().splitlines()[-3:]
                        timing = NotebookTiming(nb.stem, secs, "failed", " | ".join(tail) + f" (log: {logfile})", threads)
                        failed = nb.stem
                    log.info("%s %s in %.0f s", timing.status, nb.stem, secs)
                    with lock:
                        results[nb.stem] = timing
            finally:  # a chain that raised has ended too: helpers must not wait for it
                with lock:
                    state["chains_left"] -= 1

    workers = [threading.Thread(target=slot, args=(k,), daemon=True) for k in range(jobs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def _help(k: int, cores: list[int], env: dict, profile: str, executed_dir: Path, helpers: dict[str, str],
          state: dict, lock: threading.Lock, helper_log: list) -> None:
    """Slot ``k``, out of chains: until every chain has ended, run the helper of each notebook that
    declares one while that notebook runs (once per notebook), pinned to this slot's ``cores``; the
    helper is stopped when its notebook ends (what it finished is in the cache)."""
    while True:
        with lock:
            if state["chains_left"] == 0:
                return
            target = next((nb for nb in sorted(state["running"]) if nb in helpers and nb not in state["helped"]), None)
            if target is not None:
                state["helped"].add(target)
        if target is None:
            time.sleep(HELPER_POLL_S)
            continue
        logfile = executed_dir / f"{target}.helper.log"
        log.info("job %d helps %s on cores %s (%s)", k, target, cores, helpers[target])
        t0 = time.perf_counter()
        with open(logfile, "w") as fh:
            helper = subprocess.Popen(_helper_command(helpers[target], profile), env=env, stdout=fh,
                                      stderr=subprocess.STDOUT)
            while helper.poll() is None:
                with lock:
                    if target not in state["running"]:
                        break
                time.sleep(HELPER_POLL_S)
            rc = helper.poll()
            status = "stopped" if rc is None else "finished" if rc == 0 else "failed"
            if rc is None:
                helper.terminate()
                try:
                    helper.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    helper.kill()
                    helper.wait()
        secs = time.perf_counter() - t0
        log.info("helper of %s %s after %.0f s (log: %s)", target, status, secs, logfile)
        with lock:
            helper_log.append({"notebook": target, "cores": list(cores), "seconds": secs, "status": status})


# ------------------------------------------------------------------------------------ plan


def print_plan(profile: str, notebooks: list[Path], params: dict, gpu: str, calibrate: bool,
               out: Path | None) -> str:
    """Print (and write as JSON) the plan of :mod:`stagewise.plan` for ``notebooks``."""
    from stagewise import plan as P

    plan = P.plan_profile(profile, [nb.stem for nb in notebooks], params)
    cpu = P.calibrate(plan, progress=log.info) if calibrate else None
    report = P.plan_report(plan, cpu, P.gpu_model(plan, gpu), P.GPU_CLASSES[gpu])
    text = P.format_plan(report)
    print(text)
    if out is not None:
        from stagewise.cache import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2, default=str) + "\n")
        log.info("plan written to %s", out)
    return text


def main(argv: list[str] | None = None) -> int:
    from stagewise.plan import GPU_CLASSES

    parser = argparse.ArgumentParser(prog="stagewise-figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=os.environ.get("STAGEWISE_PROFILE", DEFAULT_PROFILE),
                        help=f"one of {', '.join(PROFILE_NAMES)} (default: %(default)s)")
    parser.add_argument("--only", action="append", help="notebook number or name, repeatable (e.g. 02)")
    parser.add_argument("-p", "--param", action="append", type=_parse_param, default=[],
                        help="override a parameters-cell variable, e.g. -p seeds='[0, 1]'")
    parser.add_argument("--notebooks", type=Path, default=None, help="notebook folder (default: repo notebooks/)")
    parser.add_argument("--executed-dir", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks run at once (default 1); threads per job = cores // jobs")
    parser.add_argument("--plan", action="store_true",
                        help="print the work, peak memory and projected time of each notebook; train nothing")
    parser.add_argument("--plan-gpu", default="h100", choices=sorted(GPU_CLASSES), help="GPU class of the projection")
    parser.add_argument("--plan-no-calibration", action="store_true",
                        help="skip the measured steps on this machine (GPU projection only)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one notebook of a --jobs run
    parser.add_argument("--helper", default=None, help=argparse.SUPPRESS)  # a notebook's helper (module:function)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_profile(args.profile)
        notebook_dir = args.notebooks or repo_root() / "notebooks"
        notebooks = discover_notebooks(notebook_dir, args.only)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be an integer >= 1, got {args.jobs}")
        if not args.child and not args.helper:  # every process started from here on keeps its freed memory
            from stagewise.hardware import malloc_environment

            os.environ.update(malloc_environment())
    except ValueError as exc:
        parser.error(str(exc))
    params = dict(args.param)
    executed_dir = Path(args.executed_dir or repo_root() / "executed" / args.profile)
    if (args.child or args.helper) and os.environ.get(CORES_VARIABLE) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in os.environ[CORES_VARIABLE].split(",")})
    if args.helper:
        run_helper(args.helper, args.profile)
        return 0
    if args.plan:
        print_plan(args.profile, notebooks, params, args.plan_gpu, not args.plan_no_calibration,
                   executed_dir / "plan.json")
        return 0
    t_start = time.perf_counter()
    helper_log: list[dict] = []
    if args.jobs > 1 and (len(notebooks) > 1 or notebook_helpers(notebooks, params)):
        timings = run_parallel(notebooks, args.profile, params, executed_dir, args.jobs, notebook_dir, helper_log)
    else:
        timings = _run_sequential(notebooks, args.profile, params, executed_dir, progress=not args.child)
    wall = time.perf_counter() - t_start
    failures = [t for t in timings if t.status == "failed"]
    for t in failures:
        print(f"\nFAILED: {t.error}", file=sys.stderr)
    if args.child:
        return 1 if failures else 0
    print(timings_table(timings, wall if args.jobs > 1 else None))
    for h in helper_log:
        print(f"helper of {h['notebook']} on cores {h['cores']}: {h['seconds']:.0f} s ({h['status']})")
    path = write_timings(executed_dir / "timings.json", args.profile, timings, args.jobs, wall, helper_log)
    print(f"timings written to {path}")
    return 1 if failures else 0


def _run_sequential(notebooks: list[Path], profile: str, params: dict, executed_dir: Path,
                    progress: bool = True) -> list[NotebookTiming]:
    """One notebook after another in this process; the first failure stops the run."""
    from stagewise.progress import tqdm

    timings: list[NotebookTiming] = []
    bar = tqdm(notebooks, desc=f"notebooks ({profile})", unit="nb", disable=not progress)
    failed = None
    for nb in bar:
        if failed is not None:
            timings.append(NotebookTiming(nb.stem, 0.0, "not run", f"after {failed} failed"))
            continue
        bar.set_postfix_str(nb.stem)
        t0 = time.perf_counter()
        try:
            run_notebook(nb, profile, params, executed_dir)
            timings.append(NotebookTiming(nb.stem, time.perf_counter() - t0, "ok"))
        except NotebookFailure as exc:
            timings.append(NotebookTiming(nb.stem, time.perf_counter() - t0, "failed", str(exc)))
            failed = nb.stem
    bar.close()
    return timings


if __name__ == "__main__":
    sys.exit(main())
