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
    # two cells: s = (0.9, 0.7); GMS means (1.0, 0.8) and within-cell stds (0.0, 0.1)
    cells = torch.tensor([[[[0.9, 0.7]], [[1.0, 0.8]], [[0.0, 0.1]]]])
    gmsd = math.sqrt((0.0 + 0.01) / 2 + 0.01)  # mean d^2 + variance of the means (0.1^2)
    expected = 1 + 2 * (0.8 + 1 - gmsd / 0.35)
    assert float(mos_from_cells(cells)) == pytest.approx(expected, abs=1e-5)


def test_identical_images_give_perfect_cells_and_mos_5():
    ref = load_image(photo_paths()[0])[..., :128, :160].contiguous()
    c = quality_cells(ref, ref)
    assert c.shape == (1, 3, 8, 10)
    torch.testing.assert_close(c[:, :2], torch.ones_like(c[:, :2]))
    assert float(c[:, 2].abs().max()) < 1e-6
    assert float(mos_from_cells(c)) == pytest.approx(5.0, abs=1e-4)


def test_cells_pool_back_to_the_image_label():
    """The cell statistics, pooled by the label's formula, reproduce the pseudo-MOS itself."""
    ref = load_image(photo_paths()[1])[..., :192, :256].contiguous()
    g = torch.Generator().manual_seed(0)
    x = torch.cat([(ref + s * torch.randn(ref.shape, generator=g)).clamp(0, 1) for s in (0.02, 0.06, 0.15)]
                  + [torch.nn.functional.avg_pool2d(ref, 5, 1, 2, count_include_pad=False)])
    label = kadid_mos.pseudo_mos(x, ref)
    pooled = mos_from_cells(quality_cells(x, ref))
    assert float((pooled - label).abs().max()) < 0.05
    # the GMS map pools exactly: GMSD = sqrt(mean d^2 + var m) when the cells tile the map
    gmsd = gms_map(x, ref)[:, :80, :112].flatten(1).std(dim=1, unbiased=False)
    gm = gms_map(x, ref)[:, :80, :112].unflatten(1, (10, 8)).unflatten(3, (14, 8))
    m, d = gm.mean((2, 4)), gm.std((2, 4), unbiased=False)
    torch.testing.assert_close((d.pow(2).mean((1, 2)) + m.flatten(1).var(1, unbiased=False)).sqrt(), gmsd)


def test_a_batch_1_reference_gives_the_same_cells_as_the_expanded_one():
    """One reference for many images is filtered once; the result must not change."""
    ref = load_image(photo_paths()[2])[..., :320, :320].contiguous()  # SSIM downsamples by 1 here
    g = torch.Generator().manual_seed(3)
    x = torch.cat([(ref + s * torch.randn(ref.shape, generator=g)).clamp(0, 1) for s in (0.0, 0.05, 0.2)])
    torch.testing.assert_close(quality_cells(x, ref), quality_cells(x, ref.expand_as(x).contiguous()))
    big = torch.nn.functional.interpolate(ref, size=(512, 512), mode="bilinear", align_corners=False)
    xb = (big + 0.05 * torch.randn((2, *big.shape[1:]), generator=g)).clamp(0, 1)  # downsampling by 2
    torch.testing.assert_close(quality_cells(xb, big), quality_cells(xb, big.expand_as(xb).contiguous()))


def test_nr_cells_shape_and_score_is_their_pooling():
    torch.manual_seed(0)
    net = NRNet().eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        c = net.cells(x)
        score = net(x)
    assert c.shape == (2, 3, 4, 6) and float(c[:, 2].min()) >= 0
    torch.testing.assert_close(score, mos_from_cells(c))


def test_crop_with_the_image_ssim_factor_is_closer_to_the_full_image_cells():
    """A 384x512 image has ssim.m factor 2; a 128x128 crop alone would get factor 1. With
    ssim_factor=2 the crop's SSIM cells approach the full image's (away from the crop border;
    the 'valid' maps pool onto slightly shifted grids, so not exactly); GMS cells do not depend
    on the factor."""
    ref = load_image(photo_paths()[2])[..., :384, :512].contiguous()
    x = torch.nn.functional.avg_pool2d(ref, 5, 1, 2, count_include_pad=False)
    full = quality_cells(x, ref)
    crop = (slice(None), slice(None), slice(128, 256), slice(256, 384))
    own = quality_cells(x[crop], ref[crop])
    forced = quality_cells(x[crop], ref[crop], ssim_factor=2)
    torch.testing.assert_close(forced[:, 1:], own[:, 1:])
    inner = full[:, 0, 8:16, 16:24][..., 1:-1, 1:-1]
    err_forced = float((forced[:, 0, 1:-1, 1:-1] - inner).abs().mean())
    err_own = float((own[:, 0, 1:-1, 1:-1] - inner).abs().mean())
    assert err_forced < 0.5 * err_own


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_ssim_factor_is_an_input_error(bad):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(InputError, match="ssim_factor"):
        quality_cells(x, x, ssim_factor=bad)
