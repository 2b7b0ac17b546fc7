"""Image-folder datasets: reading, splits, sizes, bad input, and the whole CLI pipeline on PNGs."""
import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from compress.checkpoint import load_checkpoint
from compress.cli import main
from compress.data import load_dataset
from compress.data.imagefolder import load_image_folder, write_image_folder
from compress.errors import CompressError

CLASSES = 4
PER_CLASS = 30


pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread: see conftest


def write_folder(root, ds, classes=CLASSES, per_class=PER_CLASS):
    """PNG files of the first `per_class` sample images of each of the first `classes` classes."""
    return write_image_folder(ds, root, classes, per_class)


@pytest.fixture(scope="module")
def folder(sample, tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("pngs") / "cifar4", sample)


def test_reads_a_folder_like_cifar(folder, sample, capsys):
    ds = load_dataset(f"imagefolder:{folder}")
    assert "kept at their own size, 32x32" in capsys.readouterr().err
    assert ds.classes == sorted(sample.classes[:CLASSES])
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape[1:] == (3, 32, 32) and ds.image_size == 32
    # stratified: 20% of each class held out, with a fixed seed
    assert ds.test_x.shape[0] == CLASSES * 6 and ds.train_x.shape[0] == CLASSES * 24
    assert torch.bincount(ds.test_y).tolist() == [6] * CLASSES
    again = load_image_folder(folder)
    assert torch.equal(again.test_x, ds.test_x) and again.fingerprint == ds.fingerprint
    # PNG is lossless: every train image is one of the sample's images of that class
    name = ds.classes[ds.train_y[0]]
    c = sample.classes.index(name)
    pool = sample.train_x[sample.train_y == c][:PER_CLASS]
    assert any(torch.equal(ds.train_x[0], p) for p in pool)
    # mean/std from the train split, in [0, 1] units
    x = ds.train_x.double() / 255
    assert torch.allclose(torch.tensor(ds.mean, dtype=torch.float64), x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(torch.tensor(ds.std, dtype=torch.float64), x.std((0, 2, 3), unbiased=False), atol=1e-5)
    assert ds.describe()["source"] == f"imagefolder:{folder.resolve()}"
    other = load_image_folder(folder, seed=1)
    assert other.fingerprint != ds.fingerprint and not torch.equal(other.test_x, ds.test_x)


def test_fingerprint_follows_the_content(sample, tmp_path):
    root = write_folder(tmp_path / "f", sample, classes=2, per_class=5)
    before = load_image_folder(root, quiet=True).fingerprint
    victim = next((root / sample.classes[1]).iterdir())
    Image.fromarray(sample.train_x[-1].permute(1, 2, 0).numpy()).save(victim)
    assert load_image_folder(root, quiet=True).fingerprint != before


def test_train_and_val_folders_are_used_as_given(sample, tmp_path):
    write_folder(tmp_path / "train", sample, classes=2, per_class=8)
    write_folder(tmp_path / "val", sample, classes=2, per_class=3)
    ds = load_image_folder(tmp_path, quiet=True)
    assert ds.train_x.shape[0] == 16 and ds.test_x.shape[0] == 6
    assert "train/ and val/" in ds.describe()["layout"]


def test_sizes_modes_and_resizing(sample, tmp_path, capsys):
    root = write_folder(tmp_path / "f", sample, classes=2, per_class=4)
    cls = root / sample.classes[0]
    Image.new("L", (48, 40), 128).save(cls / "gray.png")  # another size and a one-channel mode
    Image.new("RGBA", (20, 20), (10, 20, 30, 0)).save(cls / "alpha.png")
    Image.new("RGB", (32, 32), (200, 100, 0)).save(cls / "photo.JPG")  # extensions match case-insensitively
    Image.new("P", (32, 32)).save(cls / "palette.png")
    (cls / "notes.txt").write_text("not an image: ignored")
    ds = load_image_folder(root)
    err = " ".join(capsys.readouterr().err.split())  # however the console wrapped it
    assert ds.image_size == 64 and "different sizes" in err and "--image-size" in err
    assert "converted to RGB" in err and "L image" in err and "RGBA image" in err
    assert ds.train_x.shape[0] + ds.test_x.shape[0] == 12
    small = load_image_folder(root, image_size=24, quiet=True)
    assert small.train_x.shape[1:] == (3, 24, 24) and small.fingerprint != ds.fingerprint
    # CIFAR can be resized too (e.g. ResNet-18 at 40 px)
    assert load_dataset("sample", quiet=True, image_size=40).train_x.shape[1:] == (3, 40, 40)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    for c, level in (("dark", 4112), ("light", 61680)):  # 16/255 and 240/255 of the 16-bit range
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16), level, np.uint16)).save(tmp_path / c / f"{i}.png")
    ds = load_image_folder(tmp_path, quiet=True)
    assert ds.describe()["modes"] == {"I;16": 6}
    x, y = torch.cat([ds.train_x, ds.test_x]), torch.cat([ds.train_y, ds.test_y])
    assert (x[y == 0] == 16).all() and (x[y == 1] == 240).all()


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist"),
    ("empty_spec", "needs a folder"),
    ("loose_images", "no class folders"),
    ("empty_class", "has no images"),
    ("corrupt", "bad.png"),
    ("truncated", "cut.png"),
    ("val_mismatch", "same class folders"),
])
def test_bad_folders_are_one_line_errors(case, match, sample, tmp_path, capsys):
    root = tmp_path / "data"
    if case == "val_mismatch":
        write_folder(root / "train", sample, classes=2, per_class=3)
        write_folder(root / "val", sample, classes=3, per_class=2)
    elif case not in ("missing", "empty_spec"):
        write_folder(root, sample, classes=2, per_class=3)
    first = root / sample.classes[0]
    if case == "loose_images":
        for f in first.iterdir():
            f.rename(root / f"x{f.name}")
        for d in root.iterdir():
            if d.is_dir():
                d.rename(tmp_path / d.name)
    elif case == "empty_class":
        (root / "zebra").mkdir()
        (root / "zebra" / "readme.txt").write_text("nothing here")
    elif case == "corrupt":
        (first / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    elif case == "truncated":
        raw = (first / "0000.png").read_bytes()
        (first / "cut.png").write_bytes(raw[: len(raw) // 2])
    if case == "empty_spec":
        root = ""
    with pytest.raises(CompressError, match=match):
        load_image_folder(root, quiet=True)
    code = main(["train", "--model", "alexnet_small", "--data", f"imagefolder:{root}", "--out",
                 str(tmp_path / "m.pt")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and lines[-1].startswith("error:") and match in lines[-1]
    assert not (tmp_path / "m.pt").exists()


def test_pipeline_on_a_png_folder(folder, tmp_path, capsys):
    """train -> unstructured and filter (OMP) -> slim -> export, all through the CLI, at 40 px."""
    data = ["--data", f"imagefolder:{folder}", "--image-size", "40"]
    dense = tmp_path / "dense.pt"
    assert main(["train", "--model", "alexnet_small", "--width", "0.25", "--epochs", "2", "--batch-size", "32",
                 "--out", str(dense), *data]) == 0
    ckpt = load_checkpoint(dense)
    assert ckpt["model"] == {"name": "alexnet_small", "num_classes": CLASSES, "width": 0.25, "image_size": 40,
                             "in_channels": 3}
    assert ckpt["meta"]["dataset"]["name"] == "imagefolder-cifar4"
    no_stages = ["--no-slim", "--no-export", "--no-bench", "--no-report"]
    runs = {}
    for kind, ratio in (("unstructured", "0.7"), ("filter", "0.4")):
        runs[kind] = tmp_path / kind
        assert main([kind, "--checkpoint", str(dense), "--ratio", ratio, "--omp", "--epochs", "1",
                     "--batch-size", "32", "--out", str(runs[kind]), *data, *no_stages]) == 0
        manifest = json.loads((runs[kind] / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["dataset"]["image_size"] == 40
        assert manifest["result"]["sparsity"] >= float(ratio) - 0.01
    pruned = runs["filter"] / json.loads((runs["filter"] / "manifest.json").read_text())["result"]["path"]
    slim_path = tmp_path / "slim.pt"
    # --data defaults to the checkpoint's dataset: the image folder, read again at the model's 40 px
    assert main(["slim", str(pruned), "--out", str(slim_path)]) == 0
    slim = load_checkpoint(slim_path, kinds=("slim",))
    check = slim["meta"]["slim"]["check"]
    assert check["acc_masked"] == check["acc_slim"] and check["images"] == CLASSES * 6
    assert slim["meta"]["slim"]["params"]["slim"] < slim["meta"]["slim"]["params"]["dense"]
    capsys.readouterr()
    if importlib.util.find_spec("export") is None:
        pytest.skip("the export package is not installed")
    from compress.export import export_checkpoint

    report = export_checkpoint(slim_path, tmp_path / "slim.onnx", data=None)
    assert (tmp_path / "slim.onnx").exists()
    assert report["models"][0]["parity"]["images"] > 0


@pytest.mark.parametrize("size", [32, 40, 64, 97])
def test_alexnet_small_takes_any_size_from_32(size):
    from compress.models import create_model

    m = create_model("alexnet_small", num_classes=7, width=0.25, image_size=size).eval()
    assert m(torch.randn(2, 3, size, size)).shape == (2, 7)
