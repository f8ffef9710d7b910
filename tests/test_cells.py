"""Per-cell statistics of the pseudo-MOS (metrics/cells.py), the targets builtin-nr learns."""
import math

import pytest
import torch

from iqaguard.data import kadid_mos
from iqaguard.errors import InputError
from iqaguard.data.builtin import photo_paths
from iqaguard.data.io import load_image
from iqaguard.metrics.builtin import NRNet
from iqaguard.metrics.cells import gms_map, mos_from_cells, quality_cells


def test_mos_from_cells_hand_computed():
    # two cells: s = (0.9, 0.7); GMS means (1.0, 0.8), within-cell stds (0.0, 0.1); dC (2, 4)
    cells = torch.tensor([[[[0.9, 0.7]], [[1.0, 0.8]], [[0.0, 0.1]], [[2.0, 4.0]]]])
    gmsd = math.sqrt((0.0 + 0.01) / 2 + 0.01)  # mean d^2 + variance of the means (0.1^2)
    expected = 1 + 4 / 3 * (0.8 + 1 - gmsd / 0.35 + 1 - 3.0 / 10)
    assert float(mos_from_cells(cells)) == pytest.approx(expected, abs=1e-5)
    assert float(mos_from_cells(cells, clip=True)) == pytest.approx(expected, abs=1e-5)  # inside [0, 1]


def test_the_score_path_has_no_clip_but_the_label_has():
    """builtin-nr's pooling is the label formula without clips: above 5 when the predicted SSIM
    exceeds 1, and its gradient never vanishes (the v1 clamps zeroed it)."""
    cells = torch.tensor([[[[1.2]], [[1.0]], [[0.0]], [[0.0]]]], requires_grad=True)
    score = mos_from_cells(cells)
    assert float(score.detach()) == pytest.approx(1 + 4 / 3 * 3.2, abs=1e-4) and float(score.detach()) > 5
    assert float(mos_from_cells(cells, clip=True).detach()) == pytest.approx(5.0, abs=1e-4)
    score.backward()
    assert float(cells.grad[0, 0]) == pytest.approx(4 / 3) and float(cells.grad[0, 3]) == pytest.approx(-4 / 30)


def test_identical_images_give_perfect_cells_and_mos_5():
    ref = load_image(photo_paths()[0])[..., :128, :160].contiguous()
    c = quality_cells(ref, ref)
    assert c.shape == (1, 4, 8, 10)
    torch.testing.assert_close(c[:, :2], torch.ones_like(c[:, :2]))
    assert float(c[:, 2:].abs().max()) < 1e-4
    assert float(mos_from_cells(c)) == pytest.approx(5.0, abs=1e-4)


def test_cells_pool_back_to_the_image_label():
    """The cell statistics, pooled by the label's formula, reproduce the pseudo-MOS itself."""
    ref = load_image(photo_paths()[1])[..., :192, :256].contiguous()
    g = torch.Generator().manual_seed(0)
    x = torch.cat([(ref + s * torch.randn(ref.shape, generator=g)).clamp(0, 1) for s in (0.02, 0.06, 0.15)]
                  + [torch.nn.functional.avg_pool2d(ref, 5, 1, 2, count_include_pad=False)])
    label = kadid_mos.pseudo_mos(x, ref)
    pooled = mos_from_cells(quality_cells(x, ref), clip=True)
    assert float((pooled - label).abs().max()) < 0.05
    # the GMS map pools exactly: GMSD = sqrt(mean d^2 + var m) when the cells tile the map
    gmsd = gms_map(x, ref)[:, :80, :112].flatten(1).std(dim=1, unbiased=False)
    gm = gms_map(x, ref)[:, :80, :112].unflatten(1, (10, 8)).unflatten(3, (14, 8))
    m, d = gm.mean((2, 4)), gm.std((2, 4), unbiased=False)
    torch.testing.assert_close((d.pow(2).mean((1, 2)) + m.flatten(1).var(1, unbiased=False)).sqrt(), gmsd)


def test_a_batch_1_reference_gives_the_same_cells_as_the_expanded_one():
    """One reference for many images is filtered once; the result must not change."""
    ref = load_image(photo_paths()[2])[..., :320, :320].contiguous()
    g = torch.Generator().manual_seed(3)
    x = torch.cat([(ref + s * torch.randn(ref.shape, generator=g)).clamp(0, 1) for s in (0.0, 0.05, 0.2)])
    torch.testing.assert_close(quality_cells(x, ref), quality_cells(x, ref.expand_as(x).contiguous()))


def test_nr_cells_shape_and_score_is_their_pooling():
    torch.manual_seed(0)
    net = NRNet().eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        c = net.cells(x)
        score = net(x)
    assert c.shape == (2, 4, 4, 6) and float(c[:, 2:].min()) >= 0
    torch.testing.assert_close(score, mos_from_cells(c))


def test_label_sees_2x2_pixelation_and_pure_chroma_changes():
    """v1 was blind to both: ssim.m's 2x2 downsampling undid 2x2 pixelation, and no term saw chroma."""
    ref = load_image(photo_paths()[3])[..., :384, :512].contiguous()  # ssim.m would downsample by 2
    pix = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(ref, 2), scale_factor=2, mode="nearest")
    grey = kadid_mos.rgb_to_lab(ref)
    grey[:, 1:] = 0  # same lightness, no chroma
    from kornia.color import lab_to_rgb
    desat = lab_to_rgb(grey).clamp(0, 1)
    t = kadid_mos.quality_terms(torch.cat([pix, desat]), ref)
    from iqaguard.metrics.functional import ssim
    blind = 1 - float(ssim(pix, ref, downsample=True))  # v1: 2x2 averaging undoes the 2x2 blocks
    assert blind < 1e-3 and 1 - float(t["ssim"][0]) > 10 * blind
    assert float(t["chroma"][1]) > 3.0 and float(t["q_chroma"][1]) < 0.7  # desaturation costs colour
    assert float(kadid_mos.pseudo_mos(desat, ref)) < 4.6
