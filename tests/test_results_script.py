"""The script that generates docs/results/ runs its sections top to bottom (--quick: a tiny model),
writes every table from the run it made, refuses what it did not make, and a failing step leaves
the section's file as it was. (CI runs every section with --quick after the suite: .ci/run.)"""
import json
import re

import pytest

from compress.bench import results, sections
from compress.bench.sections import Section, Step
from compress.errors import CompressError


def test_quick_writes_every_table_from_its_run(tmp_path):
    assert results.main(["--quick", "--work", str(tmp_path), "--only", "main_command,semi_structured"]) == 0
    text = (tmp_path / "results" / "main_command.md").read_text()
    run = tmp_path / "main_command" / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    meta = results.generated(tmp_path / "results" / "main_command.md")
    assert meta["quick"] is True and meta["cores"] >= 1 and meta["cpu"]
    assert "## 1. `compress filter --model vgg13" in text
    assert re.search(r"in \*\*\d+ s\*\* from scratch", text) and f"torch {manifest['versions']['torch']}" in text
    assert f"| round 1 | {100 * manifest['rounds'][0]['sparsity']:.2f}% |" in text
    assert f"{manifest['result']['accuracy']:.2f}%" in text
    for header in ("| ONNX file |", "| INT8 file |", "| model | batch | fastest runtime |"):
        assert header in text, header
    fastest = json.loads((run / "bench" / "bench.json").read_text())["fastest"]
    assert all(f"| {f['model']} | {f['batch_size']} | {f['runtime']} |" in text for f in fastest)
    # a step's printed table, and the index: generated sections linked, the others named with their command
    semi = (tmp_path / "results" / "semi_structured.md").read_text()
    assert (tmp_path / "semi_structured" / "semi_structured" / "semi_structured.json").exists()
    assert "2:4 storage vs dense" in semi and "┃ layer" in semi and "│ all layers" in semi
    index = (tmp_path / "results.md").read_text()
    assert "[2:4 semi-structured sparsity](results/semi_structured.md)" in index and "**--quick**" in index
    assert "not generated yet: `--only distill`" in index


def test_a_failing_step_fails_the_run_and_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    bad = Section("broken", "Broken", "About.", (Step(("-c", "print('half'); import sys; sys.exit(3)")),), minutes=1)
    monkeypatch.setattr(results, "by_name", lambda: {"broken": bad})
    out = tmp_path / "results"
    out.mkdir()
    (out / "broken.md").write_text("the earlier file\n")
    assert results.main(["--work", str(tmp_path / "w"), "--out", str(out), "--only", "broken"]) == 2
    assert (out / "broken.md").read_text() == "the earlier file\n"
    assert "exited with 3" in capsys.readouterr().err
    assert results.main(["--only", "nosuch"]) == 2


def test_refuses_a_work_folder_it_did_not_make(tmp_path):
    (tmp_path / "runtimes").mkdir()
    (tmp_path / "runtimes" / "mine.txt").write_text("a user's file")
    with pytest.raises(CompressError, match="not made by this script"):
        results.fresh_folder(tmp_path / "runtimes")
    assert (tmp_path / "runtimes" / "mine.txt").exists()


def test_a_glob_must_name_one_file(tmp_path):
    (tmp_path / "a_acc_1.pt").touch()
    assert results.expand(("x/{repo}", "a_*.pt"), tmp_path) == [f"x/{results.REPO}", "a_acc_1.pt"]
    (tmp_path / "a_acc_2.pt").touch()
    with pytest.raises(CompressError, match="matched 2 files"):
        results.expand(("a_*.pt",), tmp_path)


def test_excerpt_keeps_tables_titles_and_verdicts():
    printed = "\n".join(["epoch 1 loss 2.3", "epoch 2 loss 2.1", "      a title", "┏━━━┓", "┃ x ┃", "└───┘",
                         "  a caption", "epoch 3", "trade-off: 84% at 72.17%"])
    assert results.excerpt(printed, "tables").splitlines() == ["      a title", "┏━━━┓", "┃ x ┃", "└───┘",
                                                               "  a caption", "epoch 3", "trade-off: 84% at 72.17%"]
    assert results.excerpt(printed, "all").startswith("epoch 1")


def test_every_section_names_its_steps_and_shows_them_as_typed():
    names = [s.name for s in sections.SECTIONS]
    assert len(names) == len(set(names))
    for s in sections.SECTIONS:
        for step in s.steps:
            for quick in (False, True):
                argv = step.argv(quick)
                assert argv[0] in ("-m",) or argv[0].startswith("{repo}/"), argv
    assert results.shown(("-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "compress", "train")) == \
        "torchrun --nproc_per_node 2 -m compress train"
    assert results.shown(("-m", "compress", "sweep", "dense.pt")) == "compress sweep dense.pt"


def test_an_embedded_report_keeps_its_figures_and_drops_links_into_its_folder(tmp_path):
    run = tmp_path / "suite"
    run.mkdir()
    (run / "seeds.png").write_bytes(b"\x89PNG not really")
    (run / "report.md").write_text("# Title\n\n## Part\n\n![acc](seeds.png)\n\n![gone](missing.png)\n\n"
                                   "- seed 0: [`seed_0/`](seed_0/) and [docs](https://example.org)\n")
    text = results.embedded(run / "report.md", sections.by_name()["suite"], tmp_path / "out")
    assert text.splitlines()[0] == "### Title" and "#### Part" in text
    assert "![suite/seeds.png](figures/suite_suite_seeds.png)" in text and "missing.png" not in text
    assert (tmp_path / "out" / "figures" / "suite_suite_seeds.png").read_bytes() == b"\x89PNG not really"
    assert "- seed 0: `seed_0/` and [docs](https://example.org)" in text
