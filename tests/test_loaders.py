"""Loaders of real IQA releases, on tiny fixtures written in each official layout."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iqaguard.data.loaders  # noqa: F401  (registers the loaders)
from iqaguard.errors import DatasetError, ImageFileError, InputError
from iqaguard.registry import DATASETS


def _img(path: Path, size=(8, 6), value=0) -> None:
    """Write a small RGB image whose pixels encode ``value`` (so files are distinguishable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)
    Image.fromarray(arr).save(path)


def _csv(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header] + rows) + "\n", encoding="utf-8")


KONIQ_HEADER = '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"'


def make_koniq(root: Path, names=("10004473376.jpg", "10007357496.jpg", "10010187816.jpg")) -> list[float]:
    mos = [3.8461538, 1.25, 4.2]
    rows = []
    for i, (n, m) in enumerate(zip(names, mos)):
        _img(root / "1024x768" / n, (16, 12), 40 * i)
        rows.append(f'"{n}",0,{i},10,80,{5 - i},{95},{m},0.6{i},{20.5 + i}')
    _csv(root / "koniq10k_scores_and_distributions.csv", KONIQ_HEADER, rows)
    return mos


def make_kadid(root: Path) -> None:
    rows = []
    for ref in (1, 2):
        _img(root / "images" / f"I{ref:02d}.png", value=200)
        for t, lv in ((1, 1), (10, 5)):
            name = f"I{ref:02d}_{t:02d}_{lv:02d}.png"
            _img(root / "images" / name, value=10 * t + lv)
            rows.append(f"{name},I{ref:02d}.png,{5 - lv * 0.5 - ref * 0.1:.2f},0.{t}")
    _csv(root / "dmos.csv", "dist_img,ref_img,dmos,var", rows)


def make_agiqa(root: Path, folder: str = "images") -> None:
    _csv(root / "data.csv", "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align", [
        "AttnGAN_normal_000.jpg,statue of a man,,,,0.965602553,0.22,0.40889324,0.61",
        'sd1.5_lowcorr_262.jpg,"edwardian headshot, cold color, top view",cold color,top view,realistic style,'
        "3.283005153,0.59,3.3393159,0.34",
    ])
    _img(root / folder / "AttnGAN_normal_000.jpg", value=20)
    _img(root / folder / "sd1.5_lowcorr_262.jpg", value=90)


NIPS_HEADER = "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,AuthorProfileURL"


def make_nips(root: Path) -> None:
    ids = ["0c7ac4a8c9dfa802", "0e0b8ad6a8f8b1cd"]
    _csv(root / "images.csv", NIPS_HEADER, [
        f"{i},https://x/{i}.jpg,0.1,0.2,0.9,0.8,{306 + k},{500 + k},https://l/{i},CC BY 2.0,Author {k},https://a/{k}"
        for k, i in enumerate(ids)
    ])
    _csv(root / "categories.csv", "CategoryId,CategoryName", ["306,rhinoceros beetle", "307,weevil", "500,cliff"])
    for k, i in enumerate(ids):
        _img(root / "images" / f"{i}.png", (299, 299), 30 * k)


# --------------------------------------------------------------------------------- KonIQ-10k
def test_koniq_parses_official_csv(tmp_path):
    mos = make_koniq(tmp_path)
    ds = DATASETS.create("koniq10k", root=tmp_path)
    assert len(ds) == 3 and ds.name == "koniq10k" and not ds.full_reference
    assert ds.mos_range == (1.0, 5.0)
    assert [s.name for s in ds] == ["10004473376.jpg", "10007357496.jpg", "10010187816.jpg"]
    assert ds.mos_array() == pytest.approx(mos)
    assert ds[1].meta["votes"] == [0, 1, 10, 80, 4] and ds[1].meta["mos_zscore"] == pytest.approx(21.5)
    x = ds[2].image
    assert x.shape == (1, 3, 12, 16) and x.dtype == torch.float32
    assert float(x[0, 0, 5, 5]) == pytest.approx(80 / 255, abs=2 / 255)  # third file (value 80), JPEG-coded
    z = DATASETS.create("koniq10k", root=tmp_path, scale="zscore", limit=2)
    assert len(z) == 2 and z.mos_array() == pytest.approx([20.5, 21.5]) and z.mos_range == (0.0, 100.0)


