"""The pure parts of scripts/train_builtin.py (the builtin models' training script)."""
import sys
from pathlib import Path

import pytest
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_builtin  # noqa: E402

from iqaguard.data.kadid_builtin import BuiltinKadid, split_sources  # noqa: E402
from iqaguard.metrics.cells import quality_cells  # noqa: E402


def test_type_level_parses_builtin_kadid_names():
    assert train_builtin.type_level("bird_d01_l1.png") == (0, 1)
    assert train_builtin.type_level("fresh_flower_d25_l5.png") == (24, 5)  # sources may contain "_"
    for bad in ("bird_ref.png", "bird_d1x_l2.png", "d01_l1.png"):
        with pytest.raises(ValueError, match="builtin-kadid"):
            train_builtin.type_level(bad)


def test_identification_head_loss_value_gradients_and_detach():
    import math

    from iqaguard.metrics.builtin import NRNet

    torch.manual_seed(0)
    net = NRNet(widths=(4, 8, 8, 8), use_mscn=True)
    plain_keys = set(net.state_dict())
    loss_fn, detach = train_builtin.identification_head(net)
    x = torch.rand(3, 3, 32, 32)
    net.cells(x)
    # a zeroed head predicts uniform types (cross-entropy ln 25) and level 1 exactly
    with torch.no_grad():
        net.aux.weight.zero_()
        net.aux.bias.zero_()
    types, ones = torch.tensor([0, 7, 24]), torch.ones(3)
    assert float(loss_fn(types, ones).detach()) == pytest.approx(math.log(25), rel=1e-6)
    # level 5 predicted as level 1: smooth L1 (beta 0.1) of an error of 1 adds 1 - 0.05
    assert float(loss_fn(types, 5 * ones).detach()) == pytest.approx(math.log(25) + 0.95, rel=1e-6)
    with torch.no_grad():
        net.aux.weight.normal_()
    net.cells(x)
    loss_fn(types, 3 * ones).backward()
    assert net.aux.weight.grad.abs().sum() > 0
    assert net.backbone.stages[0][0].weight.grad.abs().sum() > 0  # the head shapes the backbone
    detach()
    assert not hasattr(net, "aux") and set(net.state_dict()) == plain_keys
    assert not net.backbone._forward_hooks


def test_level_subset_is_type_balanced_and_deterministic():
    picked = train_builtin.level_subset(["b", "a", "a"], seed=3, levels_per_type=2)
    assert picked == train_builtin.level_subset(["a", "b"], seed=3, levels_per_type=2)
    assert len(picked) == 2 * 25 * 2
    for src in ("a", "b"):
        for t in range(25):
            levels = {train_builtin.type_level(n)[1] for n in picked if n.startswith(f"{src}_d{t + 1:02d}_")}
            assert len(levels) == 2 and levels <= {1, 2, 3, 4, 5}
    assert len(train_builtin.level_subset(["a"], seed=0, levels_per_type=5)) == 125
    with pytest.raises(ValueError, match="levels_per_type"):
        train_builtin.level_subset(["a"], seed=0, levels_per_type=0)


def test_cached_cells_are_the_quality_cells_of_the_saved_images(tmp_path):
    """The targets read from the dataset cache equal the cells recomputed from the PNGs."""
    src = split_sources(0)["test"][:1]
    ds = BuiltinKadid(split="test", root=tmp_path, size=(64, 96), progress=False, sources=src, workers=1)
    pick = [ds[i] for i in (0, 57, 124)]
    got = train_builtin.cached_cells(pick)
    want = torch.cat([quality_cells(s.image, s.ref) for s in pick]).half()
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-3)
    g = torch.Generator().manual_seed(4)
    refs = (torch.rand(2, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    split = train_builtin.Split(refs[[1, 0, 1]], refs, torch.tensor([1, 0, 1]), torch.zeros(3), ["b", "a", "b"])
    torch.testing.assert_close(split.ref_of(torch.tensor([2, 1])), refs[[1, 0]])


def test_predict_pairs_shares_each_reference_and_matches_pairwise_scores():
    from iqaguard.metrics.builtin import FRNet

    g = torch.Generator().manual_seed(5)
    refs = (torch.rand(3, 3, 48, 64, generator=g) * 255).to(torch.uint8)
    ref_idx = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    x = (refs[ref_idx].float() + 25 * torch.randn((7, 3, 48, 64), generator=g)).clamp(0, 255).to(torch.uint8)
    split = train_builtin.Split(x, refs, ref_idx, torch.zeros(7), ["s"] * 7)
    torch.manual_seed(0)
    fr = FRNet(use_mscn=True).eval()
    with torch.no_grad():
        fr.logits.normal_()
    pick = torch.tensor([6, 0, 3, 2])
    want = train_builtin.predict(fr, x[pick], split.ref_of(pick), batch=3)
    got = train_builtin.predict_pairs(fr, split, pick, batch=2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert got.shape == (4,) and len(set(np.round(got, 6))) == 4
    sims = train_builtin.predict_pairs(fr.similarities, split)
    assert sims.shape == (7, fr.logits.numel())


def test_type_levels_come_from_the_split_names():
    types, levels = train_builtin.type_levels(["a_d03_l2.png", "b_c_d25_l5.png"])
    assert types.tolist() == [2, 24] and levels.tolist() == [2.0, 5.0]
    assert train_builtin.distorted_name("b_c", 25, 5) == "b_c_d25_l5.png"


def test_model_card_reports_training_and_holdout_scoring_time_apart():
    r = {"use_mscn": True, "widths": [16, 32], "aux_w": 0.5, "command": "python scripts/train_builtin.py --seed 0",
         "seed": 0, "epochs": 8, "iters_per_epoch": 250, "batch": 32, "patch": 128, "fr_images": 1000,
         "dataset": "builtin-kadid", "n_images": {"train": 10, "val": 5, "test": 3000},
         "splits": {"train": ["a"], "val": ["b"], "test": ["c"]}, "test": {"srocc": 0.75, "plcc": 0.74},
         "best_val_srocc": 0.7, "bounds": [3.0, 4.9], "train_seconds": 600.0, "file": "x.safetensors",
         "size_kb": 1.0, "sha256": "0" * 64}
    base = {"builtin-fr": {"ssim": {"srocc": 0.91, "plcc": 0.9}}}
    card = train_builtin.model_card({"builtin-nr": r, "builtin-fr": dict(r, bounds=[1.1, 0.0])}, 1500.0, 540.0, 2, base)
    assert "Training time (both models; data loading, cell targets and bounds included): 25.0 min" in card
    assert "scoring the 3000 hold-out test images with both models: 9.0 min" in card
    assert "hold-out test SROCC 0.7500, PLCC 0.7400" in card and "MEON-style" in card
    assert "  - ssim: SROCC 0.9100, PLCC 0.9000" in card  # the FR baselines beside builtin-fr
    assert "not computed" in card.split("## builtin-fr")[0]  # none given for builtin-nr
