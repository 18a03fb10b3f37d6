"""``stagewise-figures``: execute the notebooks with Papermill and regenerate every figure.

    stagewise-figures                      # all notebooks at the default cpu profile
    stagewise-figures --profile smoke --only 02 --only 05
    stagewise-figures --only 02 -p seeds='[0, 1]'

Each ``notebooks/NN_name.py`` (Jupytext percent format) is converted in memory, its ``parameters``
cell is overridden by Papermill, and the executed notebook is written to
``executed/<profile>/NN_name.ipynb`` (ignored by git) for inspection.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stagewise.profiles import DEFAULT_PROFILE, PROFILE_NAMES, check_profile

__all__ = ["NotebookFailure", "discover_notebooks", "run_notebook", "main"]

log = logging.getLogger(__name__)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stagewise-figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=os.environ.get("STAGEWISE_PROFILE", DEFAULT_PROFILE),
                        help=f"one of {', '.join(PROFILE_NAMES)} (default: %(default)s)")
    parser.add_argument("--only", action="append", help="notebook number or name, repeatable (e.g. 02)")
    parser.add_argument("-p", "--param", action="append", type=_parse_param, default=[],
                        help="override a parameters-cell variable, e.g. -p seeds='[0, 1]'")
    parser.add_argument("--notebooks", type=Path, default=None, help="notebook folder (default: repo notebooks/)")
    parser.add_argument("--executed-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_profile(args.profile)
        notebooks = discover_notebooks(args.notebooks or repo_root() / "notebooks", args.only)
    except ValueError as exc:
        parser.error(str(exc))
    from tqdm.auto import tqdm

    params = dict(args.param)
    timings = []
    bar = tqdm(notebooks, desc=f"notebooks ({args.profile})", unit="nb")
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        t0 = time.perf_counter()
        try:
            run_notebook(nb, args.profile, params, args.executed_dir)
        except NotebookFailure as exc:
            bar.close()
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1
        timings.append((nb.stem, time.perf_counter() - t0))
    bar.close()
    for name, secs in timings:
        print(f"{name:32s} {secs / 60:6.1f} min")
    print(f"{'total':32s} {sum(s for _, s in timings) / 60:6.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
