"""The script that generates docs/results/main_command.md runs top to bottom (--quick: a tiny
model), and every table it writes is there, each number from the run it made."""
import json
import re

from compress.bench import results


def test_quick_writes_every_table_from_its_run(tmp_path, capsys):
    assert results.main(["--quick", "--work", str(tmp_path)]) == 0
    text = (tmp_path / "main_command.md").read_text()
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert text.startswith("# The main command, generated: `compress filter --model vgg11")
    assert re.search(r"in \*\*\d+ s\*\* wall", text) and "CPU: " in text and f"torch {manifest['versions']['torch']}" in text
    assert f"| round 1 | {100 * manifest['rounds'][0]['sparsity']:.2f}% |" in text
    assert f"{manifest['result']['accuracy']:.2f}%" in text
    for header in ("| ONNX file |", "| INT8 file |", "| model | batch | fastest runtime |"):
        assert header in text, header
    fastest = json.loads((run / "bench" / "bench.json").read_text())["fastest"]
    assert all(f"| {f['model']} | {f['batch_size']} | {f['runtime']} |" in text for f in fastest)
