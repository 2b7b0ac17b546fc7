import pickle
from pathlib import Path

import pytest
import torch

from compress.data import Loader, load_dataset, read_cifar10
from compress.errors import CompressError


def test_sample_shapes_labels_and_balance(sample):
    assert sample.train_x.shape == (4068, 3, 32, 32) and sample.train_x.dtype == torch.uint8
    assert sample.test_x.shape == (1017, 3, 32, 32)
    assert sample.train_y.shape == (4068,) and sample.train_y.dtype == torch.int64
    assert sample.classes[0] == "airplane" and len(sample.classes) == 10
    counts = torch.bincount(sample.train_y, minlength=10)
    assert counts.min() >= 350 and counts.max() <= 480  # roughly balanced, about 90-120 per class per file
    assert set(sample.test_y.tolist()) == set(range(10))
    assert sample.name == "cifar10-sample"


def test_first_image_matches_the_raw_batch(sample):
    raw = pickle.loads((sample_root(sample) / "data_batch_1").read_bytes(), encoding="latin1")
    assert sample.train_y[0].item() == raw["labels"][0]
    assert torch.equal(sample.train_x[0].flatten(), torch.from_numpy(raw["data"][0]))


def sample_root(ds):
    from pathlib import Path
    return Path(ds.source)


def test_truncated_batch_is_an_error(sample_copy):
    f = sample_copy / "cifar-10-batches-py" / "data_batch_2"
    f.write_bytes(f.read_bytes()[:100000])
    with pytest.raises(CompressError, match="data_batch_2"):
        read_cifar10(sample_copy)


def test_flipped_pixel_fails_the_checksum(sample_copy):
    f = sample_copy / "cifar-10-batches-py" / "test_batch"
    raw = bytearray(f.read_bytes())
    raw[-5000] ^= 0xFF  # inside the pixel array: still unpickles, but is not the data we shipped
    f.write_bytes(bytes(raw))
    with pytest.raises(CompressError, match="MD5SUMS"):
        read_cifar10(sample_copy)


def test_garbage_without_checksums_fails_on_structure(sample_copy):
    (sample_copy / "MD5SUMS").unlink()
    d = pickle.loads((sample_copy / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="latin1")
    d["data"] = d["data"][:, :100]
    (sample_copy / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(d))
    with pytest.raises(CompressError, match="3072"):
        read_cifar10(sample_copy)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(CompressError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(CompressError, match="no CIFAR-10 batches"):
        load_dataset(str(tmp_path))


def test_auto_falls_back_to_the_sample_offline(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COMPRESS_DATA", str(tmp_path / "empty-cache"))
    ds = load_dataset("auto")
    assert ds.name == "cifar10-sample" and ds.train_x.shape[0] == 4068
    assert "bundled CIFAR-10 sample" in capsys.readouterr().err


def test_full_set_required_but_absent_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESS_DATA", str(tmp_path / "empty-cache"))
    with pytest.raises(CompressError, match="full CIFAR-10"):
        load_dataset("cifar10")


def test_loader_augments_on_device_and_replays_with_a_seed(sample):
    def batches(seed):
        g = torch.Generator().manual_seed(seed)
        ld = Loader(sample.train_x[:256], sample.train_y[:256], 64, mean=sample.mean, std=sample.std,
                    shuffle=True, augment=True, generator=g)
        return list(ld)

    a, b, c = batches(1), batches(1), batches(2)
    assert len(a) == 4 and a[0][0].shape == (64, 3, 32, 32) and a[0][0].dtype == torch.float32
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    # normalised: roughly zero mean, unit spread over a batch
    assert abs(a[0][0].mean().item()) < 0.5 and 0.5 < a[0][0].std().item() < 1.5


def test_crop_flip_is_a_translation_or_mirror_of_the_image(sample):
    x = sample.train_x[:32]
    ld = Loader(x, sample.train_y[:32], 32, mean=(0, 0, 0), std=(1 / 255,) * 3, augment=True,
                generator=torch.Generator().manual_seed(0))
    out = next(iter(ld))[0]  # with mean 0, std 1/255 the values are raw pixels
    for i in range(32):
        src = x[i].float()
        found = False
        for img in (src, src.flip(-1)):
            padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
            for dy in range(9):
                for dx in range(9):
                    if torch.equal(padded[:, dy:dy + 32, dx:dx + 32], out[i]):
                        found = True
        assert found, f"image {i} is not a padded crop of its source"


def test_data_auto_is_the_dataset_a_checkpoint_was_trained_on(tmp_path, monkeypatch, capsys):
    """`--data auto` (the CLI's and compress.api's one rule, `starting_data`) with a checkpoint of ours
    reads the dataset it was trained on at its image size; one recorded on another machine falls
    back to auto and says so; foreign weights and an explicit --data read what they name."""
    from compress.checkpoint import save_checkpoint, starting_data
    from compress.models import ModelSpec

    monkeypatch.setenv("COMPRESS_OFFLINE", "1")  # auto: no cache, no download, so the sample
    spec = ModelSpec("vgg11", width=0.125)

    def ours(source: str, size: int) -> Path:
        path = tmp_path / f"{size}.pt"
        save_checkpoint(path, {"kind": "dense", "model": {**spec.to_dict(), "image_size": size},
                               "state_dict": spec.build().state_dict(), "meta": {"dataset": {"source": source}}})
        return path

    assert starting_data("auto", ours("sample", 16), quiet=True).image_size == 16
    assert "not readable here" not in capsys.readouterr().err
    fallback = starting_data("auto", ours(f"imagefolder:{tmp_path / 'gone'}", 24), quiet=True)
    assert fallback.image_size == 32 and "not readable here" in " ".join(capsys.readouterr().err.split())
    foreign = tmp_path / "foreign.pt"
    torch.save(spec.build().state_dict(), foreign)
    assert starting_data("auto", foreign, quiet=True).image_size == 32
    assert starting_data("sample", ours("imagefolder:/elsewhere", 16), image_size=20, quiet=True).image_size == 20
