import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from hpa.errors import InputError
from hpa.models import HPANet, create_backbone, export_model, load_exported
from hpa.models.losses import build_loss

MEAN, STD = [0.1] * 4, [0.2] * 4


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_b0"])
def test_backbones_take_four_channels_any_size(backbone):
    net = HPANet(create_backbone(backbone, num_classes=19), MEAN, STD).eval()
    for size in (64, 96):
        with torch.no_grad():
            out = net(torch.randint(0, 255, (2, 4, size, size), dtype=torch.uint8))
        assert out.shape == (2, 19)
    loss = build_loss("bce")(net(torch.zeros(2, 4, 64, 64)), torch.ones(2, 19))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_unknown_backbone_suggests_names():
    with pytest.raises(InputError, match="resnet18"):
        create_backbone("resnet18x", num_classes=19)


def test_local_pretrained_file_adapts_rgb_to_four_channels(tmp_path):
    rgb = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.safetensors"
    save_file(rgb.state_dict(), str(path))
    net = create_backbone("resnet18", num_classes=19, pretrained_path=str(path))
    w_rgb, w4 = rgb.conv1.weight, net.conv1.weight
    assert w4.shape[1] == 4
    # The RGB filters are kept (up to timm's rescaling), the 4th channel is derived from them.
    ratio = (w4[:, :3] / w_rgb).flatten()
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-5)
    torch.testing.assert_close(net.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)
    assert net.fc.out_features == 19


def test_missing_pretrained_file(tmp_path):
    with pytest.raises(InputError, match="nope.pth"):
        create_backbone("resnet18", num_classes=19, pretrained_path=str(tmp_path / "nope.pth"))


def test_export_round_trip_without_pickle(tmp_path):
    net = HPANet(create_backbone("resnet18", num_classes=19), MEAN, STD).eval()
    meta = {
        "backbone": "resnet18",
        "num_classes": 19,
        "in_chans": 4,
        "class_names": ["c"] * 19,
        "image_size": 64,
        "level": "image",
    }
    out = export_model(net, tmp_path / "model", meta)
    # The weights' checksum beside them: a load refuses bytes damaged since (tests/test_ownership)
    names = ["config.json", "model.safetensors", "model.safetensors.sha256"]
    assert sorted(p.name for p in out.iterdir()) == names
    config = json.loads((out / "config.json").read_text())
    assert config["mean"] == pytest.approx(MEAN) and "torch" in config["versions"]
    loaded, _ = load_exported(out)
    x = torch.randint(0, 255, (1, 4, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_load_rejects_non_model_folder(tmp_path):
    with pytest.raises(InputError, match="not an exported hpa model"):
        load_exported(tmp_path)


def test_focal_loss_and_unknown_loss():
    logits, target = torch.zeros(3, 19), torch.zeros(3, 19)
    assert build_loss("focal", gamma=2.0)(logits, target) < build_loss("bce")(logits, target)
    with pytest.raises(InputError, match="unknown loss"):
        build_loss("hinge")
