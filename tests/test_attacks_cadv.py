"""cAdv: Adam on a colourisation network's weights recolours the image in CIELAB, lightness kept."""
import hashlib

import pytest
import torch
from kornia.color import lab_to_rgb, rgb_to_lab

import iqaguard.attacks as attacks
import iqaguard.attacks.cadv as cadv_mod
import iqaguard.metrics as metrics
from iqaguard.attacks.budgets import PRESET_BUDGETS, Restriction, measure
from iqaguard.attacks.cadv import WEIGHTS_FILE, CAdv, Colouriser, load_colouriser, random_hints
from iqaguard.data.builtin import PHOTOS_DIR
from iqaguard.data.io import load_image
from iqaguard.data.kadid_builtin import split_sources
from iqaguard.errors import InputError, MissingWeightsError

from attack_toys import gen, photo_crops


@pytest.fixture(scope="module")
def nr():
    return metrics.create("builtin-nr")


@pytest.fixture(scope="module")
def crops():
    """Central 64x64 crops of 6 builtin photographs (every 20th by name)."""
    return photo_crops(6, size=64, step=20)


def _lightness(x):
    return rgb_to_lab(x)[:, 0]


def test_registered_with_lr_presets():
    assert "cadv" in attacks.names()
    a = attacks.create("cadv", preset="strong")
    assert isinstance(a, CAdv) and a.restriction is Restriction.SSIM and CAdv.varied == "lr"
    lrs = [CAdv.presets[k]["lr"] for k in ("weak", "medium", "strong")]
    assert lrs == sorted(lrs) and len(set(lrs)) == 3  # stronger preset, larger learning rate
    assert a.params == {"lr": CAdv.presets["strong"]["lr"], "steps": 160, "hints": 0.01, "ssim_floor": 0.75,
                        "colouriser": None}
    assert {k: v["ssim_floor"] for k, v in CAdv.presets.items()} == PRESET_BUDGETS[Restriction.SSIM]
    assert attacks.create("cadv", preset="weak", steps=3).steps == 3


def test_colouriser_is_small_keeps_any_size_and_beats_grey_on_test_crops():
    assert WEIGHTS_FILE.is_file() and WEIGHTS_FILE.stat().st_size < 1024 * 1024
    card = (WEIGHTS_FILE.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert hashlib.sha256(WEIGHTS_FILE.read_bytes()).hexdigest() in card
    net = load_colouriser(WEIGHTS_FILE)
    assert net(torch.full((2, 1, 30, 41), 50.0), torch.zeros(2, 2, 30, 41), torch.zeros(2, 1, 30, 41)).shape == (2, 2, 30, 41)
    test = split_sources(0)["test"][:6]  # held-out photographs, never trained on
    x = torch.cat([load_image(PHOTOS_DIR / f"{s}.jpg")[..., 100:196, 100:196] for s in test])
    lab = rgb_to_lab(x)
    hints, mask = random_hints(lab[:, 1:], 0.01, gen(0))
    with torch.no_grad():
        err = (net(lab[:, :1], hints, mask) - lab[:, 1:]).abs().mean()
    # measured on these 6 held-out test crops: 5.31 (hints 0.01) against grey's 8.42
    assert float(err) < 0.85 * float(lab[:, 1:].abs().mean())


def test_lightness_kept_output_in_range_and_colours_changed(nr, crops):
    x = torch.cat([crops[:3], torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)])  # black / white: no chroma room
    out = CAdv(lr=1e-3, steps=4)(nr, x, generator=gen(0))
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # the float32 LAB round trip alone moves L by up to 7.6e-6 here; measured max |dL| 1.5e-5 (L on 0..100)
    assert float((_lightness(out) - _lightness(x)).abs().max()) < 1e-3
    dab = (rgb_to_lab(out)[:, 1:] - rgb_to_lab(x)[:, 1:]).abs().flatten(1).mean(dim=1)
    assert bool((dab[:3] > 0.5).all()), dab  # the colours did change (ab units)


@pytest.mark.parametrize("kwargs", [{"lr": 0.0, "steps": 3}, {"steps": 0}])
def test_no_step_returns_the_input_exactly(nr, crops, kwargs):
    x = crops[:2]
    assert torch.equal(CAdv(**kwargs)(nr, x), x)


def test_objective_rises_on_photo_crops(nr, crops):
    a = CAdv(preset="medium", steps=8)
    out = a(nr, crops, generator=gen(0))
    with torch.no_grad():
        gain = a.objective(nr, out, None) - a.objective(nr, crops, None)
    # measured: the score rose on 6/6 crops (mean gain 0.16, normalised 0.029); the clean crop is a
    # candidate, so the objective never falls
    assert bool((gain >= 0).all()) and int((gain > 0).sum()) >= 5, gain


