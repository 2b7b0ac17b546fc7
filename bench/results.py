"""docs/results/, generated rather than typed: every section of bench/sections.py run from scratch
on the bundled sample, one folder per section, and written as one Markdown file per section with
its commands in order, the time each took, what each printed (its tables) and its figures, under
the machine (CPU and the flags that decide its speed: AVX-512, VNNI, AMX, bf16), the date and
the versions. docs/results.md, the index, is rewritten from the files that exist.

    python -m compress.bench.results                       # every section: about 6 hours on 2 cores
    python -m compress.bench.results --only runtimes,sizes # some sections (--list names them)
    python -m compress.bench.results --quick               # every section on a tiny model: the commands
                                                           # and the files' shape, in minutes (CI runs it)

Timings mean something only on an otherwise idle machine: run nothing else meanwhile.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compress.bench.sections import DENSE, SECTIONS, Section, Step, by_name
from compress.env import cpu_flags, cpu_name, versions
from compress.errors import CompressError
from compress.export.tables import human_size
from compress.io import atomic_write
from compress.report.markdown import md_table
from compress.report.runs import read_json

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
BOX = "┏┃┡│└├┌╷╵╶"
MARK = ".results-section"  # the folders this script made (and may replace)
TAIL = 12
VERSIONS = ("python", "torch", "torch_pruning", "onnxruntime", "openvino")


def speed_flags() -> list[str]:
    """The flags of this CPU that decide its inference speed (INT8: VNNI, AMX; bf16 units)."""
    flags = cpu_flags()
    return [f for f in FLAGS if f in flags]


def shown(argv: tuple[str, ...]) -> str:
    """A step as a user would type it in the section's folder."""
    words = [a.replace("{repo}/", "REPO/") for a in argv]
    if words[:2] == ["-m", "compress"]:
        words = ["compress", *words[2:]]
    elif words[:2] == ["-m", "torch.distributed.run"]:
        words = ["torchrun", *words[2:]]
    else:
        words = ["python", *words]
    return " ".join(words)


def expand(argv: tuple[str, ...], cwd: Path) -> list[str]:
    """{repo} filled in; a word with * becomes the one file it matches (a checkpoint's name holds
    its accuracy, so the commands cannot name it ahead of the run)."""
    words = []
    for a in argv:
        a = a.replace("{repo}", str(REPO))
        if "*" in a:
            found = sorted(glob.glob(a, root_dir=cwd))
            if len(found) != 1:
                raise CompressError(f"`{a}` matched {len(found)} files in {cwd}, not one",
                                    "an earlier step did not write what the next one reads")
            a = found[0]
        words.append(a)
    return words


def run_step(step: Step, quick: bool, cwd: Path, log: Path) -> tuple[str, float]:
    """One step in a fresh process; what it printed on stdout and its wall time. Its stderr goes
    to LOG; a step that fails ends the section with the end of that log."""
    argv = step.argv(quick)
    env = dict(os.environ, COLUMNS="140", COMPRESS_CACHE=str(cwd.parent / "cache"), **dict(step.env))
    t0 = time.perf_counter()
    with open(log, "a") as err:
        err.write(f"$ {shown(argv)}\n")
        err.flush()
        done = subprocess.run([sys.executable, *expand(argv, cwd)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=err, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-TAIL:])
        raise CompressError(f"`{shown(argv)}` exited with {done.returncode} in {cwd}:\n{tail}",
                            f"its whole log: {log}")
    return done.stdout, seconds


