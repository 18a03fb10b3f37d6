"""Numbers for the documentation, read from the committed headline JSON (standard library only).

Every number on a results page is written in the page source as a reference, never typed:

    {hl}`long/02:seeds.seed_0.boundaries_vs_paper.1.detected`          -> 21,346
    {hl}`cpu/05:toy_potentials.potential=quadratic_3d.llc_estimate;.3f` -> 1.548

``cpu/NN`` is ``figures/NN_*.json``, ``long/NN`` is ``figures/long/NN_*.json``, ``runs/NAME`` a
shipped run's manifest ``data/runs/NAME.json``, ``bench/NAME`` ``benchmarks/results/NAME.json`` and
``bench/pilots/NAME`` ``benchmarks/results/pilots/NAME.json``, ``xm/RUN/NN`` the headline JSON of
another machine's run kept in ``benchmarks/results/cross_machine/RUN/`` (compared by
``benchmarks/compare_headlines.py``).
A path is dot-separated: dictionary keys, list indices, or ``field=value`` (the list element whose
``field`` is ``value``). After ``;`` comes a format: a Python format spec, or one of ``int``
(rounded, thousands separator), ``min`` (seconds as minutes), ``h`` (seconds as h min), ``pct``
(a fraction as a percentage), ``yesno``, ``len`` (how many items a list or mapping has).

The Sphinx extension (``docs/_ext/headline.py``) renders each reference as
``<span class="hl" data-key="KEY">TEXT</span>``; ``--check-html`` re-reads the JSON and fails on any
span whose text is not what the JSON gives now (a stale page), and on any reference that no longer
resolves. Tables (``TABLES``) and the verdicts (``VERDICTS``) are markdown with such references.

    python docs/generate.py --readme          # rewrite README.md's generated blocks (verdicts, command times)
    python docs/generate.py --check-readme    # exit 1 when a README.md block is out of date
    python docs/generate.py --check-html build/docs/html
    python docs/generate.py --check-sources   # every reference in docs/**/*.md resolves
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLE = re.compile(r"\{hl\}`([^`]+)`")
SPAN = re.compile(r'<span class="hl" data-key="([^"]+)">(.*?)</span>', re.S)
README_START, README_END = "<!-- verdicts:start -->", "<!-- verdicts:end -->"


# ----------------------------------------------------------------------------------- data


def profile_folders(root: Path = ROOT) -> list[tuple[str, Path]]:
    """(name, folder) of every committed profile: ``cpu`` (``figures/``), ``long``, then the runs
    of a profile with a non-default model option, ``figures/<profile>-<option>/`` (e.g.
    ``cpu-paper_code``: notebook 02 with ``residual="paper_code"``). Smoke output is never committed."""
    out = [("cpu", root / "figures"), ("long", root / "figures" / "long")]
    for folder in sorted((root / "figures").glob("*-*")):
        if folder.is_dir() and not folder.name.startswith("smoke"):
            out.append((folder.name, folder))
    return out


def variant_profiles(root: Path = ROOT) -> tuple[str, ...]:
    return tuple(name for name, _ in profile_folders(root) if name not in ("cpu", "long"))


def load(root: Path = ROOT) -> dict[str, dict]:
    """Every headline JSON, keyed ``cpu/NN``, ``long/NN`` (and ``<variant>/NN``, see
    :func:`profile_folders`); shipped-run manifests ``runs/NAME``; benchmark results ``bench/NAME`` (pilots' ``bench/pilots/NAME``); another machine's
    headline JSON ``xm/RUN/NN``."""
    data: dict[str, dict] = {}
    for profile, folder in profile_folders(root):
        for path in sorted(folder.glob("[0-9][0-9]_*.json")):
            data[f"{profile}/{path.name[:2]}"] = json.loads(path.read_text())
    for path in sorted((root / "data" / "runs").glob("*.json")):
        data[f"runs/{path.stem}"] = json.loads(path.read_text())
    for path in sorted((root / "benchmarks" / "results").glob("*.json")):
        data[f"bench/{path.stem}"] = json.loads(path.read_text())
    for path in sorted((root / "benchmarks" / "results" / "pilots").glob("*.json")):
        data[f"bench/pilots/{path.stem}"] = json.loads(path.read_text())
    for path in sorted((root / "benchmarks" / "results" / "pilots").glob("long-*/[0-9][0-9]_*.json")):
        data[f"pilot/{path.parent.name}/{path.name[:2]}"] = json.loads(path.read_text())
    for path in sorted((root / "benchmarks" / "results" / "cross_machine").glob("*/[0-9][0-9]_*.json")):
        data[f"xm/{path.parent.name}/{path.name[:2]}"] = json.loads(path.read_text())
    data["derived"] = derived(data)
    return data


PAPER_LM_TOKENS = 50_000 * 100 * 1024  # [H] App. D.2.3: 50k steps at batch 100 x context 1,024


def derived(data: dict[str, dict]) -> dict:
    """Numbers computed from the JSON (never typed): shares, worst errors, totals."""
    out: dict = {}
    if "cpu/01" in data:
        out["paper_lm_tokens"] = PAPER_LM_TOKENS
        for prof in ("cpu", "long"):
            if f"{prof}/01" in data:
                out[f"lm_token_share_{prof}"] = data[f"{prof}/01"]["tokens_seen"] / PAPER_LM_TOKENS
    plan = ROOT / "docs" / "paper_plan.txt"
    if plan.exists():
        text = plan.read_text()
        for nb, section in re.findall(r"^## (\d\d)_\w+.*?\n(.*?)(?=^## )", text, re.S | re.M):
            m = re.search(r"total: this machine [^,]*, .*?\(model\) ([\d.]+ (?:d|h|min))", section)
            if m:
                out[f"paper_plan_gpu_model_{nb}"] = m.group(1)
        total = text.split("## total", 1)[-1]
        for line in total.splitlines()[1:]:
            name, _, days = line.strip().rpartition(": ")
            if days.endswith(" d"):
                out["paper_plan_total_" + ("this_machine" if name == "this machine" else "gpu_model")] = float(days[:-2])
                if name != "this machine":
                    out["paper_plan_gpu_name"] = name
    timings = data.get("bench/make_figures_cpu_timings")
    if timings:
        nb03 = next(n for n in timings["notebooks"] if n["notebook"].startswith("03"))
        out["make_figures_03_running_s"] = nb03["seconds"] - timings["paused_seconds"]
    out["committed_pngs"] = sum(len(paths) for _, paths in committed_figures())
    out["committed_figure_names"] = len(committed_figures())
    if "cpu/05" in data:
        toys = data["cpu/05"]["toy_potentials"]
        out["toy_worst_abs_error"] = max(abs(t["llc_estimate"] - t["llc_exact"]) for t in toys)
    return out


def lookup(data: dict[str, dict], key: str):
    """The value a reference ``source:path`` names; KeyError with the reference when it does not
    resolve."""
    source, _, path = key.partition(":")
    if source not in data:
        raise KeyError(f"{key}: no headline JSON {source!r} (have {', '.join(sorted(data))})")
    value = data[source]
    for part in path.split(".") if path else []:
        try:
            if isinstance(value, list) and "=" in part:
                field, _, want = part.partition("=")
                value = next(v for v in value if str(v.get(field)) == want)
            elif isinstance(value, list):
                value = value[int(part)]
            else:
                value = value[part]
        except (KeyError, IndexError, ValueError, StopIteration, TypeError, AttributeError):
            raise KeyError(f"{key}: {part!r} not found") from None
    return value


def fmt(value, spec: str | None = None) -> str:
    """A JSON value as the pages print it (see the module docstring for ``spec``)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if spec == "len" and isinstance(value, (list, dict)):
        return f"{len(value):,}"
    if isinstance(value, list):
        return ", ".join(fmt(v, spec) for v in value)
    if spec == "yesno":
        return "yes" if value else "no"
    if spec == "int":
        return f"{round(value):,}"
    if spec == "min":
        return f"{value / 60:.1f} min"
    if spec == "h":
        hours, minutes = divmod(round(value / 60), 60)
        return f"{hours} h {minutes:02d} min"
    if spec == "pct":
        return f"{100 * value:.1f}%"
    if spec:
        return format(value, spec)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{round(value):,}"
    return f"{value:.3g}"


def resolve(data: dict[str, dict], ref: str) -> str:
    key, _, spec = ref.partition(";")
    return fmt(lookup(data, key), spec or None)


def span(data: dict[str, dict], ref: str) -> str:
    return f'<span class="hl" data-key="{html.escape(ref, quote=True)}">{html.escape(resolve(data, ref))}</span>'


def render_plain(text: str, data: dict[str, dict]) -> str:
    """References replaced by their text (for the README, which has no roles)."""
    return ROLE.sub(lambda m: resolve(data, m.group(1)), text)


def render_spans(text: str, data: dict[str, dict]) -> str:
    """References replaced by tagged spans (what the Sphinx role writes)."""
    return ROLE.sub(lambda m: span(data, m.group(1)), text)


_TABLE_DIRECTIVE = re.compile(r"```\{headline-table\}\s+(\S+)\s*\n```")


def render_markdown(text: str, data: dict[str, dict], spans: bool = True) -> str:
    """A page's markdown source with its headline tables expanded and its references rendered, as
    the Sphinx build does (tagged spans), or as plain text (``spans=False``)."""
    text = _TABLE_DIRECTIVE.sub(lambda m: TABLES[m.group(1)](data), text)
    return render_spans(text, data) if spans else render_plain(text, data)


def check_spans(page: str, data: dict[str, dict]) -> list[str]:
    """Every tagged number of a rendered page against the JSON: one message per disagreement."""
    problems = []
    for ref, text in SPAN.findall(page):
        ref = html.unescape(ref)
        shown = html.unescape(re.sub(r"<[^>]+>", "", text))
        try:
            want = resolve(data, ref)
        except KeyError as exc:
            problems.append(str(exc))
            continue
        if shown != want:
            problems.append(f"{ref}: page shows {shown!r}, JSON gives {want!r}")
    return problems


# ---------------------------------------------------------------------------------- tables


def _hl(ref: str) -> str:
    return "{hl}`" + ref + "`"


def _interval(src: str, path: str) -> str:
    return f"{_hl(f'{src}:{path}.detected;int')} [{_hl(f'{src}:{path}.interval.0;int')}–{_hl(f'{src}:{path}.interval.1;int')}]"


def _cell(text: str) -> str:
    """A table cell: literal pipes escaped outside references (whose keys have none)."""
    parts = re.split(r"(\{hl\}`[^`]*`)", text)
    return "".join(p if p.startswith("{hl}") else p.replace("\\|", "|").replace("|", "\\|") for p in parts)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def stage_table(data: dict, src: str, base: str) -> str:
    """The stages of one LLC curve: name, start, end, direction, ΔLLC."""
    stages = lookup(data, f"{src}:{base}.stages")
    rows = []
    for i, _ in enumerate(stages):
        p = f"{src}:{base}.stages.{i}"
        rows.append([_hl(f"{p}.name"), _hl(f"{p}.start;int"), _hl(f"{p}.end;int"),
                     _hl(f"{p}.llc_direction"), _hl(f"{p}.llc_change;+.1f")])
    return _table(["stage", "from step", "to step", "LLC", "ΔLLC"], rows)


def boundary_intervals(data: dict, src: str, base: str) -> str:
    """Boundaries with their 90% intervals, comma-separated."""
    out = []
    for i, b in enumerate(lookup(data, f"{src}:{base}.boundaries")):
        p = f"{src}:{base}.boundaries.{i}"
        out.append(f"{_hl(f'{p}.step;int')} [{_hl(f'{p}.interval.0;int')}–{_hl(f'{p}.interval.1;int')}]")
    return ", ".join(out)


def t_regression_boundaries(data: dict) -> str:
    """The paper's boundaries beside `long`'s (190 and 60 checkpoints) and `cpu`'s five seeds."""
    seeds = sorted(lookup(data, "cpu/02:seeds"))
    header = ["boundary", "paper [H] §6", "`long` seed 0 (500k, 190 ckpts)", "`long`, 60 ckpts"] + [
        f"`cpu` {s.replace('_', ' ')} (10k)" for s in seeds]
    rows = []
    sixty = lookup(data, "long/02:llc_boundaries_at_60_checkpoints") or []
    for i, b in enumerate(lookup(data, "cpu/02:seeds.seed_0.boundaries_vs_paper")):
        row = [b["boundary"], f"{b['paper']:,}"]
        lp = f"long/02:seeds.seed_0.boundaries_vs_paper.{i}"
        row.append(_interval("long/02", f"seeds.seed_0.boundaries_vs_paper.{i}")
                   if lookup(data, f"{lp}.detected") is not None else "not resolved")
        row.append("")
        for s in seeds:
            p = f"cpu/02:seeds.{s}.boundaries_vs_paper.{i}"
            if lookup(data, f"{p}.detected") is None:
                row.append("not resolved")
            else:
                row.append(_interval("cpu/02", f"seeds.{s}.boundaries_vs_paper.{i}"))
        rows.append(row)
    # the 60-checkpoint boundaries are a plain list: place them by nearest paper boundary in log steps
    for j, step in enumerate(sixty):
        best = min(range(len(rows)), key=lambda r: abs(math.log(step) - math.log(float(rows[r][1].replace(",", "")))))
        rows[best][3] = _hl(f"long/02:llc_boundaries_at_60_checkpoints.{j};int")
    for r in rows:
        r[3] = r[3] or "–"
    return _table(header, rows)


def t_regression_stages(data: dict) -> str:
    return ("**`cpu`, seed 0** (10k steps)\n\n" + stage_table(data, "cpu/02", "seeds.seed_0")
            + "\n**`long`, seed 0** (500k steps, all 190 checkpoints)\n\n"
            + stage_table(data, "long/02", "seeds.seed_0"))


def t_regression_llc(data: dict) -> str:
    seeds = sorted(lookup(data, "cpu/02:seeds"))
    rows = []
    for prof, ss in (("long", ["seed_0"]), ("cpu", seeds)):
        for s in ss:
            p = f"{prof}/02:seeds.{s}"
            rows.append([f"`{prof}` {s.replace('_', ' ')}", _hl(f"{p}.llc_checkpoints"), _hl(f"{p}.llc_first;.1f"),
                         f"{_hl(f'{p}.llc_max;.1f')} at {_hl(f'{p}.llc_max_step;int')}", _hl(f"{p}.llc_last;.1f"),
                         _hl(f"{p}.final_train_loss;.3f"), _hl(f"{p}.flagged_checkpoints") if lookup(data, f"{p}.flagged_checkpoints") else "none",
                         _hl(f"{p}.training_s;int")])
    return _table(["run", "LLC checkpoints", "λ̂ first", "λ̂ max (step)", "λ̂ last", "final training loss",
                   "flagged checkpoints (indices)", "`training_s` (s)"], rows)


def t_regression_signatures(data: dict) -> str:
    seeds = sorted(lookup(data, "cpu/02:seeds"))
    header = ["paper stage", "signature ([H] App. C)", "`long` seed 0"] + [f"`cpu` {s.replace('_', ' ')}" for s in seeds]
    rows = []
    for i, sig in enumerate(lookup(data, "long/02:seeds.seed_0.signatures")):
        row = [sig["paper_stage"], sig["signature"]]
        for prof, s in [("long", "seed_0")] + [("cpu", s) for s in seeds]:
            p = f"{prof}/02:seeds.{s}.signatures.{i}"
            if not lookup(data, f"{p}.appears"):
                row.append("✗")
            else:
                mark = "✓" if lookup(data, f"{p}.in_paper_stage") else "·"
                row.append(f"{_hl(f'{p}.step;int')} {mark}")
        rows.append(row)
    return _table(header, rows) + "\n✓ in the paper's stage, · elsewhere, ✗ absent (`in_paper_stage` in the JSON).\n"


def t_ed(data: dict) -> str:
    """Essential dynamics of every run: explained variance, forms, corroborated boundaries."""
    runs = [("long/02", "seeds.seed_0", "regression `long` seed 0")]
    runs += [("cpu/02", f"seeds.{s}", f"regression `cpu` {s.replace('_', ' ')}") for s in sorted(lookup(data, "cpu/02:seeds"))]
    runs += [("cpu/01", "", "LM `cpu`"), ("long/01", "", "LM `long` (analogue data)")]
    rows = []
    for src, base, name in runs:
        p = f"{src}:{base + '.' if base else ''}essential_dynamics"
        ev = " / ".join(_hl(f"{p}.explained_variance.{k};.0%") for k in range(3))
        forms = ", ".join(_hl(f"{p}.forms.{k}.step;int") for k in range(len(lookup(data, f"{p}.forms")))) or "none"
        matches = lookup(data, f"{p}.boundary_matches")
        corr = ", ".join(_hl(f"{p}.boundary_matches.{k}.boundary;int") for k, m in enumerate(matches) if m["corroborated"]) or "none"
        bounds = ", ".join(_hl(f"{p}.boundary_matches.{k}.boundary;int") for k in range(len(matches)))
        rows.append([name, ev, forms, bounds, corr])
    return _table(["run", "PCA, top 3 PCs", "forms (step)", "LLC boundaries", "corroborated (a form within ×1.5)"], rows)


def t_lm_stages(data: dict) -> str:
    return ("**`cpu`** (plain text, 4,000 steps)\n\n" + stage_table(data, "cpu/01", "stages")
            + "\n**`long`** (analogue data, 16,000 steps)\n\n" + stage_table(data, "long/01", "stages"))


def t_lm_summary(data: dict) -> str:
    rows = []
    for label, path, spec in [
        ("data", "data", None), ("steps", "steps", None), ("batch × context", None, None),
        ("tokens seen", "tokens_seen", "int"), ("LLC boundaries [90% interval]", "BOUNDS", None),
        ("λ̂ first / max / last", "LLC", None),
        ("layer-0 previous-token score ≥ 0.4 first at", "induction_by_content.first_step_above.previous_token_l0", "int"),
        ("layer-1 prefix matching ≥ 0.3 first at", "induction_by_content.first_step_above.prefix_matching_l1", "int"),
        ("random-offset repeat drop ≥ 1 nat first at", "induction_by_content.first_step_above.random_offset_drop", "int"),
        ("induction circuit formed (all three, two probes)", "induction_by_content.formed_step", "int"),
        ("max layer-0 previous-token / layer-1 prefix matching", "MAXES", None),
        ("max random-offset repeat drop (nats)", "induction_by_content.max.random_offset_drop", ".2f"),
        ("ICL score at the end", "induction_by_content.icl_score_at_end", ".2f"),
        ("final validation loss", "final_validation_loss", ".3f"),
        ("`training_s` (s)", "training_s", "int"),
    ]:
        row = [label]
        for src in ("cpu/01", "long/01"):
            if path is None:
                row.append(f"{_hl(src + ':batch_size')} × {_hl(src + ':context')}")
            elif path == "BOUNDS":
                row.append(boundary_intervals(data, src, "stages"))
            elif path == "LLC":
                row.append(" / ".join(_hl(f"{src}:stages.{k};.1f") for k in ("llc_first", "llc_max", "llc_last")))
            elif path == "MAXES":
                row.append(f"{_hl(src + ':induction_by_content.max.previous_token_l0;.2f')} / "
                           f"{_hl(src + ':induction_by_content.max.prefix_matching_l1;.3f')} (chance "
                           f"{_hl(src + ':chance.previous_token;.3f')} / {_hl(src + ':chance.prefix_matching;.3f')})")
            else:
                row.append(_hl(f"{src}:{path}" + (f";{spec}" if spec else "")))
        rows.append(row)
    return _table(["", "`cpu`", "`long`"], rows)


def t_lm_signatures(data: dict) -> str:
    rows = []
    n = max(len(lookup(data, "cpu/01:signatures")), len(lookup(data, "long/01:signatures")))
    for i in range(n):
        sig = lookup(data, f"cpu/01:signatures.{i}")
        row = [sig["paper_stage"], sig["signature"]]
        for src in ("cpu/01", "long/01"):
            p = f"{src}:signatures.{i}"
            row.append(f"{_hl(p + '.step;int')} (in {_hl(p + '.our_stage')})" if lookup(data, p + ".appears") else "✗")
        rows.append(row)
    return _table(["paper stage", "signature ([H] App. B)", "`cpu`", "`long`"], rows)


def t_lm_one_layer(data: dict) -> str:
    rows = [[f"`{src[:-3]}`", boundary_intervals(data, src, "one_layer"),
             " / ".join(_hl(f"{src}:one_layer.{k};.1f") for k in ("llc_first", "llc_max", "llc_last")),
             _hl(f"{src}:one_layer.llc_max_step;int")] for src in ("cpu/01", "long/01")]
    return _table(["profile", "boundaries [90% interval]", "λ̂ first / max / last", "step of max λ̂"], rows)


def t_ridge(data: dict) -> str:
    rows = []
    for i, m in enumerate(lookup(data, "cpu/03:per_m")):
        p = f"cpu/03:per_m.{i}"
        rows.append([_hl(p + ".m"), _hl(p + ".t_crit;int"), _hl(p + ".ood_min;.2f"), _hl(p + ".ood_final;.2f"),
                     _hl(p + ".dmmse_ood;.2f"), _hl(p + ".nearer;.2f"), "**yes**" if m["transient"] else "no",
                     f"{_hl(p + '.llc;.1f')} ± {_hl(p + '.llc_se;.1f')}"])
    return _table(["M", "t_crit", "OOD loss min", "OOD loss final", "dMMSE_M's OOD loss", "nearer ridge (0–1)",
                   "transient", "λ̂ ± s.e."], rows)


def t_ridge_summary(data: dict) -> str:
    rows = [
        ["task-diversity threshold (final model dMMSE-like → ridge-like)", "between 128 and 362 ([C] §4)",
         f"between {_hl('cpu/03:task_diversity_threshold.last_dmmse')} and {_hl('cpu/03:task_diversity_threshold.first_ridge')} "
         f"(≈ {_hl('cpu/03:task_diversity_threshold.threshold;.0f')} in log M)"],
        ["transient M", "intermediate M below the threshold", "M = " + _hl("cpu/03:transient_m")],
        ["LLC of the ridge-like M = ∞ model", "–", _hl("cpu/03:llc_ridge;.1f")],
        ["M at which dMMSE-like models' λ̂ crosses ridge's", "–", _hl("cpu/03:llc_crossing_m;.1f")],
        ["D, K, steps", "8, 16, 500k", f"{_hl('cpu/03:task_size')}, {_hl('cpu/03:max_examples')}, {_hl('cpu/03:steps')}"],
        ["OOD loss of ridge itself", "–", _hl("cpu/03:per_m.0.ridge_ood;.2f")],
    ]
    return _table(["", "paper ([C], D = 8, K = 16)", "`cpu` = `long` (D = 3, K = 8)"], rows)


def t_toy(data: dict) -> str:
    rows = []
    for i, t in enumerate(lookup(data, "cpu/05:toy_potentials")):
        p = f"cpu/05:toy_potentials.{i}"
        err = t["llc_estimate"] - t["llc_exact"]
        rows.append([f"`{t['potential']}`", _hl(p + ".llc_exact;.3g"), f"{_hl(p + '.llc_estimate;.3f')} ± {_hl(p + '.llc_se;.3f')}",
                     f"{err:+.3f}", _hl(p + ".hessian_trace;.0f"), _hl(p + ".hessian_top_eigenvalue;.0f"), _hl(p + ".hessian_rank")])
    return _table(["potential", "λ exact", "λ̂ ± s.e.", "λ̂ − λ", "Hessian trace at w*", "top eigenvalue", "rank"], rows)


def t_hessian(data: dict) -> str:
    rows = []
    for src, label in (("cpu/05", "`cpu` (10k steps)"), ("long/05", "`long` (500k steps, the shipped run)")):
        def lst(key):
            return ", ".join(_hl(f"{src}:{key}.{k};int") for k in range(len(lookup(data, f"{src}:{key}"))))
        n = len(lookup(data, src + ":llc_boundaries"))
        rows.append([label, lst("llc_boundaries"), lst("trace_boundaries"), lst("top_eigenvalue_boundaries"),
                     f"{_hl(src + ':llc_boundaries_found_by_trace')} of {n}",
                     f"{_hl(src + ':llc_boundaries_found_by_top_eigenvalue')} of {n}"])
    return _table(["run (seed 0, 40 checkpoints)", "LLC boundaries", "trace boundaries", "top-eigenvalue boundaries",
                   "LLC boundaries the trace finds (×1.5)", "… the top eigenvalue finds"], rows)


def t_rllc_findings(data: dict) -> str:
    n = max(len(lookup(data, "cpu/04:findings")), len(lookup(data, "long/04:findings")))
    rows = []
    for i in range(n):
        cells = []
        name = None
        for src in ("cpu/04", "long/04"):
            try:
                f = lookup(data, f"{src}:findings.{i}")
            except KeyError:
                cells.append("–")
                continue
            name = name or f["finding"]
            holds = {True: "holds", False: "does not hold", None: "not testable"}[f["holds"]]
            cells.append(f"{_hl(f'{src}:findings.{i}.ours')} ({holds})")
        rows.append([name] + cells)
    return _table(["[W]'s finding", "`cpu`", "`long`"], rows)


def t_rllc_summary(data: dict) -> str:
    rows = []
    for label, key, spec in [
        ("checkpoints", "checkpoints", "int"), ("whole-model drLLC at the end: train", "whole_model_drllc_final.train", ".1f"),
        ("… German", "whole_model_drllc_final.german", ".1f"), ("… code", "whole_model_drllc_final.code", ".1f"),
        ("share of per-head estimates flagged, code", "flagged_share.code", "pct"),
        ("… train", "flagged_share.train", "pct"),
        ("wrLLC spread (CV) in layer 0, first → last", None, None),
        ("… in layer 1", None, None),
        ("layer-1 clustering (c, silhouette)", None, None),
        ("induction heads in a cluster of their own", "clustering.layer_1.induction_heads_in_own_cluster", None),
    ]:
        row = [label]
        for src in ("cpu/04", "long/04"):
            if key is None and "layer 0" in label:
                row.append(f"{_hl(src + ':wrllc_cv.layer_0.first;.2f')} → {_hl(src + ':wrllc_cv.layer_0.last;.2f')}")
            elif key is None and "clustering" in label:
                row.append(f"{_hl(src + ':clustering.layer_1.n_clusters')}, {_hl(src + ':clustering.layer_1.silhouette;.2f')}")
            elif key is None:
                row.append(f"{_hl(src + ':wrllc_cv.layer_1.first;.2f')} → {_hl(src + ':wrllc_cv.layer_1.last;.2f')}")
            else:
                row.append(_hl(f"{src}:{key}" + (f";{spec}" if spec else "")))
        rows.append(row)
    return _table(["", "`cpu` (the `cpu` LM, plain text)", "`long` (the `long` LM, analogue data)"], rows)


def t_rllc_heads(data: dict) -> str:
    rows = []
    for src in ("cpu/04", "long/04"):
        for h in sorted(lookup(data, f"{src}:heads")):
            p = f"{src}:heads.{h}"
            rows.append([f"`{src[:-3]}`", h.replace("head_", "").replace("_", ":"), _hl(p + ".class"),
                         _hl(p + ".previous_token;.2f"), _hl(p + ".prefix_matching;.3f"),
                         _hl(p + ".llc_train;.2f"), _hl(p + ".llc_code;.2f")])
    return _table(["profile", "head", "class", "previous-token", "prefix matching", "wrLLC train (final)",
                   "wrLLC code (final)"], rows)


def t_profiles(data: dict) -> str:
    """Measured times: the JSON's own fields, labelled by what they are."""
    names = {"01": "01 LM stages", "02": "02 regression stages", "03": "03 transient ridge",
             "04": "04 refined LLC", "05": "05 Hessian vs LLC"}
    timing = {n["notebook"][:2]: i for i, n in enumerate(lookup(data, "bench/make_figures_cpu_timings:notebooks"))}
    rows = []
    for nb, name in names.items():
        row = [name]
        if nb in timing:
            cell = _hl(f"bench/make_figures_cpu_timings:notebooks.{timing[nb]}.seconds;min")
            if nb == "03" and lookup(data, "bench/make_figures_cpu_timings:paused_seconds"):
                # the run's process tree was paused while 03 ran (the JSON's note)
                cell += f" (running: {_hl('derived:make_figures_03_running_s;min')})"
            row.append(cell)
        else:
            row.append("–")
        for prof in ("cpu", "long"):
            wall = lookup(data, f"{prof}/{nb}:wall_time_s")
            cell = _hl(f"{prof}/{nb}:wall_time_s;min")
            record = data[f"{prof}/{nb}"]
            # a rerun that computed nothing and found no measured record to keep, or an old record
            # (before the writer kept measured times) that a cached rerun wrote
            if (record.get("artifacts_computed") == 0 and "cached_rerun_s" not in record) or wall < 120:
                cell += " (a rerun from the cache)"
            row.append(cell)
        training = []
        for prof in ("cpu", "long"):
            try:
                lookup(data, f"{prof}/{nb}:training_s")
                training.append(f"`{prof}` {_hl(f'{prof}/{nb}:training_s;min')}")
            except KeyError:
                pass
        row.append(", ".join(training) or "–")
        rows.append(row)
    return _table(["notebook", "`cpu` from an empty cache, inside one `make figures` (runner's table)",
                   "`cpu`: the run that wrote `figures/` (`wall_time_s`)",
                   "`long`: the run that wrote `figures/long/` (`wall_time_s`)", "training (`training_s`)"], rows)


def t_regression_pilots(data: dict) -> str:
    """The regression schedule pilots' headline JSON beside `long`'s: boundaries and the LR3/LR4 collapses."""
    runs = [(f"pilot/long-{n}/02", f"{int(n) // 1000}k steps (pilot)") for n in ("100000", "200000")
            if f"pilot/long-{n}/02" in data]
    runs.append(("long/02", "500k steps (`long`, the shipped run)"))
    rows = []
    for src, label in runs:
        p = f"{src}:seeds.seed_0"
        bounds = ", ".join(_hl(f"{p}.boundaries.{k}.step;int") for k in range(len(lookup(data, p + ".boundaries"))))
        dirs = " ".join({"increase": "+", "decrease": "−"}.get(st["llc_direction"], "~") for st in lookup(data, p + ".stages"))
        cells = []
        for k in (7, 9):
            q = f"{p}.signatures.{k}"
            cells.append(_hl(q + ".step;int") if lookup(data, q + ".appears") else "✗")
        rows.append([label, _hl(p + ".llc_checkpoints"), bounds, dirs, cells[0], cells[1],
                     "no" if lookup(data, f"{p}.boundaries_vs_paper.2.detected") is None else "yes"])
    return _table(["run (seed 0)", "LLC checkpoints", "LLC boundaries", "directions", "LR3: final LayerNorm collapse",
                   "LR4: first attention LayerNorm", "LR3\\|LR4 resolved"], rows)


def t_verdicts(data: dict) -> str:
    return verdict_table(data)


def t_residual_comparison(data: dict) -> str:
    """Each residual stream's boundaries, stage names, final loss and LLC-slope dips, per seed and
    profile: the standard run (``cpu/02``, ``long/02``) beside its ``-paper_code`` twin."""
    rows = []
    for prof in ("cpu", "long"):
        variant = f"{prof}-paper_code/02"
        if variant not in data:
            continue
        ref = lookup(data, f"{variant}:residual_comparison")
        for s in sorted(lookup(data, f"{variant}:seeds")):
            for src, name in ((f"{prof}/02", "standard"), (variant, "paper_code")):
                if s not in lookup(data, f"{src}:seeds"):
                    continue
                base = f"{src}:seeds.{s}"
                n = len(lookup(data, f"{base}.boundaries"))
                bounds = ", ".join(_hl(f"{base}.boundaries.{i}.step;int") for i in range(n)) or "none"
                stages = lookup(data, f"{base}.stages")
                names = " ".join(
                    (_hl(f"{base}.stages.{i}.name") if st["name"] else "?")
                    + ("↑" if st["llc_direction"] == "increase" else "↓") for i, st in enumerate(stages))
                if src == variant:
                    dips_key = f"{base}.slope_dips"
                elif s == "seed_0" and ref is not None:
                    dips_key = f"{variant}:residual_comparison.standard.slope_dips"
                else:
                    dips_key = None
                if dips_key is None:
                    dips = "–"
                else:
                    dips = ", ".join(f"{_hl(f'{dips_key}.{j}.step;int')} ({_hl(f'{dips_key}.{j}.relative;.2f')})"
                                     for j in range(len(lookup(data, dips_key)))) or "none"
                rows.append([f"`{prof}`", s.replace("_", " "), f"`{name}`", bounds, names,
                             _hl(f"{base}.final_train_loss;.3f"), dips])
    return _table(["profile", "seed", "residual", "LLC boundaries", "stages (LLC direction)", "final train loss",
                   "LLC-slope dips in 40k–320k, rescaled (step, relative slope)"], rows)


def _calibration_records(data: dict) -> list[tuple[str, str, str]]:
    """(profile, notebook, JSON path) of every SGLD calibration record in the headline JSON: the
    ``sgld_calibration`` of notebooks 01 and 02, and each of the records under it in 03 and 04."""
    out = []
    for src in sorted(data):
        profile, _, nb = src.partition("/")
        if profile in ("runs", "bench", "pilot", "derived") or not isinstance(data[src], dict):
            continue
        cal = data[src].get("sgld_calibration")
        if not isinstance(cal, dict):
            continue
        if "long_chain" in cal:
            out.append((profile, nb, "sgld_calibration"))
        else:
            out += [(profile, nb, f"sgld_calibration.{k}") for k, v in cal.items()
                    if isinstance(v, dict) and "long_chain" in v]
    return out


def t_sgld_calibration(data: dict) -> str:
    """Per notebook, profile and setting: the profile's SGLD budget, its estimate against the long
    chain's settled value at each calibration checkpoint (ratio; * = flagged unconverged), the
    usable grid cells, the verdict (±5%, or ±2 standard errors where the settled value is within 2 of
    0), and the share of the notebook's sweep flagged unconverged."""
    rows = []
    for profile, nb, path in _calibration_records(data):
        src = f"{profile}/{nb}"
        rec = lookup(data, f"{src}:{path}")
        ch = rec["chosen"]
        budget = (f"{ch['chains']} × ({ch['burnin']} + {ch['draws']}), ε {_hl(f'{src}:{path}.chosen.epsilon;.2g')}, "
                  f"nβ {_hl(f'{src}:{path}.chosen.nbeta;.3g')}, γ {_hl(f'{src}:{path}.chosen.gamma;.3g')}")
        def judged(i: int, r: dict) -> str:
            at = f"{src}:{path}.long_chain.{i}"
            if r.get("near_zero"):  # settled within 2 SE of 0: the gap against the noise, not a ratio
                return (f"{_hl(f'{at}.profile;.2f')} vs {_hl(f'{at}.long_settled;.2f')} ± "
                        f"{_hl(f'{at}.settled_se;.2f')} (≈ 0)")
            return _hl(f"{at}.ratio;.3f")

        ratios = ", ".join(f"{r['label']} {_hl(f'{src}:{path}.long_chain.{i}.step;int')}: {judged(i, r)}"
                           + ("*" if r["profile_unconverged"] else "") for i, r in enumerate(rec["long_chain"]))
        tried = len({(c["epsilon"], c["nbeta"], c["gamma"]) for c in rec["cells"]})
        sweep_path = f"{path}.sweep" if "sweep" in rec else (
            "sgld_calibration.sweep" if "sweep" in data[src]["sgld_calibration"] else None)
        sweep = (f"{_hl(f'{src}:{sweep_path}.share_unconverged;pct')} of {_hl(f'{src}:{sweep_path}.estimates;int')}"
                 if sweep_path else "–")
        rows.append([f"`{profile}`", nb, _hl(f"{src}:{path}.setting"), budget, ratios,
                     f"{len(rec['usable'])} of {tried}", _hl(f"{src}:{path}.adequate"), sweep])
    return _table(["profile", "notebook", "setting", "profile's budget (chains × (burn-in + draws))",
                   "profile / long chain at the calibration checkpoints (* unconverged)", "usable grid cells",
                   "adequate (±5%; ±2 SE where ≈ 0)", "sweep's estimates unconverged"], rows)


def t_cross_machine(data: dict) -> str:
    """The same code, seed and config on two machines (benchmarks/compare_headlines.py)."""
    rows = []
    for nb, rec in lookup(data, "bench/cross_machine_cpu:notebooks").items():
        p = f"bench/cross_machine_cpu:notebooks.{nb}"
        flipped = "; ".join(f"`{f}`" for f in rec["flags_flipped"]) or "none"
        only = ", ".join(f"`{e}`" for e in rec["in_one_run_only"]) or "none"
        rows.append([NOTEBOOK_TITLES[nb], _hl(f"{p}.numbers"), _hl(f"{p}.identical;pct"), _hl(f"{p}.within_1pct;pct"),
                     _hl(f"{p}.within_5pct;pct"), f"{len(rec['flags_flipped'])} of {_hl(f'{p}.flags')}: {flipped}",
                     only])
    return _table(["notebook", "numbers compared", "identical", "within 1%", "within 5%", "yes/no findings flipped",
                   "entries in one run only"], rows)


TABLES = {
    "verdicts": t_verdicts,
    "cross-machine": t_cross_machine,
    "sgld-calibration": t_sgld_calibration,
    "regression-pilots": t_regression_pilots,
    "regression-boundaries": t_regression_boundaries,
    "residual-comparison": t_residual_comparison,
    "regression-stages": t_regression_stages,
    "regression-llc": t_regression_llc,
    "regression-signatures": t_regression_signatures,
    "essential-dynamics": t_ed,
    "lm-summary": t_lm_summary,
    "lm-stages": t_lm_stages,
    "lm-signatures": t_lm_signatures,
    "lm-one-layer": t_lm_one_layer,
    "ridge-summary": t_ridge_summary,
    "ridge-per-m": t_ridge,
    "toy-potentials": t_toy,
    "hessian-boundaries": t_hessian,
    "rllc-summary": t_rllc_summary,
    "rllc-findings": t_rllc_findings,
    "rllc-heads": t_rllc_heads,
    "profile-times": t_profiles,
}


# -------------------------------------------------------------------------------- figures

# which paper a figure's number refers to, by the notebook that draws it
PAPER_OF_NOTEBOOK = {"01": "H", "02": "H", "03": "C", "04": "W", "05": "H"}
PAPER_ORDER = {"H": 0, "DL": 1, "C": 2, "W": 3}
NOTEBOOK_TITLES = {"01": "01 — language-model stages", "02": "02 — regression stages", "03": "03 — transient ridge",
                   "04": "04 — refined LLCs of attention heads", "05": "05 — curvature vs degeneracy"}
_FIG = re.compile(r"^fig([A-Z]?)(\d+)([a-z]?)_(.*)$")


def notebook_of(stem: str) -> str:
    """The notebook that draws a committed figure, from its file name."""
    if "toy_potentials" in stem or stem.startswith("fig6b_"):
        return "05"
    if "_ridge_" in stem:
        return "03"
    if any(k in stem for k in ("rllc", "per_head", "head_clusters", "k_composition")):
        return "04"
    if "_regression_" in stem:
        return "02"
    if "_lm" in stem:
        return "01"
    raise ValueError(f"figure {stem}: no notebook known for it")


def paper_of(stem: str) -> str:
    """The citation key whose figure a committed figure reproduces: essential dynamics is [DL]'s."""
    if "essential_dynamics" in stem or "_ed_" in stem:
        return "DL"
    return PAPER_OF_NOTEBOOK[notebook_of(stem)]


def figure_label(stem: str) -> str:
    """'[H] Fig. C.7' for figC7_regression_layer_norms."""
    m = _FIG.match(stem)
    appendix, number, sub = m.group(1), m.group(2), m.group(3)
    return f"[{paper_of(stem)}] Fig. {appendix + '.' if appendix else ''}{number}{sub}"


def figure_sort_key(stem: str):
    m = _FIG.match(stem)
    return (PAPER_ORDER[paper_of(stem)], m.group(1), int(m.group(2)), m.group(3), m.group(4))


def committed_figures(root: Path = ROOT) -> list[tuple[str, dict[str, Path]]]:
    """Every committed PNG as (stem, {profile: path}), by paper and figure number."""
    found: dict[str, dict[str, Path]] = {}
    for profile, folder in profile_folders(root):
        for path in folder.glob("fig*.png"):
            found.setdefault(path.stem, {})[profile] = path
    return sorted(found.items(), key=lambda kv: figure_sort_key(kv[0]))


def figure_table(prefix: str, notebook: str | None = None, root: Path = ROOT,
                 profiles: tuple[str, ...] = ("cpu", "long")) -> str:
    """A table of the committed figures, one column per profile (`cpu` and `long` by default), one
    row per figure name that one of them draws, by paper and figure number; image paths start with
    ``prefix`` (the way from the page to the repository root)."""
    rows = []
    for stem, paths in committed_figures(root):
        if (notebook and notebook_of(stem) != notebook) or not set(profiles) & set(paths):
            continue
        title = f"**{figure_label(stem)}**<br>`{stem}`" + ("" if notebook else f"<br>notebook {notebook_of(stem)}")
        cells = [f"![{stem}, {p}]({prefix}{paths[p].relative_to(root).as_posix()})" if p in paths else "–"
                 for p in profiles]
        rows.append("| " + " | ".join([title, *cells]) + " |")
    if not rows:
        return ""
    head = "| figure | " + " | ".join(f"`{p}`" for p in profiles) + " |\n|---|" + "---|" * len(profiles) + "\n"
    return head + "\n".join(rows) + "\n"


# -------------------------------------------------------------------------------- verdicts

# One line per paper claim: (claim, verdict with references, results page). The docs' home page and
# README.md's block between the verdict markers are both rendered from this list.
VERDICTS = [
    ("[H] §6, Fig. 1b: the regression transformer's LLC finds five stages LR1 ↑ LR2 ↑ LR3 ↓ LR4 ↓ LR5 ↑ "
     "(boundaries 1k / 40k / 126k / 320k of 500k steps)",
     "**4 of 5** at `long` (the paper's 500k steps, seed 0): boundaries "
     "{hl}`long/02:seeds.seed_0.boundaries_vs_paper.0.detected;int` / "
     "{hl}`long/02:seeds.seed_0.boundaries_vs_paper.1.detected;int` / "
     "{hl}`long/02:seeds.seed_0.boundaries_vs_paper.3.detected;int` (+ one inside LR2); LR3 and LR4 merge into one "
     "LLC decrease, also with the authors' doubled residual stream (its own 500k-step run: boundaries "
     "{hl}`long-paper_code/02:seeds.seed_0.boundaries.0.step;int` / "
     "{hl}`long-paper_code/02:seeds.seed_0.boundaries.1.step;int` / "
     "{hl}`long-paper_code/02:seeds.seed_0.boundaries.2.step;int`, no saddle in 40k–320k) and with their 10× weaker "
     "SGLD localization. `cpu` (10k steps): LR1, LR2, one decrease, a small rise",
     "results/02_regression_stages"),
    ("[H] App. C: regression signatures (task prior, ICL, embedding and LayerNorm collapses, OOD turn) in their stages",
     "**yes at `long`**: final-LayerNorm collapse at {hl}`long/02:seeds.seed_0.signatures.7.step;int`, OOD turn at "
     "{hl}`long/02:seeds.seed_0.signatures.8.step;int`, first attention LayerNorm at "
     "{hl}`long/02:seeds.seed_0.signatures.9.step;int`, each in the paper's stage window; "
     "not reproduced: the ICL_{D:K} dip and embedding/unembedding alignment",
     "results/02_regression_stages"),
    ("[H] §5, Fig. 1a: the language model's LM1 (bigrams) → LM2 (n-grams, positional embedding)",
     "**yes**: an LLC rise ending at step {hl}`cpu/01:stages.boundaries.2.step;int` (paper 900), "
     "the positional embedding comes into use after it",
     "results/01_lm_stages"),
    ("[H] §5: LM3–LM4, previous-token and induction heads, ICL-score drop",
     "**no on plain text** (no induction head at `cpu` nor in pilots up to 44M tokens); **LM4 in kind on "
     "analogue data at `long`**: induction circuit formed at step "
     "{hl}`long/01:induction_by_content.formed_step;int` inside an LLC rise that ends at "
     "{hl}`long/01:stages.boundaries.4.step;int`; LM3's LLC decrease not seen",
     "results/01_lm_stages"),
    ("[H] Fig. 2, App. A.1: the LLC separates potentials the Hessian cannot",
     "**yes**: {worst_toy}; the Hessian at w* is identically zero for the three most degenerate ones",
     "results/05_hessian_comparison"),
    ("[H] Fig. 6b: curvature finds only some of the LLC's boundaries",
     "**in direction** at `long`: trace and top eigenvalue find "
     "{hl}`long/05:llc_boundaries_found_by_trace` of the LLC's 3 boundaries; at `cpu` the trace finds "
     "{hl}`cpu/05:llc_boundaries_found_by_trace` of 2 (no contrast at 2% of the steps)",
     "results/05_hessian_comparison"),
    ("[C]: transient ridge for intermediate task diversity M, a task-diversity threshold, an LLC crossing",
     "**yes, qualitatively**: transient at M = {hl}`cpu/03:transient_m`, threshold M ≈ "
     "{hl}`cpu/03:task_diversity_threshold.threshold;.0f` at D = 3 (paper: 128–362 at D = 8)",
     "results/03_transient_ridge"),
    ("[W]: per-head refined LLCs differentiate; drLLC ordered by domain; induction heads separate first in layer 1",
     "**partly**: heads differentiate by layer, whole-model drLLC train > German > code (both profiles); at `long` "
     "layer 1's heads differentiate late (CV {hl}`long/04:wrllc_cv.layer_1.first;.2f` → "
     "{hl}`long/04:wrllc_cv.layer_1.last;.2f`) and cluster reproducibly chain by chain (ARI "
     "{hl}`long/04:clustering.layer_1.chain_split.agreement;.2f`, with a calibrated budget), but the three induction "
     "heads share their cluster with one multigram head: not in a cluster of their own, by one head",
     "results/04_rllc_heads"),
]

# the 'yes' of the Fig. 2 verdict is derived, not typed: the worst |λ̂ − λ| over the potentials
def _worst_toy(data: dict) -> tuple[str, float]:
    toys = lookup(data, "cpu/05:toy_potentials")
    worst = max(toys, key=lambda t: abs(t["llc_estimate"] - t["llc_exact"]))
    return worst["potential"], worst["llc_estimate"] - worst["llc_exact"]


def verdict_table(data: dict, link_prefix: str = "", suffix: str = ".md") -> str:
    """The claim/verdict table as markdown with references; links to ``link_prefix + page + suffix``."""
    name, err = _worst_toy(data)
    rows = []
    for claim, verdict, page in VERDICTS:
        verdict = verdict.replace("{worst_toy}", (
            f"λ̂ within {abs(err):.3f} of the exact λ for all seven potentials, the worst `{name}` "
            f"({{hl}}`cpu/05:toy_potentials.potential={name}.llc_estimate;.3f` for "
            f"{{hl}}`cpu/05:toy_potentials.potential={name}.llc_exact;.3g`)"))
        rows.append([claim, verdict, f"[{page.split('/')[-1][:2]}]({link_prefix}{page}{suffix})"])
    return _table(["paper claim", "reproduces here?", "results"], rows)


def readme_block(data: dict) -> str:
    return render_plain(verdict_table(data, link_prefix="docs/"), data)


# README.md's quick-start table: the `make figures` row from the timed run's record
# (benchmarks/results/make_figures_cpu_timings.json), the other commands' measured times as text.
COMMAND_TIMES = [
    ("`make figures`",
     "{hl}`bench/make_figures_cpu_timings:wall_seconds_running;h` of notebooks from an empty cache on both cores, "
     "plus {hl}`bench/make_figures_cpu_timings:install_seconds;min` of installing, when last timed end to end in a "
     "fresh clone with nothing else running ({hl}`bench/make_figures_cpu_timings:machine`, "
     "{hl}`bench/make_figures_cpu_timings:written`): {aim} the 2 h this project aims at on that CPU; per notebook, and a "
     "Zen 3's parts (projected at {hl}`bench/make_figures_cpu_parts_zen3:projection_s;h`, not measured), on "
     "the [profiles page](docs/profiles.md); {hl}`bench/make_figures_cpu_cached:wall_seconds;int` s with the cache "
     "full ({hl}`bench/make_figures_cpu_cached:machine`)"),
    ("`make test`", "≈ 3 min to install in a fresh clone, then ≈ 6 min (606 tests and the five notebooks at `smoke`; 5 min 46 s on a 2-core Intel Xeon)"),
    ("`make lab`", "`STAGEWISE_PROFILE=smoke make lab` runs each notebook in 10–35 s"),
    ("`make docs`", "106 s from scratch (one core shared with other jobs); CI mode: [contributing](docs/contributing.md)"),
]


def times_block(data: dict) -> str:
    record = lookup(data, "bench/make_figures_cpu_timings")
    total = record["wall_seconds_running"] + record.get("install_seconds", 0.0)
    aim = "within" if total <= 2 * 3600 else "over"
    rows = [[command, text.replace("{aim}", aim)] for command, text in COMMAND_TIMES]
    return render_plain(_table(["command", "measured on a 2-core machine, no GPU"], rows), data)


# name -> (start marker, end marker, renderer) of each generated block of README.md
README_BLOCKS = {
    "verdicts": (README_START, README_END, readme_block),
    "times": ("<!-- times:start -->", "<!-- times:end -->", times_block),
}


def rewrite_readme(path: Path, data: dict) -> bool:
    """Replace each generated block (:data:`README_BLOCKS`); True when the file changed."""
    text = original = path.read_text()
    present = [(start, end, render) for start, end, render in README_BLOCKS.values() if start in text and end in text]
    if not present:
        raise SystemExit(f"{path}: none of the generated blocks ({', '.join(README_BLOCKS)}) has its markers")
    for start, end, render in present:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{render(data)}{end}{tail}"
    if text != original:
        path.write_text(text)
    return text != original


def readme_in_sync(path: Path, data: dict) -> bool:
    text = path.read_text()
    for start, end, render in README_BLOCKS.values():
        if start not in text:
            continue  # no block (yet): nothing to keep in sync
        block = text.split(start, 1)[1].split(end, 1)[0]
        if block.strip() != render(data).strip():
            return False
    return True


# -------------------------------------------------------------------------------- checks


def source_refs(docs: Path = ROOT / "docs") -> list[tuple[Path, str]]:
    refs = []
    for path in sorted(docs.rglob("*.md")):
        if "_generated" in path.parts or "_autosummary" in path.parts:
            continue
        refs += [(path, m.group(1)) for m in ROLE.finditer(path.read_text())]
    return refs


def check_sources(data: dict) -> list[str]:
    problems = []
    for path, ref in source_refs():
        try:
            resolve(data, ref)
        except KeyError as exc:
            problems.append(f"{path.relative_to(ROOT)}: {exc}")
    for name, table in TABLES.items():
        try:
            render_plain(table(data), data)
        except KeyError as exc:
            problems.append(f"table {name}: {exc}")
    return problems


def check_html(html_dir: Path, data: dict) -> list[str]:
    problems, spans = [], 0
    for page in sorted(html_dir.rglob("*.html")):
        text = page.read_text(errors="replace")
        spans += len(SPAN.findall(text))
        problems += [f"{page.relative_to(html_dir)}: {p}" for p in check_spans(text, data)]
    if spans == 0:
        problems.append(f"{html_dir}: no generated number found (not a stagewise docs build?)")
    return problems + check_links(html_dir)


_LINK = re.compile(r'(?:href|src)="([^"#?]+)[^"]*"')


def check_links(html_dir: Path) -> list[str]:
    """Every relative link and image of the built site points at a file of the site; nothing is
    loaded from another host (the site must render offline)."""
    problems = []
    for page in sorted(html_dir.rglob("*.html")):
        if page.relative_to(html_dir).parts[0].startswith("_"):
            continue  # the theme's template fragments in _static/
        text = page.read_text(errors="replace")
        for target in _LINK.findall(text):
            if re.match(r"(mailto:|https?:)", target):
                continue
            if target.startswith("//"):
                problems.append(f"{page.relative_to(html_dir)}: protocol-relative link {target}")
            elif not (page.parent / html.unescape(target)).exists():
                problems.append(f"{page.relative_to(html_dir)}: broken link {target}")
        for remote in re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="(https?://[^"]+)"', text):
            problems.append(f"{page.relative_to(html_dir)}: loads {remote} from another host")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's generated blocks")
    parser.add_argument("--check-readme", action="store_true", help="exit 1 when a README.md generated block is stale")
    parser.add_argument("--check-html", type=Path, help="check every generated number of a built site")
    parser.add_argument("--check-sources", action="store_true", help="every reference in docs/ resolves")
    parser.add_argument("--print-table", help="print one table (markdown, numbers rendered)")
    args = parser.parse_args(argv)
    data = load()
    problems: list[str] = []
    if args.readme:
        changed = rewrite_readme(ROOT / "README.md", data)
        print("README.md generated blocks " + ("rewritten" if changed else "already up to date"))
    if args.check_readme and not readme_in_sync(ROOT / "README.md", data):
        problems.append("README.md: a generated block differs from `python docs/generate.py --readme`")
    if args.check_sources:
        problems += check_sources(data)
    if args.check_html:
        problems += check_html(args.check_html, data)
    if args.print_table:
        print(render_plain(TABLES[args.print_table](data), data))
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
