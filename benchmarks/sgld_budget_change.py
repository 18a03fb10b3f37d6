"""What a change of SGLD budget moved: notebooks 01 and 04's headline JSON at a git revision
(before the change) against the working tree's (after re-running them), at `cpu` and `long`.

    python benchmarks/sgld_budget_change.py --before 6fe2f66  # the revision before the LM's burn-in

Writes benchmarks/results/sgld_budget_change.{json,md}: the LM's stage boundaries (step, interval,
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


def rllc_summary(d: dict) -> dict:
    layer1 = d["clustering"].get("layer_1", {})
    return {"whole_model_drllc_final": d["whole_model_drllc_final"], "flagged_share": d["flagged_share"],
            "layer_1_clusters": layer1.get("n_clusters"), "layer_1_silhouette": layer1.get("silhouette"),
            "induction_heads_in_own_cluster": layer1.get("induction_heads_in_own_cluster"),
            "findings_holding": sum(bool(f.get("holds")) for f in d.get("findings", [])),
            "findings": len(d.get("findings", []))}


def _fmt_boundaries(bs: list[dict] | None) -> str:
    if not bs:
        return "—"
    return ", ".join(f"{b['step']:,.0f} [{b['interval'][0]:,.0f}–{b['interval'][1]:,.0f}] λ̂ {b['llc']:.1f}" for b in bs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision of the JSON before the change")
    args = parser.parse_args()
    record: dict = {"before_revision": args.before}
    md = [f"# SGLD budget change: headline JSON at `{args.before}` (before) and now (after)\n"]
    for profile, folder in FOLDERS.items():
        for nb, stem in NOTEBOOKS.items():
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
                elif key.endswith("_step") and isinstance(fb, (int, float)):
                    fb, fa = f"{fb:,.0f}", (f"{fa:,.0f}" if isinstance(fa, (int, float)) else fa)
                elif isinstance(fb, float):
                    fb, fa = f"{fb:.3g}", (f"{fa:.3g}" if isinstance(fa, float) else fa)
                elif isinstance(fb, dict):
                    fb = ", ".join(f"{k} {v:.3g}" for k, v in fb.items())
                    fa = ", ".join(f"{k} {v:.3g}" for k, v in (fa or {}).items())
                elif isinstance(fb, list):
                    fb, fa = " ".join(map(str, fb)), " ".join(map(str, fa or []))
                md.append(f"| {key} | {fb} | {fa} |")
    (OUT / "sgld_budget_change.json").write_text(json.dumps(to_json_value(record), indent=1) + "\n")
    (OUT / "sgld_budget_change.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