def excerpt(text: str, show: str) -> str:
    """What of a step's output goes into the file: all of it, its tables (with the line above each,
    their titles, and the lines after the last one, their verdicts) or its last lines."""
    lines = [line.rstrip() for line in text.splitlines()]
    if show == "tail":
        return "\n".join(lines[-TAIL:])
    if show != "tables":
        return "\n".join(lines).strip("\n")
    in_table = [line.lstrip()[:1] in BOX and line.strip() != "" for line in lines]
    if not any(in_table):
        return "\n".join(lines[-TAIL:])
    last = max(i for i, t in enumerate(in_table) if t)
    keep = [i for i, t in enumerate(in_table)
            if t or i > last or (i + 1 < len(lines) and in_table[i + 1] and lines[i].strip())
            or (i > 0 and in_table[i - 1] and lines[i].startswith(" ") and lines[i].strip())]
    return "\n".join(lines[i] for i in keep).strip("\n")


def header(section: Section, seconds: float, quick: bool) -> str:
    """The section's first lines: a comment the index reads, then command, date, machine, versions."""
    v = versions()
    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "flags": speed_flags(),
            "cores": os.cpu_count(), "seconds": round(seconds), "quick": quick}
    again = f"python -m compress.bench.results --only {section.name}" + (" --quick" if quick else "")
    return (f"<!-- generated: {json.dumps(meta)} -->\n# {section.title}\n\n"
            f"Generated by `{again}` on {meta['date']} in **{seconds:.0f} s** from scratch; CPU: {meta['cpu']}, "
            f"{meta['cores']} cores ({', '.join(meta['flags']) or 'no AVX-512/VNNI/AMX'}); "
            + ", ".join(f"{k} {v[k]}" for k in VERSIONS if k in v)
            + "; data: the bundled CIFAR-10 sample (1017 test images: one standard error of an accuracy is about "
            "1.4 points)." + (" **--quick: a tiny model and the shortest budgets; these numbers mean nothing.**"
                              if quick else ""))


def figure(src: Path, section: Section, out_dir: Path) -> str:
    """A PNG a step wrote, copied beside the section's file; its Markdown."""
    name = f"{section.name}_{src.parent.name}_{src.name}"
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out_dir / "figures" / name)
    return f"![{src.parent.name}/{src.name}](figures/{name})"


def embedded(path: Path, section: Section, out_dir: Path) -> str:
    """A Markdown file a step wrote (a report, a table), placed inside the section's file: its
    headings two levels down, its figures copied beside the section, links into its run folder
    (which does not travel with the docs) reduced to their text."""
    def image(m: re.Match) -> str:
        src = path.parent / m.group(2)
        return figure(src, section, out_dir) if src.is_file() else ""

    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", image, path.read_text())
    text = re.sub(r"(?<!!)\[([^\]]*)\]\((?!https?:)[^)]*\)", r"\1", text)
    return "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines()).strip()


def fresh_folder(path: Path) -> Path:
    """An empty folder for a section's run: made here, or made by an earlier run of this script."""
    if path.exists():
        if not (path / MARK).exists():
            raise CompressError(f"{path} exists and was not made by this script", "pass a new --work")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARK).touch()
    return path


def dense_model(work: Path, quick: bool) -> tuple[str, float]:
    """dense.pt, trained once per work folder for every section that needs it; its step's excerpt."""
    done = work / "dense.done.json"
    if done.exists() and (work / "dense.pt").exists():
        d = json.loads(done.read_text())
        return d["excerpt"], d["seconds"]
    printed, seconds = run_step(DENSE, quick, work, work / "dense.log")
    text = excerpt(printed, DENSE.show)
    done.write_text(json.dumps({"excerpt": text, "seconds": seconds}))
    return text, seconds


