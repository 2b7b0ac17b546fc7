import pytest

from compress.errors import CompressError
from compress.models import create_model
from compress.prune.ratios import allocate, planned_sparsity, prunable, read_ratio_file, round_to_multiple


@pytest.fixture(scope="module")
def vgg():
    return create_model("vgg13", width=0.25)


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_valid_file_is_read(tmp_path, vgg):
    r = read_ratio_file(write(tmp_path, "prune_ratios:\n  features.0.weight: 0.3\n  classifier.weight: 0.5\n"),
                        vgg, "unstructured")
    assert r == {"features.0.weight": 0.3, "classifier.weight": 0.5}


@pytest.mark.parametrize("text, match", [
    ("prune_ratios:\n  features.30.weight: 0.5\n", "not a parameter.*features.3"),
    ("prune_ratios:\n  features.0.weight: 1.5\n", "outside \\[0, 1\\)"),
    ("prune_ratios:\n  features.0.weight: 1.0\n", "outside"),
    ("prune_ratios:\n  features.0.weight: -0.1\n", "outside"),
    ("prune_ratios:\n  features.0.weight: lots\n", "not a number"),
    ("prune_ratios:\n  features.0.weight: true\n", "not a number"),
    ("prune_ratios:\n  features.0.weight: .nan\n", "not a number"),
    ("prune_ratios:\n  features.0.weight: 0.2\n  features.0.weight: 0.3\n", "duplicate key 'features.0.weight'"),
    ("", "is empty"),
    ("prune_ratios: [1, 2\n", "not valid YAML"),
    ("ratios:\n  features.0.weight: 0.2\n", "no 'prune_ratios'"),
    ("prune_ratios:\n  features.0.weight: 0.2\nextra: 1\n", "unknown top-level key"),
    ("prune_ratios: {}\n", "non-empty mapping"),
    ("prune_ratios:\n  features.1.weight: 0.2\n", "cannot be unstructured-pruned"),
])
def test_bad_files_are_clear_errors(tmp_path, vgg, text, match):
    with pytest.raises(CompressError, match=match):
        read_ratio_file(write(tmp_path, text), vgg, "unstructured")


def test_filter_pruning_rejects_1d_and_linear(tmp_path, vgg):
    with pytest.raises(CompressError, match="cannot be filter-pruned"):
        read_ratio_file(write(tmp_path, "prune_ratios:\n  features.1.weight: 0.2\n"), vgg, "filter")
    with pytest.raises(CompressError, match="cannot be filter-pruned"):
        read_ratio_file(write(tmp_path, "prune_ratios:\n  classifier.weight: 0.2\n"), vgg, "filter")


def test_missing_file(tmp_path, vgg):
    with pytest.raises(CompressError, match="does not exist"):
        read_ratio_file(tmp_path / "nope.yaml", vgg, "filter")


@pytest.mark.parametrize("kind, target", [("unstructured", 0.8), ("filter", 0.4), ("unstructured", 0.37)])
@pytest.mark.parametrize("method", ["uniform", "global"])
def test_allocation_hits_the_target(vgg, kind, target, method):
    ratios = allocate(vgg, kind, target, method)
    reached = planned_sparsity(vgg, kind, ratios)
    units = sum(w.shape[0] if kind == "filter" else w.numel() for w in prunable(vgg, kind).values())
    assert target <= reached <= target + len(ratios) / units + 1e-9
    assert all(0 <= r < 1 for r in ratios.values())


def test_global_allocation_is_not_uniform(vgg):
    ratios = allocate(vgg, "unstructured", 0.8, "global")
    assert max(ratios.values()) - min(ratios.values()) > 0.1


def test_round_to_multiple_keeps_multiples_and_target():
    vgg = create_model("vgg13")
    ratios = round_to_multiple(vgg, allocate(vgg, "filter", 0.4, "uniform"), 16, 0.4)
    for n, w in prunable(vgg, "filter").items():
        kept = w.shape[0] - round(ratios[n] * w.shape[0])
        assert kept % 16 == 0 and kept >= 16
    assert planned_sparsity(vgg, "filter", ratios) >= 0.4


def test_shipped_configs_reach_their_targets():
    from compress.presets import CONFIG_DIR

    vgg = create_model("vgg13")
    for kind, target in (("unstructured", 0.8), ("filter", 0.4)):
        path = CONFIG_DIR / f"vgg13_{kind}_{target:.2f}.yaml"
        ratios = read_ratio_file(path, vgg, kind)
        assert planned_sparsity(vgg, kind, ratios) >= target
        assert len(set(ratios.values())) > 1  # chosen per layer, not uniform