def test_ssim_floor_holds_per_image(nr, crops):
    # the weak preset's floor (RGB SSIM 0.9); without it the SSIM was 0.922 / 0.984 / 0.847 / 0.977
    x = crops[:4]
    free = CAdv(lr=1e-3, steps=6)(nr, x, generator=gen(1))
    floor = 0.9
    assert int((measure(Restriction.SSIM, free, x) < floor).sum()) >= 1  # without the floor it is crossed
    held = CAdv(lr=1e-3, steps=6, ssim_floor=floor)(nr, x, generator=gen(1))
    s = measure(Restriction.SSIM, held, x)
    assert bool((s >= floor).all()), s
    assert bool((held != x).flatten(1).any(dim=1).all())  # recoloured, not just returned clean
    assert float((_lightness(held) - _lightness(x)).abs().max()) < 1e-3


def test_seeded_and_batch_independent(nr, crops):
    x = crops[:3]
    a = CAdv(lr=1e-3, steps=2)
    assert torch.equal(a(nr, x, generator=gen(5)), a(nr, x, generator=gen(5)))
    assert not torch.equal(a(nr, x, generator=gen(5)), a(nr, x, generator=gen(6)))  # other hint pixels
    b = CAdv(lr=1e-3, steps=2, hints=0.0)  # no random hints: each image is attacked on its own weights
    together = b(nr, x)
    alone = torch.cat([b(nr, x[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-4)


def test_full_reference_and_lower_better_metrics(crops):
    fr = metrics.create("builtin-fr")  # lower is better
    x = crops[:3]
    ref = x.clone()
    lab = rgb_to_lab(x)  # a colour distortion (half the chroma), which recolouring can undo
    dist = lab_to_rgb(torch.cat([lab[:, :1], 0.5 * lab[:, 1:]], dim=1)).clamp(0, 1)
    a = CAdv(lr=1e-3, steps=6)
    out = a(fr, dist, ref=ref, generator=gen(0))
    assert torch.equal(ref, x)  # the reference is never recoloured
    with torch.no_grad():
        before, after = fr(dist, ref), fr(out, ref)
    # measured: 0.331 / 0.372 / 0.391 -> 0.162 / 0.212 / 0.250
    assert bool((after < 0.85 * before).all()), (before, after)
    niqe = metrics.create("niqe")  # NR, lower is better; needs 96x96
    y = photo_crops(2, size=96, step=40)
    out = CAdv(lr=1e-3, steps=4)(niqe, y, generator=gen(0))
    with torch.no_grad():
        assert bool((niqe(out) < niqe(y)).all()), (niqe(out), niqe(y))  # measured 4.71 -> 4.42, 17.5 -> 9.3
    with pytest.raises(InputError, match="ref="):
        a(fr, dist)


@pytest.mark.parametrize("call", [
    lambda: CAdv(lr=-1e-3), lambda: CAdv(lr=2.0), lambda: CAdv(lr="big"), lambda: CAdv(lr=float("nan")),
    lambda: CAdv(steps=-1), lambda: CAdv(steps=2.5), lambda: CAdv(hints=1.5), lambda: CAdv(hints=True),
    lambda: CAdv(ssim_floor=1.0), lambda: CAdv(ssim_floor=0), lambda: CAdv(colouriser=3),
    lambda: CAdv(preset="huge"), lambda: CAdv(eps=4 / 255)])
def test_bad_arguments_are_one_line_input_errors(call):
    with pytest.raises(InputError) as e:
        call()
    assert "\n" not in str(e.value)


def test_floor_needs_an_ssim_sized_image(nr):
    with pytest.raises(InputError) as e:
        CAdv(ssim_floor=0.9)(nr, torch.full((1, 3, 6, 6), 0.5))
    assert "\n" not in str(e.value)


def test_missing_or_corrupt_weights_are_one_line_errors(nr, crops, tmp_path, monkeypatch):
    with pytest.raises(MissingWeightsError) as e:
        CAdv(colouriser=tmp_path / "none.safetensors")
    msg = str(e.value)
    assert "\n" not in msg and "none.safetensors" in msg and "python scripts/train_cadv.py" in msg
    monkeypatch.setattr(cadv_mod, "WEIGHTS_FILE", tmp_path / "cadv-colouriser.safetensors")
    with pytest.raises(MissingWeightsError) as e:
        CAdv(steps=1)(nr, crops[:1])
    msg = str(e.value)
    assert "\n" not in msg and "cadv-colouriser.safetensors" in msg and "python scripts/train_cadv.py" in msg
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError) as e:
        CAdv(steps=1, colouriser=bad)(nr, crops[:1])
    assert "\n" not in str(e.value) and "bad.safetensors" in str(e.value)


def test_user_colouriser_file_is_used(nr, crops, tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        other = Colouriser()
    path = cadv_mod.save_colouriser(other, tmp_path / "mine.safetensors")
    x = crops[:2]
    mine = CAdv(lr=1e-3, steps=2, colouriser=path)(nr, x, generator=gen(0))
    shipped = CAdv(lr=1e-3, steps=2)(nr, x, generator=gen(0))
    assert not torch.equal(mine, shipped)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(nr, crops):
    m = metrics.create("builtin-nr").to("cuda")
    x = crops[:2].cuda()
    out = CAdv(steps=3)(m, x, generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and float((_lightness(out) - _lightness(x)).abs().max()) < 1e-3
    cpu_gen = CAdv(steps=3)(m, x, generator=gen(0))  # a CPU generator with CUDA images
    assert cpu_gen.device.type == "cuda"