def run_section(section: Section, work: Path, out_dir: Path, quick: bool) -> Path:
    """Run a section's steps in WORK/NAME and write OUT_DIR/NAME.md (only when every step ran)."""
    folder = fresh_folder(work / section.name)
    log = folder / "stderr.log"
    parts, total = [], 0.0
    if section.dense:
        text, seconds = dense_model(work, quick)
        (folder / "dense.pt").symlink_to(work / "dense.pt")
        parts.append(f"`dense.pt`: `{shown(DENSE.argv(quick))}` ({seconds:.0f} s, trained first; each section that "
                     f"uses it links the same file). It printed, at the end:\n\n```text\n{text}\n```")
        total += seconds
    for i, step in enumerate(section.steps, 1):
        printed, seconds = run_step(step, quick, folder, log)
        total += seconds
        if step.run_folder:
            body = run_folder_tables(folder / step.run_folder)
        elif step.markdown:
            body = embedded(folder / step.markdown, section, out_dir)
        else:
            body = f"```text\n{excerpt(printed, step.show)}\n```"
        figs = [figure(folder / f, section, out_dir) for f in step.figures if (folder / f).exists()]
        parts.append(f"## {i}. `{shown(step.argv(quick))}`\n\n{seconds:.0f} s.\n\n{body}"
                     + "".join(f"\n\n{f}" for f in figs))
    how = "Each command ran in one folder, in this order; `REPO` is the repository's root."
    text = "\n\n".join([header(section, total, quick), section.about, how, *parts]) + "\n"
    text = text.replace(str(REPO), "REPO")  # what a command printed names this checkout as its commands do
    path = out_dir / f"{section.name}.md"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def run_folder_tables(run_dir: Path) -> str:
    """A prune command's run folder as Markdown tables: rounds, ONNX, INT8, fastest runtime."""
    m = read_json(run_dir / "manifest.json")
    export = read_json(run_dir / "onnx" / "export.json") or {}
    quant = read_json(run_dir / "onnx" / "quantize.json") or {}
    bench = read_json(run_dir / "bench" / "bench.json") or {}
    dense = m["dense"]
    rounds = [["dense", "0%", f"{dense.get('val_accuracy', float('nan')):.2f}%", f"{dense['accuracy']:.2f}%", "", ""]]
    rounds += [[f"round {r['round']}", f"{100 * r['sparsity']:.2f}%", f"{r['val_after_retrain']:.2f}%",
                f"{r['acc_after_retrain']:.2f}%", r["epochs"], f"{r['seconds']:.0f}"] for r in m["rounds"]]
    parts = [md_table(["model", "sparsity", "validation top-1", "test top-1", "epochs", "s"], rounds)]
    if export:
        parts.append(md_table(["ONNX file", "size", "× dense ONNX", "max rel. diff vs PyTorch", "argmax agree"],
                              [[f"`{Path(x['onnx']).name}`", human_size(x["bytes"]), f"{x['ratio']:.3f}",
                                f"{x['parity']['max_rel_diff']:.1e}", f"{100 * x['parity']['argmax_agreement']:.1f}%"]
                               for x in export["models"]]))
    if quant.get("models"):
        gates = [q.get("gate") or {"split": "test", "drop": q["drop"]} for q in quant["models"]]
        parts.append(md_table(["INT8 file", "fp32 test", "INT8 test", "drop (gate split)", "size", "× fp32"],
                              [[f"`{Path(q['int8']).name}`", f"{q['fp32_acc']:.2f}%", f"{q['int8_acc']:.2f}%",
                                f"{g['drop']:.2f} ({g['split']})", human_size(q["int8_bytes"]),
                                f"{q['int8_bytes'] / q['fp32_bytes']:.3f}"] for q, g in zip(quant["models"], gates)]))
    if bench.get("fastest"):
        parts.append(md_table(["model", "batch", "fastest runtime", "ms", "× dense fp32 (reference)"],
                              [[f["model"], f["batch_size"], f["runtime"], f"{f['median_ms']:.2f}",
                                f"{f['speedup']:.2f}× ({f['reference']})"] for f in bench["fastest"]], "lrlrr"))
    return "\n\n".join(parts)


def generated(path: Path) -> dict | None:
    """The comment on a section file's first line (None: no file, or not written by this script)."""
    try:
        first = path.read_text().split("\n", 1)[0]
    except OSError:
        return None
    if not first.startswith("<!-- generated: "):
        return None
    return json.loads(first.removeprefix("<!-- generated: ").removesuffix(" -->"))


