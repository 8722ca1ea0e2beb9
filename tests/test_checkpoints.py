"""Checkpoint I/O: BasicSR .pth files load, export/import round trips are exact, bad files say what is wrong."""

import pytest
import torch

from faig_lightning.checkpoints import export_basicsr, load_weights, read_state_dict, save_basicsr
from faig_lightning.errors import FaigError
from faig_lightning.nets import MSRResNet, SRCNNStyle


def _small():
    torch.manual_seed(0)
    return MSRResNet(scale=2, num_feat=8, num_block=2)


def test_plain_basicsr_pth_loads_with_identical_outputs(tmp_path):
    src = _small()
    torch.save({"params_ema": src.state_dict()}, tmp_path / "net_g.pth")
    dst = MSRResNet(scale=2, num_feat=8, num_block=2)
    load_weights(dst, tmp_path / "net_g.pth")
    x = torch.rand(1, 3, 12, 10)
    assert torch.equal(src(x), dst(x))


def test_priority_and_module_prefix(tmp_path):
    a, b = _small(), MSRResNet(scale=2, num_feat=8, num_block=2)
    torch.save({"params": b.state_dict(), "params_ema": a.state_dict()}, tmp_path / "both.pth")
    assert torch.equal(read_state_dict(tmp_path / "both.pth")["conv_first.weight"], a.conv_first.weight)
    assert torch.equal(read_state_dict(tmp_path / "both.pth", "raw")["conv_first.weight"], b.conv_first.weight)
    torch.save({"params": {f"module.{k}": v for k, v in b.state_dict().items()}}, tmp_path / "ddp.pth")
    assert torch.equal(read_state_dict(tmp_path / "ddp.pth")["conv_last.bias"], b.conv_last.bias)
    torch.save(a.state_dict(), tmp_path / "bare.pth")
    assert set(read_state_dict(tmp_path / "bare.pth")) == set(a.state_dict())


def test_lightning_ckpt_export_round_trip(tmp_path):
    ema, raw = _small(), MSRResNet(scale=2, num_feat=8, num_block=2)
    ckpt = {
        "state_dict": {f"net.{k}": v for k, v in ema.state_dict().items()},
        "current_model_state": {f"net.{k}": v for k, v in raw.state_dict().items()},
        "global_step": 3,
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    export_basicsr(tmp_path / "last.ckpt", tmp_path / "net_g.pth")
    out = torch.load(tmp_path / "net_g.pth", weights_only=True)
    assert set(out) == {"params", "params_ema"}
    for k, v in ema.state_dict().items():
        assert torch.equal(out["params_ema"][k], v)
        assert torch.equal(out["params"][k], raw.state_dict()[k])
    # and back: BasicSR file -> net -> BasicSR file is bit-exact
    net = load_weights(MSRResNet(scale=2, num_feat=8, num_block=2), tmp_path / "net_g.pth")
    save_basicsr(tmp_path / "again.pth", net.state_dict())
    again = torch.load(tmp_path / "again.pth", weights_only=True)["params_ema"]
    assert all(torch.equal(again[k], v) for k, v in out["params_ema"].items())


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(FaigError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(FaigError, match="corrupt"):
        read_state_dict(tmp_path / "bad.pth")


def test_wrong_architecture_lists_keys_and_shapes(tmp_path):
    torch.save({"params_ema": SRCNNStyle(scale=2).state_dict()}, tmp_path / "srcnn.pth")
    with pytest.raises(FaigError, match=r"missing keys: conv_first\.weight.*unexpected keys: features\.0"):
        load_weights(_small(), tmp_path / "srcnn.pth")
    torch.save({"params_ema": MSRResNet(scale=3, num_feat=8, num_block=2).state_dict()}, tmp_path / "x3.pth")
    with pytest.raises(FaigError, match=r"shape mismatches: upconv1\.weight: checkpoint \(72, 8, 3, 3\)"):
        load_weights(_small(), tmp_path / "x3.pth")


def test_nan_weights(tmp_path):
    sd = _small().state_dict()
    sd["body.1.conv2.weight"][0, 0, 0, 0] = float("nan")
    torch.save({"params_ema": sd}, tmp_path / "nan.pth")
    with pytest.raises(FaigError, match=r"NaN/Inf values in body\.1\.conv2\.weight"):
        load_weights(_small(), tmp_path / "nan.pth")


def test_exported_file_has_normal_permissions(tmp_path):
    import os

    save_basicsr(tmp_path / "net_g.pth", _small().state_dict())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "net_g.pth").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_same_weights_give_the_same_file_bytes(tmp_path):
    """A run's net_g.pth can be compared by checksum: two saves of equal weights (each through its own temporary
    file) are byte-identical, and a changed weight changes the bytes."""
    net = _small()
    save_basicsr(tmp_path / "a" / "net_g.pth", net.state_dict())
    save_basicsr(tmp_path / "b" / "net_g.pth", net.state_dict())
    assert (tmp_path / "a" / "net_g.pth").read_bytes() == (tmp_path / "b" / "net_g.pth").read_bytes()
    with torch.no_grad():
        net.conv_first.weight[0, 0, 0, 0] += 1
    save_basicsr(tmp_path / "c" / "net_g.pth", net.state_dict())
    assert (tmp_path / "c" / "net_g.pth").read_bytes() != (tmp_path / "a" / "net_g.pth").read_bytes()
