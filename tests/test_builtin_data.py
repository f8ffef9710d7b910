"""Tests of the builtin photographs (``builtin``), builtin-kadid and its pseudo-MOS."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqaguard.data import builtin, kadid_builtin, kadid_mos
from iqaguard.data.builtin import PHOTOS_DIR, BuiltinPhotos, photo_info, photo_paths
from iqaguard.data.distortions import DISTORTIONS, N_LEVELS
from iqaguard.data.io import load_image
from iqaguard.data.kadid_builtin import BuiltinKadid, default_root, split_sources
from iqaguard.errors import DatasetError, InputError
from iqaguard.registry import DATASETS

SMALL = (48, 64)
PER_SOURCE = len(DISTORTIONS) * N_LEVELS


# ---- builtin photographs -----------------------------------------------------------------

def test_photographs_are_many_small_and_documented():
    paths = photo_paths()
    assert len(paths) >= 20
    assert sum(p.stat().st_size for p in paths) < 24 * 2**20  # 159 photographs, about 140 KB each
    card = (PHOTOS_DIR / "DATA_CARD.md").read_text(encoding="utf-8")
    info = photo_info()
    for p in paths:
        assert p.suffix == ".jpg" and p.name == p.name.lower()
        with Image.open(p) as im:
            assert im.mode == "RGB" and 384 <= min(im.size) <= 512  # never upsampled to 384 x 512
        meta = info[p.stem]
        assert meta["licence"] and meta["author"] and meta["package"]
        assert f"| {p.name} |" in card


def test_builtin_dataset_lists_every_photograph():
    ds = DATASETS.create("builtin")
    assert isinstance(ds, BuiltinPhotos) and len(ds) == len(photo_paths())
    s = ds[0]
    assert s.mos is None and s.ref_path is None and s.path.is_file()
    assert {"source", "licence", "author", "package", "original_path"} <= set(s.meta)
    x = s.image
    assert x.dim() == 4 and x.shape[:2] == (1, 3) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    sub = BuiltinPhotos(names=["kite", "coffee.jpg"])
    assert [t.name for t in sub] == ["kite.jpg", "coffee.jpg"]
    with pytest.raises(DatasetError, match="unknown builtin photograph"):
        BuiltinPhotos(names=["nope"])


def test_missing_photographs_give_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(builtin, "PHOTOS_DIR", tmp_path)
    with pytest.raises(DatasetError, match="missing"):
        photo_paths()


# ---- splits ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 123])
def test_splits_are_disjoint_cover_all_and_deterministic(seed):
    sp = split_sources(seed)
    names = [p.stem for p in photo_paths()]
    all_ = sp["train"] + sp["val"] + sp["test"]
    assert sorted(all_) == sorted(names) and len(set(all_)) == len(all_)
    assert len(sp["test"]) >= 3 and len(sp["val"]) >= 2
    assert abs(len(sp["train"]) / len(names) - 0.7) < 0.1
    assert split_sources(seed) == sp


def test_splits_change_with_the_seed():
    assert split_sources(0)["test"] != split_sources(1)["test"] or split_sources(0)["val"] != split_sources(1)["val"]


def test_default_root_follows_iqaguard_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("IQAGUARD_CACHE", str(tmp_path))
    assert default_root() == tmp_path / "builtin-kadid"
    monkeypatch.delenv("IQAGUARD_CACHE")
    assert default_root() == Path.home() / ".cache" / "iqaguard" / "builtin-kadid"


# ---- builtin-kadid generation --------------------------------------------------------------

def _test_sources(n):
    return split_sources(0)["test"][:n]


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("kadid")
    return BuiltinKadid(split="test", seed=0, root=root, size=SMALL, progress=False,
                        sources=_test_sources(1), workers=1)


def test_samples_follow_the_contract(small_ds):
    src = _test_sources(1)[0]
    assert small_ds.full_reference and small_ds.mos_range == (1.0, 5.0) and len(small_ds) == PER_SOURCE
    assert small_ds.root.name == f"v{kadid_builtin.FORMAT}-seed0-{SMALL[0]}x{SMALL[1]}"
    for s in small_ds:
        d, lv = s.meta["dist_id"], s.meta["level"]
        assert s.name == f"{src}_d{d:02d}_l{lv}.png" and s.path.is_file() and s.ref_path.is_file()
        assert s.meta == {"source": src, "dist_id": d, "dist_name": DISTORTIONS[d].name, "level": lv,
                          "split": "test"}
        assert 1.0 <= s.mos <= 5.0
    x, ref = small_ds[0].image, small_ds[0].ref
    assert x.shape == ref.shape == (1, 3) + SMALL


def test_labels_match_the_saved_pixels(small_ds):
    """The stored pseudo-MOS is the pseudo-MOS of the PNG files as they are on disk."""
    some = [small_ds[i] for i in (0, 37, 88, PER_SOURCE - 1)]
    x = torch.cat([s.image for s in some])
    ref = some[0].ref
    np.testing.assert_allclose(kadid_mos.pseudo_mos(x, ref).numpy(), [s.mos for s in some], atol=1e-5)


def test_distorted_images_equal_apply_distortion_with_the_documented_seed(small_ds):
    from iqaguard.data.distortions import apply_distortion

    s = next(t for t in small_ds if t.meta["dist_name"] == "white_noise" and t.meta["level"] == 3)
    ref = np.asarray(Image.open(s.ref_path).convert("RGB")).astype(np.float32) / 255.0
    rng = np.random.default_rng(kadid_builtin.image_seed(0, s.meta["source"], 11, 3))
    y = (apply_distortion(ref, 11, 3, rng) * 255.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(s.path).convert("RGB")), y)


def test_generation_is_deterministic(small_ds, tmp_path):
    other = BuiltinKadid(split="test", seed=0, root=tmp_path, size=SMALL, progress=False,
                         sources=_test_sources(1), workers=1)
    assert [(s.name, s.mos) for s in other] == [(s.name, s.mos) for s in small_ds]
    for a, b in zip(other, small_ds):
        assert torch.equal(load_image(a.path), load_image(b.path))
    assert torch.equal(other[0].ref, small_ds[0].ref)


def test_reopen_reuses_the_cache(small_ds, monkeypatch):
    labels = small_ds.root / _test_sources(1)[0] / "labels.json"
    stamp = labels.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("a finished source was regenerated")

    monkeypatch.setattr(kadid_builtin, "generate_type", boom)
    again = BuiltinKadid(split="test", seed=0, root=small_ds.root.parent, size=SMALL, progress=False,
                         sources=_test_sources(1), workers=1)
    assert len(again) == PER_SOURCE and labels.stat().st_mtime_ns == stamp


class _Interrupted(Exception):
    """Stands for a crash or Ctrl-C during generation."""


def test_interrupted_generation_keeps_finished_sources(tmp_path, monkeypatch):
    first, second = _test_sources(2)
    real = kadid_builtin.generate_type
    calls, crash = [], [True]

    def flaky(folder, source, seed, dist_id):
        calls.append(source)
        if crash[0] and source == second and dist_id == 12:
            raise _Interrupted("killed in the middle of the second source")
        return real(folder, source, seed, dist_id)

    monkeypatch.setattr(kadid_builtin, "generate_type", flaky)
    with pytest.raises(_Interrupted):
        BuiltinKadid(split="test", root=tmp_path, size=SMALL, progress=False, sources=[first, second], workers=1)
    base = tmp_path / f"v{kadid_builtin.FORMAT}-seed0-{SMALL[0]}x{SMALL[1]}"
    assert kadid_builtin.read_labels(base / first) is not None
    assert not (base / second / "labels.json").exists()
    assert not list((base / second).glob("*.tmp"))
    stamp = (base / first / "labels.json").stat().st_mtime_ns

    calls.clear()
    crash[0] = False
    ds = BuiltinKadid(split="test", root=tmp_path, size=SMALL, progress=False, sources=[first, second], workers=1)
    assert set(calls) == {second} and len(ds) == 2 * PER_SOURCE
    assert (base / first / "labels.json").stat().st_mtime_ns == stamp


def test_a_corrupt_labels_file_is_regenerated(tmp_path):
    src = _test_sources(1)
    BuiltinKadid(split="test", root=tmp_path, size=SMALL, progress=False, sources=src, workers=1)
    labels = tmp_path / f"v{kadid_builtin.FORMAT}-seed0-{SMALL[0]}x{SMALL[1]}" / src[0] / "labels.json"
    good = json.loads(labels.read_text())
    labels.write_text('{"format": 2, "items": [')
    ds = BuiltinKadid(split="test", root=tmp_path, size=SMALL, progress=False, sources=src, workers=1)
    assert json.loads(labels.read_text()) == good and len(ds) == PER_SOURCE


def test_labels_from_another_level_table_are_regenerated(tmp_path, monkeypatch):
    src = _test_sources(1)
    BuiltinKadid(split="test", root=tmp_path, size=SMALL, progress=False, sources=src, workers=1)
    folder = tmp_path / f"v{kadid_builtin.FORMAT}-seed0-{SMALL[0]}x{SMALL[1]}" / src[0]
    assert kadid_builtin.read_labels(folder) is not None
    monkeypatch.setattr(kadid_builtin, "TERMS", {**kadid_builtin.TERMS, "psnr": "a different map"})
    assert kadid_builtin.read_labels(folder) is None  # stale: made with other definitions


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(InputError, match="split"):
        BuiltinKadid(split="dev", root=tmp_path)
    with pytest.raises(InputError, match="size"):
        BuiltinKadid(root=tmp_path, size=(8, 64))
    with pytest.raises(InputError, match="seed"):
        BuiltinKadid(root=tmp_path, seed=-1)
    with pytest.raises(InputError, match="workers"):
        BuiltinKadid(root=tmp_path, workers=0)
    train_src = split_sources(0)["train"][0]
    with pytest.raises(DatasetError, match="not in split"):
        BuiltinKadid(split="test", root=tmp_path, sources=[train_src])
    assert not any(tmp_path.rglob("*.png"))  # nothing generated on bad input


def test_registered_name_creates_the_dataset(tmp_path):
    ds = DATASETS.create("builtin-kadid", split="test", root=tmp_path, size=SMALL, progress=False,
                         sources=_test_sources(1), workers=1)
    assert isinstance(ds, BuiltinKadid) and len(ds) == PER_SOURCE


# ---- pseudo-MOS --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ref_tensor():
    return load_image(photo_paths()[0])[..., :192, :256].contiguous()


def test_pseudo_mos_is_5_for_identical_images_and_falls_with_noise(ref_tensor):
    g = torch.Generator().manual_seed(0)
    noisy = [(ref_tensor + s * torch.randn(ref_tensor.shape, generator=g)).clamp(0, 1) for s in (0.02, 0.08, 0.2)]
    mos = kadid_mos.pseudo_mos(torch.cat([ref_tensor] + noisy), ref_tensor)
    assert abs(float(mos[0]) - 5.0) < 1e-5
    assert all(float(a) > float(b) for a, b in zip(mos, mos[1:]))
    assert float(mos.min()) >= 1.0


def test_pseudo_mos_terms_follow_their_documented_maps(ref_tensor):
    x = (ref_tensor * 0.7 + 0.1).clamp(0, 1)
    x = torch.stack([x[:, 0] * 0.9, x[:, 1], x[:, 2] * 1.1], dim=1).clamp(0, 1)  # a colour cast too
    t = kadid_mos.quality_terms(x, ref_tensor)
    assert abs(float(t["q_gmsd"]) - (1 - min(float(t["gmsd"]) / 0.35, 1))) < 1e-6
    assert abs(float(t["q_chroma"]) - (1 - min(float(t["chroma"]) / 10, 1))) < 1e-6
    assert abs(float(t["q_ssim"]) - min(max(float(t["ssim"]), 0), 1)) < 1e-6
    # the three terms of kadid_mos.MOS_TERMS, equally weighted; PSNR is stored only
    mean_q = (float(t["q_ssim"]) + float(t["q_gmsd"]) + float(t["q_chroma"])) / 3
    assert abs(float(kadid_mos.pseudo_mos(x, ref_tensor)) - (1 + 4 * mean_q)) < 1e-5
    # SSIM at full resolution (no ssim.m downsampling) and GMSD as published
    from iqaguard.metrics.functional import ssim
    assert float(t["ssim"]) == pytest.approx(float(ssim(x, ref_tensor, luma=True, downsample=False)), abs=1e-5)
    assert float(t["gmsd"]) == pytest.approx(float(kadid_mos.gmsd(x, ref_tensor)), abs=1e-6)


def test_chroma_term_matches_scikit_image_lab():
    """The chroma difference against an independent CIE Lab (D65) conversion: scikit-image's."""
    color = pytest.importorskip("skimage.color")
    ref = load_image(photo_paths()[4])[..., :64, :96].contiguous()
    x = torch.stack([ref[:, 0] * 0.8, ref[:, 1], (ref[:, 2] * 1.2).clamp(0, 1)], dim=1)
    half = [torch.nn.functional.avg_pool2d(v, 2)[0].permute(1, 2, 0).double().numpy() for v in (x, ref)]
    lab_x, lab_r = color.rgb2lab(half[0]), color.rgb2lab(half[1])
    want = np.sqrt(((lab_x[..., 1:] - lab_r[..., 1:]) ** 2).sum(-1)).mean()
    got = float(kadid_mos.quality_terms(x, ref)["chroma"])
    assert got == pytest.approx(want, rel=2e-3)


