"""A wheel install carries the shipped ratio files and finds them (not only a source checkout)."""
import os
import subprocess
import sys
import sysconfig
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
    # every module of the source tree (no sub-package forgotten in pyproject.toml), export/ and
    # bench/ inside the product's namespace (no top-level `export` or `bench` to clash with another
    # distribution's), and the report's template, which is not a .py file
    linked = ("export", "bench")  # compress/export, compress/bench: links to the top-level folders
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "compress").rglob("*.py")
               if p.relative_to(ROOT / "compress").parts[0] not in linked}
    sources |= {f"compress/{d}/{p.relative_to(ROOT / d).as_posix()}" for d in linked for p in (ROOT / d).rglob("*.py")}
    assert sorted(sources - set(names)) == []
    assert {n.split("/")[0] for n in names if not n.startswith("compress_toolchain")} == {"compress"}
    assert "compress/report/questions.md" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    # the installed copy, not this checkout, answers (PYTHONPATH comes before the editable install)
    probe = ("import compress.presets as p; print(p.shipped_config('vgg13', 'filter', 0.4)); "
             "print(p.shipped_config('vgg13', 'unstructured', 0.8)); "
             "import compress.report.questions as q; assert 'q4_resnet' in q.TEXT, q.TEXT; "
             "import compress.export, compress.bench.zoo, compress.timing; "
             "import importlib.util as u; assert u.find_spec('export') is None and u.find_spec('bench') is None")
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


def test_a_copy_without_its_links_still_imports_export_and_bench(tmp_path):
    """compress/export and compress/bench are symbolic links; a copy that lost them (a zip
    download, Windows without symlinks) finds the folders beside the package instead."""
    import shutil

    for d in ("export", "bench"):
        shutil.copytree(ROOT / d, tmp_path / d)
    shutil.copytree(ROOT / "compress", tmp_path / "compress", symlinks=True,
                    ignore=shutil.ignore_patterns("assets", "__pycache__"))
    for d in ("export", "bench"):
        (tmp_path / "compress" / d).unlink()
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    probe = ("import compress.export.tables, compress.bench, compress.timing.clocks; "
             "print(compress.export.tables.__file__)")
    deps = sysconfig.get_paths()["purelib"]  # the dependencies, not this checkout's editable install
    run = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{deps}", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == str(tmp_path / "export" / "tables.py")