def test_koniq_half_resolution_and_parent_root(tmp_path):
    release = tmp_path / "koniq"
    make_koniq(release)
    (release / "1024x768").rename(release / "512x384")
    ds = DATASETS.create("koniq10k", root=tmp_path)  # parent of the release folder
    assert ds.resolution == "512x384" and ds[0].path == release / "512x384" / "10004473376.jpg"
    with pytest.raises(DatasetError, match="'1024x768/'"):
        DATASETS.create("koniq10k", root=release, resolution="1024x768")


def test_koniq_missing_root_names_expected_file(tmp_path):
    with pytest.raises(DatasetError) as e:
        DATASETS.create("koniq10k", root=tmp_path / "nope")
    msg = str(e.value)
    assert "koniq10k_scores_and_distributions.csv" in msg and "database.mmsp-kn.de" in msg and "1024x768/" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="koniq10k_scores_and_distributions.csv"):
        DATASETS.create("koniq10k", root=tmp_path / "empty")
    with pytest.raises(DatasetError, match="root is required"):
        DATASETS.create("koniq10k", root=None)


def test_koniq_missing_image_names_path(tmp_path):
    make_koniq(tmp_path)
    (tmp_path / "1024x768" / "10007357496.jpg").unlink()
    with pytest.raises(ImageFileError) as e:
        DATASETS.create("koniq10k", root=tmp_path)
    assert str(tmp_path / "1024x768" / "10007357496.jpg") in str(e.value) and "row 3" in str(e.value)
    assert len(DATASETS.create("koniq10k", root=tmp_path, limit=1)) == 1  # prefix is still usable


def test_koniq_corrupt_mos_names_file_row_column(tmp_path):
    make_koniq(tmp_path)
    table = tmp_path / "koniq10k_scores_and_distributions.csv"
    table.write_text(table.read_text().replace(",4.2,", ",n/a,"))
    with pytest.raises(DatasetError) as e:
        DATASETS.create("koniq10k", root=tmp_path)
    msg = str(e.value)
    assert str(table) in msg and "row 4" in msg and "'MOS'" in msg and "'n/a'" in msg


def test_missing_column_and_bad_options(tmp_path):
    make_koniq(tmp_path)
    table = tmp_path / "koniq10k_scores_and_distributions.csv"
    table.write_text(table.read_text().replace('"SD"', '"STD"'))
    with pytest.raises(DatasetError, match="lacks column.*SD"):
        DATASETS.create("koniq10k", root=tmp_path)
    with pytest.raises(InputError, match="limit"):
        DATASETS.create("koniq10k", root=tmp_path, limit=-1)
    with pytest.raises(InputError, match="scale"):
        DATASETS.create("koniq10k", root=tmp_path, scale="dmos")


# --------------------------------------------------------------------------------- KADID-10k
def test_kadid_full_reference_and_meta(tmp_path):
    make_kadid(tmp_path / "kadid10k")
    ds = DATASETS.create("kadid10k", root=tmp_path)  # parent of kadid10k/
    assert ds.full_reference and ds.mos_range == (1.0, 5.0) and len(ds) == 4
    s = ds[3]
    assert s.name == "I02_10_05.png" and s.mos == pytest.approx(2.3)
    assert s.ref_path == tmp_path / "kadid10k" / "images" / "I02.png"
    assert (s.meta["ref_id"], s.meta["dist_type"], s.meta["dist_name"], s.meta["level"]) == (2, 10, "jpeg", 5)
    assert s.meta["var"] == pytest.approx(0.10)
    x, ref = s.image, s.ref
    assert x.shape == ref.shape == (1, 3, 6, 8)
    assert round(float(x[0, 1, 3, 3]) * 255) == 105 and round(float(ref[0, 1, 3, 3]) * 255) == 200


