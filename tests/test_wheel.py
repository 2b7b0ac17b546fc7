"""A wheel install carries the shipped ratio files and finds them (not only a source checkout)."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_and_finds_the_ratio_files(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "compress/configs/vgg13_filter_0.40.yaml" in names
    assert "compress/configs/vgg13_unstructured_0.80.yaml" in names
    # every module of the source tree (no sub-package forgotten in pyproject.toml), and the
    # report's template, which is not a .py file
    sources = {str(p.relative_to(ROOT)) for d in ("compress", "export", "bench") for p in (ROOT / d).rglob("*.py")}
    assert sorted(sources - set(names)) == []
    assert "compress/report/questions.md" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    # the installed copy, not this checkout, answers (PYTHONPATH comes before the editable install)
    probe = ("import compress.presets as p; print(p.shipped_config('vgg13', 'filter', 0.4)); "
             "print(p.shipped_config('vgg13', 'unstructured', 0.8)); "
             "import compress.report.questions as q; assert 'q4_resnet' in q.TEXT, q.TEXT")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    found = [Path(line) for line in run.stdout.split()]
    assert len(found) == 2 and all(p.is_file() and (tmp_path / "site") in p.parents for p in found), run.stdout


def test_one_onnxruntime_package_installs_on_every_platform():
    """onnxruntime-gpu has no macOS or ARM wheels: `pip install` failed on a Mac. Exactly one of
    the two packages is required on each platform, the GPU build where it exists."""
    import pytest
    from packaging.markers import Marker
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    ort = [r for r in deps if r.name in ("onnxruntime", "onnxruntime-gpu")]
    platforms = {("linux", "x86_64"): "onnxruntime-gpu", ("win32", "AMD64"): "onnxruntime-gpu",
                 ("darwin", "arm64"): "onnxruntime", ("darwin", "x86_64"): "onnxruntime",
                 ("linux", "aarch64"): "onnxruntime"}
    for (platform, machine), expected in platforms.items():
        env = {"sys_platform": platform, "platform_machine": machine}
        chosen = [r.name for r in ort if r.marker is None or Marker(str(r.marker)).evaluate(env)]
        assert chosen == [expected], (platform, machine, chosen)
