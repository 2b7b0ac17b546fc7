"""The assignment's four questions on removing channels, answered with the run's numbers."""
from __future__ import annotations

import re
from pathlib import Path
from string import Template

from compress.kinds import Kind
from compress.report.markdown import fmt_acc, fmt_pct, link, md_table
from compress.report.runs import RunData
from compress.report.sections import all_zero_filters


def _blocks(path: Path) -> dict[str, str]:
    """{marker: text} of a template file: each block runs from `<!-- marker -->` to the next
    marker, its line breaks folded into spaces (a list item stays one line)."""
    text = re.sub(r"\A<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.S)  # the file's own comment
    parts = re.split(r"^<!-- (\w+) -->$", text, flags=re.M)
    return {name: " ".join(body.split()) for name, body in zip(parts[1::2], parts[2::2])}


TEXT = _blocks(Path(__file__).with_name("questions.md"))





def questions_section(runs: list[RunData]) -> list[str]:
    out = ["## Removing the pruned channels (slim): four questions, answered with this run's numbers", ""]
    filt = [r for r in runs if r.kind == Kind.FILTER]
    for r in runs:
        if r.kind != Kind.FILTER:
            z = all_zero_filters(r)
            extra = (f": {z[0]} of {z[1]} conv filters are all zero, so "
                     f"{'there is nothing to remove' if z[0] == 0 else 'only those could be removed'}") if z else ""
            out += [f"- {r.label}: channel removal does not apply to {r.kind} pruning (zeros are scattered inside "
                    f"filters){extra}.", ""]
    with_slim = [r for r in filt if r.slim and "params" in r.slim]
    for r in filt:
        if r not in with_slim:
            did = f"failed ({r.failed['slim']})" if "slim" in r.failed else "did not run"
            out += [f"- {r.label}: the slim stage {did} (no `{link(r.rel, 'slim/slim.json')}`); "
                    f"run `compress slim {link(r.rel, r.manifest.get('result', {}).get('path', 'MODEL.pt'))}` "
                    "and this report again to answer the questions below with its numbers.", ""]
    if not with_slim:
        out += [TEXT["no_slimmed_model"], ""]
        return out
    rows = []
    for r in with_slim:
        s = r.slim
        check = s.get("check") or {}
        rows.append([r.label, f"{s['params']['dense']:,} → {s['params']['slim']:,} ({s['params']['slim'] / s['params']['dense']:.3f}×)",
                     f"{s['macs']['dense']:,} → {s['macs']['slim']:,} ({s['macs']['slim'] / s['macs']['dense']:.3f}×)",
                     f"{fmt_pct(s['filter_sparsity']['masked'])} → {fmt_pct(s['filter_sparsity']['slim'])}",
                     f"{fmt_pct(s['weight_sparsity']['masked'])} → {fmt_pct(s['weight_sparsity']['slim'])}",
                     f"{fmt_acc(check.get('acc_masked'))} → {fmt_acc(check.get('acc_slim'))}",
                     f"{check.get('max_rel_diff', float('nan')):.1e}" if check else "–"])
    out += [md_table(["model", "parameters dense → slim", "MACs / image dense → slim", "filter sparsity masked → slim",
                    "weight sparsity masked → slim", "test accuracy masked → slim", "max relative logit difference"],
                   rows), ""]
    r = with_slim[-1]
    s, check = r.slim, r.slim.get("check") or {}
    p, macs = s["params"], s["macs"]
    arch = r.manifest.get("model", {}).get("name", "the model")
    numbers = {
        "label": r.label, "arch": arch,
        "filter_masked": fmt_pct(s["filter_sparsity"]["masked"]), "filter_slim": fmt_pct(s["filter_sparsity"]["slim"]),
        "weight_masked": fmt_pct(s["weight_sparsity"]["masked"]), "weight_slim": fmt_pct(s["weight_sparsity"]["slim"]),
        "filters_removed": s.get("filters_removed", "?"), "removed_pct": f"{100 * s.get('filter_fraction_removed', 0):.1f}",
        "params_cut": f"{100 * (1 - p['slim'] / p['dense']):.1f}", "macs_cut": f"{100 * (1 - macs['slim'] / macs['dense']):.1f}",
        "acc_masked": fmt_acc(check.get("acc_masked")), "acc_slim": fmt_acc(check.get("acc_slim")),
        "images": check.get("images", "?"),
        "differ": "" if check.get("acc_masked") == check.get("acc_slim") else " (they differ: see the check)",
        "max_rel_diff": f"{check.get('max_rel_diff', float('nan')):.1e}",
        "rounding": (f", hence the {check['max_rel_diff']:.1e} relative difference above"
                     if check.get("max_rel_diff") is not None else ""),
    }
    blocks = ["intro", "q1", "q2_measured" if check else "q2_unmeasured", "q3",
              "q4_resnet" if arch.startswith("resnet") else "q4_other"]
    for name in blocks:
        out += [Template(TEXT[name]).substitute(numbers), ""]
    return out