def test_kadid_missing_reference_and_bad_name(tmp_path):
    make_kadid(tmp_path)
    (tmp_path / "images" / "I02.png").unlink()
    with pytest.raises(ImageFileError, match=str(tmp_path / "images" / "I02.png")):
        DATASETS.create("kadid10k", root=tmp_path)
    table = tmp_path / "dmos.csv"
    table.write_text(table.read_text().replace("I01_01_01.png", "foo.png"))
    with pytest.raises(DatasetError, match="row 2.*I01_01_01"):
        DATASETS.create("kadid10k", root=tmp_path)


def test_kadid_missing_root_and_corrupt_dmos(tmp_path):
    with pytest.raises(DatasetError, match="dmos.csv"):
        DATASETS.create("kadid10k", root=tmp_path / "missing")
    make_kadid(tmp_path)
    table = tmp_path / "dmos.csv"
    lines = table.read_text().splitlines()
    lines[2] = lines[2].replace(",0.1", ",abc")
    table.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"row 3, column 'var'.*'abc"):
        DATASETS.create("kadid10k", root=tmp_path)


# ---------------------------------------------------------------------------------- AGIQA-3K
@pytest.mark.parametrize("folder", ["images", "AGIQA-3K", "."])
def test_agiqa_image_folder_variants(tmp_path, folder):
    make_agiqa(tmp_path, folder)
    ds = DATASETS.create("agiqa3k", root=tmp_path)
    assert ds.mos_range == (0.0, 5.0) and ds.mos_array() == pytest.approx([0.965602553, 3.283005153])
    s = ds[1]
    assert s.meta["prompt"] == "edwardian headshot, cold color, top view" and s.meta["style"] == "realistic style"
    assert s.meta["generator"] == "sd1.5" and s.meta["mos_align"] == pytest.approx(3.3393159)
    assert s.path == (tmp_path / folder / "sd1.5_lowcorr_262.jpg") and s.image.shape == (1, 3, 6, 8)
    align = DATASETS.create("agiqa3k", root=tmp_path, target="align")
    assert align.mos_array() == pytest.approx([0.40889324, 3.3393159])


def test_agiqa_missing_image_and_corrupt_mos(tmp_path):
    make_agiqa(tmp_path)
    (tmp_path / "images" / "sd1.5_lowcorr_262.jpg").unlink()
    with pytest.raises(ImageFileError, match="sd1.5_lowcorr_262.jpg"):
        DATASETS.create("agiqa3k", root=tmp_path)
    (tmp_path / "data.csv").write_text((tmp_path / "data.csv").read_text().replace("0.965602553", "good"))
    with pytest.raises(DatasetError, match="row 2, column 'mos_quality'"):
        DATASETS.create("agiqa3k", root=tmp_path)
    with pytest.raises(DatasetError, match="(?s)data.csv.*github.com/lcysyzxdxc"):
        DATASETS.create("agiqa3k", root=tmp_path / "nothing")


# --------------------------------------------------------------------------------- NIPS 2017
def test_nips2017_layout(tmp_path):
    make_nips(tmp_path)
    ds = DATASETS.create("nips2017", root=tmp_path)
    assert len(ds) == 2 and ds.mos_range is None and ds.mos_array() == [None, None]
    s = ds[0]
    assert s.name == "0c7ac4a8c9dfa802.png" and s.meta["true_label"] == 306 and s.meta["target_class"] == 500
    assert s.meta["true_name"] == "rhinoceros beetle" and s.meta["bbox"] == pytest.approx((0.1, 0.2, 0.9, 0.8))
    assert s.image.shape == (1, 3, 299, 299)
    (tmp_path / "images" / "0e0b8ad6a8f8b1cd.png").unlink()
    with pytest.raises(ImageFileError, match="0e0b8ad6a8f8b1cd.png"):
        DATASETS.create("nips2017", root=tmp_path)
    with pytest.raises(DatasetError, match="(?s)images.csv.*kaggle"):
        DATASETS.create("nips2017", root=tmp_path / "images")


