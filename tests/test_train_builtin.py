"""The pure parts of scripts/nr_sweep.py (the builtin-nr variant harness)."""
import sys
from pathlib import Path

import pytest
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import nr_sweep  # noqa: E402
import train_builtin  # noqa: E402
from train_builtin import nr_loss  # noqa: E402

from iqaguard.data.builtin import photo_paths  # noqa: E402
from iqaguard.data.io import load_image  # noqa: E402
from iqaguard.metrics.cells import mos_from_cells  # noqa: E402


def test_every_variant_overrides_known_recipe_keys():
    for name, (what, over) in nr_sweep.VARIANTS.items():
        assert what and set(over) <= set(nr_sweep.BASE), name


def test_rescaled_crops_of_an_undistorted_image_score_5():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, 192, 256, generator=g) * 255).to(torch.uint8)
    xb, cb = nr_sweep.rescaled_crops(g, x, x.clone(), torch.tensor([0, 1]), torch.tensor([0, 1, 1]), patch=64, smin=0.5)
    assert xb.shape == (3, 3, 64, 64) and cb.shape == (3, 3, 4, 4)
    assert float(xb.min()) >= 0 and float(xb.max()) <= 1
    torch.testing.assert_close(mos_from_cells(cb), torch.full((3,), 5.0), atol=1e-3, rtol=0)


def test_rescaled_crops_label_a_distortion_below_5():
    g = torch.Generator().manual_seed(1)
    ref = (load_image(photo_paths()[0])[..., :192, :256] * 255).round().to(torch.uint8)
    noisy = (ref.float() + 40 * torch.randn(ref.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    _, cb = nr_sweep.rescaled_crops(g, noisy, ref, torch.tensor([0]), torch.tensor([0, 0]), patch=64, smin=0.6)
    assert float(mos_from_cells(cb).max()) < 4.0


def test_batch_losses_add_the_plcc_and_ranking_terms():
    g = torch.Generator().manual_seed(2)
    target = torch.rand(6, 3, 2, 2, generator=g)
    pred = target + 0.05 * torch.randn(target.shape, generator=g)
    base = dict(nr_sweep.BASE)
    assert float(nr_sweep.batch_losses(pred, target, base)) == pytest.approx(float(nr_loss(pred, target)))
    pm, ym = mos_from_cells(pred), mos_from_cells(target)
    plcc = float(torch.corrcoef(torch.stack([pm, ym]))[0, 1])
    got = nr_sweep.batch_losses(pred, target, dict(base, plcc_w=2.0)) - nr_loss(pred, target)
    assert float(got) == pytest.approx(2.0 * (1 - plcc), abs=1e-5)
    pairs = [(i, j) for i in range(6) for j in range(6) if abs(float(ym[i] - ym[j])) > 0.05]
    rank = sum(float(F.softplus(-(pm[i] - pm[j]) * torch.sign(ym[i] - ym[j]) / 0.1)) for i, j in pairs) / len(pairs)
    got = nr_sweep.batch_losses(pred, target, dict(base, rank_w=1.0)) - nr_loss(pred, target)
    assert float(got) == pytest.approx(rank, abs=1e-5)


def test_read_rows_drops_a_cut_off_line(tmp_path, capsys):
    out = tmp_path / "sweep.jsonl"
    out.write_text('{"variant": "base", "seed": 0}\n{"variant": "pl')
    assert nr_sweep.read_rows(out) == [{"variant": "base", "seed": 0}]
    assert "sweep.jsonl:2" in capsys.readouterr().err
    assert nr_sweep.read_rows(tmp_path / "absent.jsonl") == []


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


def test_cell_targets_group_images_by_reference_and_keep_their_order():
    g = torch.Generator().manual_seed(4)
    refs = (torch.rand(2, 3, 64, 96, generator=g) * 255).to(torch.uint8)
    ref_idx = torch.tensor([1, 0, 1, 0, 0])
    x = (refs[ref_idx].float() + 30 * torch.randn((5, 3, 64, 96), generator=g)).clamp(0, 255).to(torch.uint8)
    split = train_builtin.Split(x, refs, ref_idx, torch.zeros(5), ["b", "a", "b", "a", "a"])
    got = train_builtin.cell_targets(split, chunk=2)
    want = train_builtin.quality_cells(x.float() / 255, refs[ref_idx].float() / 255).half()
    torch.testing.assert_close(got, want)
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
    card = train_builtin.model_card({"builtin-nr": r, "builtin-fr": dict(r, bounds=[1.1, 0.0])}, 1500.0, 540.0)
    assert "Training time (both models; data loading, cell targets and bounds included): 25.0 min" in card
    assert "scoring the 3000 hold-out test images with both models: 9.0 min" in card
    assert "hold-out test SROCC 0.7500, PLCC 0.7400" in card and "MEON-style" in card
