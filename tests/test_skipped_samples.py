"""A folder dataset with an unreadable and a too-small image: the run skips and records them.

Before: the corrupt file raised ``ImageFileError`` inside the first task that loaded it and the
too-small image raised the metric's minimum-size error, so either aborted the whole run
(``TaskError``) and wrote no row for the good images.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from iqaguard.bench.store import Store
from iqaguard.data.screen import min_side_of, screen
from iqaguard.registry import METRICS

from test_runner import THIS_FILE, ToyNR, _register, run


class ToyNR8(ToyNR):
    """toy-nr that needs at least 8x8 pixels."""

    name, min_size = "toy-nr-min8", 8


_register(METRICS, "toy-nr-min8", ToyNR8)


def _folder(root, n_good: int = 5):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n_good):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"good{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    Image.fromarray(np.full((4, 6, 3), 128, np.uint8)).save(root / "tiny.png")
    return root


def _spec(root, **over):
    spec = {"version": "skip-1", "imports": [THIS_FILE], "metrics": ["toy-nr", "toy-nr-min8"],
            "datasets": [{"name": "folder", "kwargs": {"root": str(root)}}],
            "attacks": [{"name": "ifgsm", "presets": ["weak"], "kwargs": {"steps": 1}}],
            "defenses": [{"name": "jpeg", "presets": [2]}], "modes": ["non-adaptive"], "seeds": [0], "batch_size": 2}
    spec.update(over)
    return spec


def test_screen_names_each_problem(tmp_path):
    from iqaguard.data.loaders.folder import ImageFolder

    ds = ImageFolder(_folder(tmp_path / "imgs"))
    side, who = min_side_of([("toy-nr", 1), ("toy-nr-min8", 8)])
    assert (side, who) == (8, "toy-nr-min8")
    out = screen(ds, range(len(ds)), side, who)
    assert [ds[i].name for i in out.usable] == [f"good{i}.png" for i in range(5)]
    reasons = {name: why for _, name, why in out.skipped}
    assert set(reasons) == {"broken.png", "tiny.png"}
    assert "cannot read image" in reasons["broken.png"] and "broken.png" in reasons["broken.png"]
    assert reasons["tiny.png"] == "the image is 6x4 pixels, smaller than the 8-pixel minimum side of metric toy-nr-min8"
    assert screen(ds, range(len(ds)), 1, need=2).usable == out.usable[:2]  # limit: stops early


def test_run_continues_past_bad_images_and_records_them(tmp_path):
    store = tmp_path / "s.duckdb"
    summary = run(_spec(_folder(tmp_path / "imgs")), store)
    with Store(store) as s:
        images = {r[0] for r in s.query("SELECT DISTINCT image FROM results")}
        skipped = s.query("SELECT dataset, seed, image, reason, run_id FROM skipped ORDER BY image")
    assert images == {f"good{i}.png" for i in range(5)}
    assert [r[:3] for r in skipped] == [("folder", 0, "broken.png"), ("folder", 0, "tiny.png")]
    assert all(r[4] == summary.run_id for r in skipped)
    # a resume reuses the stored selection: nothing new is skipped or recomputed
    again = run(_spec(tmp_path / "imgs"), store)
    assert again.tasks_run == 0
    with Store(store) as s:
        assert s.count("skipped") == 2


def test_every_image_unusable_is_a_one_line_error(tmp_path):
    from iqaguard.bench.spec import SpecError

    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "a.png")
    with pytest.raises(SpecError, match=r"selects no image for seed 0 \(1 skipped: the image is 4x4 pixels"):
        run(_spec(root), tmp_path / "s.duckdb")
