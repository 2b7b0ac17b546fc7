import pytest
import torch

from compress.errors import CompressError
from compress.models import ModelSpec, create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_images_to_logits(name):
    m = create_model(name, num_classes=7, width=0.125).eval()
    assert m(torch.randn(3, 3, 32, 32)).shape == (3, 7)


def test_vgg13_is_the_reference_architecture():
    m = create_model("vgg13")
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert len(bns) == 10 and all(c.kernel_size == (3, 3) for c in convs)
    assert m.classifier.in_features == 512 and m.classifier.out_features == 10
    names = [n for n, _ in m.named_parameters()]
    assert names[:3] == ["features.0.weight", "features.1.weight", "features.1.bias"]
    assert "classifier.weight" in names
    assert sum(p.numel() for p in m.parameters()) == 9413066


def test_resnet_depths():
    for name, blocks in (("resnet20", 3), ("resnet56", 9)):
        m = create_model(name)
        assert len(m.layer1) == blocks and m.fc.in_features == 64


def test_width_multiplier_shrinks_channels():
    assert create_model("vgg13", width=0.25).classifier.in_features == 128


def test_unknown_model_lists_closest():
    with pytest.raises(CompressError, match="vgg13"):
        create_model("vgg31")


def test_spec_round_trip():
    spec = ModelSpec("resnet20", 10, 0.5)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.build().fc.in_features == 32


def test_top_level_verbs_are_importable():
    import compress

    for name in compress.__all__:
        assert getattr(compress, name) is not None
    from compress import create_model as cm

    assert cm is create_model