def test_pseudo_mos_does_not_depend_on_the_batch(ref_tensor):
    """A label is a fixed function of its own pair (no normalisation over the dataset)."""
    g = torch.Generator().manual_seed(1)
    x = (ref_tensor + 0.05 * torch.randn((3,) + ref_tensor.shape[1:], generator=g)).clamp(0, 1)
    together = kadid_mos.pseudo_mos(x, ref_tensor)
    alone = torch.cat([kadid_mos.pseudo_mos(x[i:i + 1], ref_tensor) for i in range(3)])
    torch.testing.assert_close(together, alone)


def test_gmsd_and_delta_e(ref_tensor):
    assert float(kadid_mos.gmsd(ref_tensor, ref_tensor)) == pytest.approx(0.0, abs=1e-7)
    assert float(kadid_mos.delta_e76(ref_tensor, ref_tensor)) == pytest.approx(0.0, abs=1e-4)
    blurred = torch.nn.functional.avg_pool2d(ref_tensor, 5, stride=1, padding=2, count_include_pad=False)
    more = torch.nn.functional.avg_pool2d(ref_tensor, 9, stride=1, padding=4, count_include_pad=False)
    assert 0 < float(kadid_mos.gmsd(blurred, ref_tensor)) < float(kadid_mos.gmsd(more, ref_tensor))
    # a pure colour change: swap red and blue -> large dE, same luma structure
    swapped = ref_tensor[:, [2, 1, 0]]
    assert float(kadid_mos.delta_e76(swapped, ref_tensor)) > 5.0
    # uniform colours: dE equals the CIE76 distance computed independently by scikit-image
    color = pytest.importorskip("skimage.color")
    c1, c2 = np.array([0.5, 0.2, 0.7]), np.array([0.4, 0.6, 0.3])
    expected = float(np.linalg.norm(color.rgb2lab(c1[None, None]) - color.rgb2lab(c2[None, None])))
    a = torch.tensor(c1, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    b = torch.tensor(c2, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    assert float(kadid_mos.delta_e76(a, b)) == pytest.approx(expected, rel=1e-3)


def test_quality_terms_reject_mismatched_reference(ref_tensor):
    with pytest.raises(InputError, match="ref"):
        kadid_mos.quality_terms(ref_tensor, ref_tensor[..., :100])


# ---- slow: process pool and full-size labels ----------------------------------------------------

@pytest.mark.slow
def test_process_pool_gives_the_same_dataset_as_in_process(tmp_path):
    src = _test_sources(2)
    pooled = BuiltinKadid(split="test", root=tmp_path / "a", size=SMALL, progress=False, sources=src, workers=2)
    inproc = BuiltinKadid(split="test", root=tmp_path / "b", size=SMALL, progress=False, sources=src, workers=1)
    assert [(s.name, s.mos) for s in pooled] == [(s.name, s.mos) for s in inproc]
    for a, b in zip(pooled, inproc):
        assert a.path.read_bytes() == b.path.read_bytes()


@pytest.mark.slow
def test_full_size_pseudo_mos_decreases_with_level_for_every_type(tmp_path):
    ds = BuiltinKadid(split="test", root=tmp_path, progress=False)
    assert len(ds) == len(split_sources(0)["test"]) * PER_SOURCE
    for d in DISTORTIONS.values():
        means = [np.mean([s.mos for s in ds if s.meta["dist_id"] == d.id and s.meta["level"] == lv])
                 for lv in range(1, N_LEVELS + 1)]
        assert all(a > b for a, b in zip(means, means[1:])), (d.name, means)
    mos = np.array([s.mos for s in ds])
    assert mos.min() < 2.5 and mos.max() > 4.5  # the labels use the scale
    # v2: level 5 of every type below the median of level 1 over all types
    median_l1 = np.median([s.mos for s in ds if s.meta["level"] == 1])
    for d in DISTORTIONS.values():
        assert np.mean([s.mos for s in ds if s.meta["dist_id"] == d.id and s.meta["level"] == 5]) < median_l1, d.name


def test_a_label_upgrade_relabels_in_place_and_keeps_the_images(tmp_path):
    """Labels of another LABEL_FORMAT are recomputed from the images already on disk; an
    undecodable image is redistorted (byte-identical: per-image seeds)."""
    src = _test_sources(1)
    ds = BuiltinKadid(split="test", root=tmp_path, size=SMALL, progress=False, sources=src, workers=1)
    folder = ds.root / src[0]
    labels = json.loads((folder / "labels.json").read_text())
    want = [(s.name, s.mos) for s in ds]
    cells = kadid_builtin.read_cells(folder)
    victim = folder / ds[7].name
    good_bytes = victim.read_bytes()
    victim.write_bytes(good_bytes[:40])  # a truncated PNG
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*_d*_l*.png") if p != victim}
    labels["format"] = kadid_builtin.LABEL_FORMAT - 1
    (folder / "labels.json").write_text(json.dumps(labels))
    again = BuiltinKadid(split="test", root=tmp_path, size=SMALL, progress=False, sources=src, workers=1)
    assert [(s.name, s.mos) for s in again] == want
    assert json.loads((folder / "labels.json").read_text())["format"] == kadid_builtin.LABEL_FORMAT
    np.testing.assert_array_equal(kadid_builtin.read_cells(folder), cells)
    assert victim.read_bytes() == good_bytes
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*_d*_l*.png") if p != victim} == stamps
    (folder / "cells.npy").unlink()  # labels without their cells are stale too
    assert kadid_builtin.read_labels(folder) is None



_GENERATE = """
import sys, torch
from iqaguard.data import kadid_builtin as kb
from iqaguard.data.io import save_png
folder = sys.argv[1]
save_png(torch.rand(1, 3, 384, 512, generator=torch.Generator().manual_seed(0)), folder + "/toy_ref.png")
kb._run_tasks([(folder, "toy", 0, d) for d in range(1, 26)], 2, lambda t, r: print("done", flush=True))
"""


def test_ctrl_c_during_generation_stops_the_workers_quietly(tmp_path):
    """Ctrl-C in a terminal (SIGINT to the whole process group) while builtin-kadid generates:
    one traceback (the parent's), no worker left, within seconds. (The old pool passed this too:
    its workers returned the KeyboardInterrupt as a task result; the pool is now stopped by
    ``iqaguard._pool.stop_pool``, shared with the benchmark executor, which also terminates
    running tasks instead of waiting for them when the parent gets SIGTERM.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _GENERATE, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "done"  # the pool is running
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.time()
        _, err = proc.communicate(timeout=30)
        assert time.time() - t0 < 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and err.count("Traceback") == 1, err  # the parent's KeyboardInterrupt only
    assert "SpawnProcess" not in err
    deadline, leftover = time.time() + 10, True
    while leftover and time.time() < deadline:  # no process of the group (workers, resource tracker) lingers
        try:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)
        except ProcessLookupError:
            leftover = False
    assert not leftover