# ------------------------------------------------------------------------------------- DIV2K
def test_div2k_accepts_parent_or_folder(tmp_path):
    for i in (803, 801, 802):
        _img(tmp_path / "DIV2K_valid_HR" / f"{i:04d}.png", value=i % 256)
    for root in (tmp_path, tmp_path / "DIV2K_valid_HR"):
        ds = DATASETS.create("div2k", root=root)
        assert [s.name for s in ds] == ["0801.png", "0802.png", "0803.png"] and ds.mos_array() == [None] * 3
    assert round(float(ds[1].image[0, 2, 4, 4]) * 255) == 802 % 256
    assert len(DATASETS.create("div2k", root=tmp_path, limit=2)) == 2
    with pytest.raises(DatasetError, match="DIV2K_valid_HR"):
        DATASETS.create("div2k", root=tmp_path / "DIV2K_valid_HR", split="train")


# ------------------------------------------------------------------------------------ folder
def test_folder_without_csv(tmp_path):
    _img(tmp_path / "b.jpg", value=10)
    _img(tmp_path / "a.png", value=20)
    _img(tmp_path / "sub" / "c.png", value=30)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = DATASETS.create("folder", root=tmp_path)
    assert [s.name for s in ds] == ["a.png", "b.jpg"] and ds.mos_array() == [None, None]
    assert [s.name for s in DATASETS.create("folder", root=tmp_path, recursive=True)] == ["a.png", "b.jpg", "sub/c.png"]
    assert ds[0].image.shape == (1, 3, 6, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        DATASETS.create("folder", root=tmp_path / "empty")


def test_folder_with_csv(tmp_path):
    for n in ("a.png", "b.png", "c.png", "d.png"):
        _img(tmp_path / n)
    _csv(tmp_path / "scores.csv", "file,score,source", ["c.png,71.5,lab", "a.png,12,web"])
    with pytest.warns(UserWarning, match="2 image"):
        ds = DATASETS.create("folder", root=tmp_path, csv="scores.csv", image_column="file", mos_column="score",
                             mos_range=(0, 100), dataset_name="mine")
    assert ds.name == "mine" and ds.mos_range == (0.0, 100.0)
    assert [s.name for s in ds] == ["c.png", "a.png"] and ds.mos_array() == [71.5, 12.0]
    assert ds[0].meta == {"source": "lab"}
    _csv(tmp_path / "default.csv", "image,mos", ["a.png,1", "b.png,2", "c.png,3", "d.png,4"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every image listed -> no warning
        assert DATASETS.create("folder", root=tmp_path, csv=tmp_path / "default.csv").mos_array() == [1, 2, 3, 4]


def test_folder_csv_errors(tmp_path):
    _img(tmp_path / "a.png")
    _csv(tmp_path / "s.csv", "image,mos", ["a.png,3", "gone.png,4"])
    with pytest.raises(ImageFileError, match=str(tmp_path / "gone.png")):
        DATASETS.create("folder", root=tmp_path, csv="s.csv")
    _csv(tmp_path / "s.csv", "image,mos", ["a.png,three"])
    with pytest.raises(DatasetError, match="row 2, column 'mos'.*'three'"):
        DATASETS.create("folder", root=tmp_path, csv="s.csv")
    _csv(tmp_path / "s.csv", "image,mos", ["a.png,3", "a.png,4"])
    with pytest.raises(DatasetError, match="listed twice"):
        DATASETS.create("folder", root=tmp_path, csv="s.csv")
    with pytest.raises(DatasetError, match="missing.csv"):
        DATASETS.create("folder", root=tmp_path, csv="missing.csv")