def index(out_dir: Path, link_dir: str) -> str:
    """docs/results.md: every section, a link to its file and when and where it was generated."""
    rows = []
    for s in SECTIONS:
        g = generated(out_dir / f"{s.name}.md")
        if g is None:
            when = f"not generated yet: `--only {s.name}` (about {s.minutes} min)"
        else:
            flags = [f for f in g["flags"] if f in ("avx512_vnni", "avx512_bf16", "amx_int8")]
            when = (f"{g['date']}, {g['cpu']} ({', '.join(flags) or 'no VNNI/AMX'}), {g['seconds']} s"
                    + (", **--quick**" if g.get("quick") else ""))
        title = f"[{s.title}]({link_dir}/{s.name}.md)" if g else s.title
        rows.append([title, s.about.split(". ")[0].rstrip(".") + ".", when])
    return ("# Results\n\nEvery number under [results/](results/) is written by `python -m compress.bench.results` "
            "from commands it runs from scratch on the bundled CIFAR-10 sample (4068 training images, 814 of them "
            "held out for validation, and 1017 test images), one file per section, each with its commands in the "
            "order they ran, the time each took, what each printed, and the machine, date and versions. Choices "
            "are made on the validation split; the test split is reported. On 1017 test images one standard error "
            "of an accuracy is about 1.4 points: differences of a point or two between models are noise. Nothing "
            "here compares with results on the full CIFAR-10.\n\n"
            "`python -m compress.bench.results --only NAME` regenerates one section (`--list` names them), "
            "`--quick` checks every section's commands on a tiny model in minutes. No GPU was lent to the sessions "
            "that built this: GPU figures come from `python -m compress.bench.gpu_kit` "
            "([bench/GPU_KIT.md](../bench/GPU_KIT.md)) and are not in these tables.\n\n"
            + md_table(["section", "what it measures", "generated"], rows, "lll") + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.bench.results", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    p.add_argument("--only", default=None, metavar="LIST", help="comma-separated sections (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="name the sections, what they need and how long they take")
    p.add_argument("--quick", action="store_true", help="a tiny model and the shortest budgets (checks the script)")
    p.add_argument("--work", type=Path, default=None, help="where the runs go (default: a new temporary folder)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for the section files; the index goes beside it as DIR.md "
                        "(default docs/results; with --quick, WORK/results)")
    args = p.parse_args(argv)
    sections = by_name()
    if args.list:
        for s in SECTIONS:
            print(f"{s.name:16} about {s.minutes:3} min{'  (trains dense.pt first)' if s.dense else ''}  {s.title}")
        return 0
    names = args.only.split(",") if args.only else [s.name for s in SECTIONS]
    unknown = [n for n in names if n not in sections]
    if unknown:
        print(f"error: no section {unknown[0]!r}; the sections: {', '.join(sections)}", file=sys.stderr)
        return 2
    work = (args.work or Path(tempfile.mkdtemp(prefix="compress-results-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_dir = (args.out or (work / "results" if args.quick else DOCS / "results")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        t0 = time.perf_counter()
        print(f"{name}: running in {work / name}", flush=True)
        try:
            path = run_section(sections[name], work, out_dir, args.quick)
            print(f"{name}: wrote {path} ({time.perf_counter() - t0:.0f} s)", flush=True)
        except CompressError as e:
            print(f"error: section {name}: {e.message}" + (f"\n  {e.hint}" if e.hint else ""), file=sys.stderr,
                  flush=True)
            failed.append(name)
    index_path = out_dir.parent / f"{out_dir.name}.md"
    atomic_write(index_path, lambda tmp: tmp.write_text(index(out_dir, out_dir.name)))
    print(f"wrote {index_path}")
    if failed:
        print(f"error: {len(failed)} section(s) failed, their files unchanged: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
