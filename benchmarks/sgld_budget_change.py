"""What a change of SGLD budget moved: notebooks 01 and 04's headline JSON at a git revision
(before the change) against the working tree's (after re-running them), at `cpu` and `long`.

    python benchmarks/sgld_budget_change.py --before 6fe2f66  # the revision before the LM's burn-in
    python benchmarks/sgld_budget_change.py --before 95f450e --notebooks 04 --name sgld_budget_change_heads
                                                            # before the per-head burn-in

Writes benchmarks/results/<name>.{json,md} (default sgld_budget_change): the LM's stage boundaries (step, interval,
LLC there) and the LLC's first / peak / last value; the one-layer model's boundaries; notebook 04's
whole-model drLLCs, the share of per-head estimates flagged, the layer-1 clustering and findings.
A notebook whose JSON is the same before and after (not re-run) is reported as such.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from stagewise.headline import to_json_value

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
NOTEBOOKS = {"01": "01_lm_stages", "04": "04_rllc_heads"}
FOLDERS = {"cpu": "figures", "long": "figures/long"}


def _json_at(rev: str | None, path: str) -> dict | None:
    if rev is None:
        p = ROOT / path
        return json.loads(p.read_text()) if p.exists() else None
    try:
        text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout
    except subprocess.CalledProcessError:
        return None
    return json.loads(text)


def _boundaries(stages: dict) -> list[dict]:
    return [{"step": b["step"], "interval": b["interval"], "llc": b["llc"]} for b in stages["boundaries"]]


def lm_summary(d: dict) -> dict:
    st = d["stages"]
    out = {"boundaries": _boundaries(st), "directions": [s["llc_direction"] for s in st["stages"]],
           "llc_first": st.get("llc_first"), "llc_max": st.get("llc_max"), "llc_max_step": st.get("llc_max_step"),
           "llc_last": st.get("llc_last"), "flagged_checkpoints": len(d.get("flagged_checkpoints") or [])}
    if d.get("one_layer"):
        out["one_layer_boundaries"] = _boundaries(d["one_layer"]) if "boundaries" in d["one_layer"] else None
    return out


def _partition(clusters: dict | None) -> str | None:
    """Heads grouped by cluster, e.g. '1:0 1:4; 1:1 1:2' (cluster numbers are arbitrary)."""
    if not clusters:
        return None
    groups: dict = {}
    for head, c in clusters.items():
        groups.setdefault(c, []).append(head.removeprefix("head_").replace("_", ":"))
    return "; ".join(sorted(" ".join(sorted(g)) for g in groups.values()))


def rllc_summary(d: dict) -> dict:
    layer1 = d["clustering"].get("layer_1", {})
    cal = (d.get("sgld_calibration") or {})
    wrllc = cal.get("wrllc") or {}
    split = {layer: (c.get("chain_split") or {}).get("agreement") for layer, c in d["clustering"].items()}
    return {"whole_model_drllc_final": d["whole_model_drllc_final"], "flagged_share": d["flagged_share"],
            "per_head_unconverged_share": (cal.get("sweep") or {}).get("share_unconverged"),
            "calibration_ratios": [round(r["ratio"], 3) for r in wrllc.get("long_chain", [])] or None,
            "final_wrllc_train": {h: v["llc_train"]
                                  for h, v in d["heads"].items() if v.get("llc_train") is not None},
            "layer_0_clusters": _partition(d["clustering"].get("layer_0", {}).get("clusters")),
            "layer_1_clusters": _partition(layer1.get("clusters")), "layer_1_silhouette": layer1.get("silhouette"),
            "chain_split_agreement": {k: v for k, v in split.items() if v is not None} or None,
            "induction_heads_in_own_cluster": layer1.get("induction_heads_in_own_cluster"),
            "findings_holding": sum(bool(f.get("holds")) for f in d.get("findings", [])),
            "findings": len(d.get("findings", []))}


def _fmt_boundaries(bs: list[dict] | None) -> str:
    if not bs:
        return "—"
    return ", ".join(f"{b['step']:,.0f} [{b['interval'][0]:,.0f}–{b['interval'][1]:,.0f}] λ̂ {b['llc']:.1f}" for b in bs)


def _fmt_value(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return " ".join(_fmt_value(x) for x in v)
    if isinstance(v, dict):
        return _fmt_mapping(v)
    return str(v)


def _fmt_mapping(m: dict) -> str:
    def name(k: str) -> str:  # head_1_3 -> 1:3
        return k.removeprefix("head_").replace("_", ":") if k.startswith("head_") else k
    return ", ".join(f"{name(k)} {_fmt_value(v)}" for k, v in m.items())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision of the JSON before the change")
    parser.add_argument("--notebooks", nargs="+", choices=sorted(NOTEBOOKS), default=sorted(NOTEBOOKS),
                        help="which notebooks to compare (default: all)")
    parser.add_argument("--name", default="sgld_budget_change", help="output file stem under benchmarks/results/")
    args = parser.parse_args()
    record: dict = {"before_revision": args.before}
    md = [f"# SGLD budget change: headline JSON at `{args.before}` (before) and now (after)\n"]
    for profile, folder in FOLDERS.items():
        for nb, stem in NOTEBOOKS.items():
            if nb not in args.notebooks:
                continue
            path = f"{folder}/{stem}.json"
            before, after = _json_at(args.before, path), _json_at(None, path)
            if before is None or after is None:
                continue
            summarise = lm_summary if nb == "01" else rllc_summary
            b, a = summarise(before), summarise(after)
            same = before == after
            record[f"{profile}_{nb}"] = {"before": b, "after": a, "rerun": not same}
            md.append(f"\n## notebook {nb}, `{profile}`" + (" (not re-run: the JSON is unchanged)" if same else "")
                      + "\n\n| | before | after |\n|---|---|---|")
            for key in b:
                fb, fa = b[key], a.get(key)
                if "boundaries" in key:
                    fb, fa = _fmt_boundaries(fb), _fmt_boundaries(fa)
                elif key.endswith("_step"):
                    fb, fa = (f"{v:,.0f}" if isinstance(v, (int, float)) else _fmt_value(v) for v in (fb, fa))
                else:
                    fb, fa = _fmt_value(fb), _fmt_value(fa)
                md.append(f"| {key} | {fb} | {fa} |")
    (OUT / f"{args.name}.json").write_text(json.dumps(to_json_value(record), indent=1) + "\n")
    (OUT / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
