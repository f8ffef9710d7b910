"""``builtin-kadid``: a KADID-10k-style synthetic IQA dataset made from the builtin photographs.

Every builtin photograph (:mod:`iqaguard.data.builtin`) is centre-cropped to the target aspect
ratio and Lanczos-resized to ``size`` (384 x 512 as KADID-10k) as the pristine reference, then
distorted by the 25 KADID-10k types (:mod:`iqaguard.data.distortions`) at 5 levels: 125
distorted images per source. Each is labelled with a pseudo-MOS on KADID's 1..5 scale
(:mod:`iqaguard.data.kadid_mos`). See ``docs/builtin_kadid.md``.

Generation happens on first use and is cached per source under
``<root>/v<FORMAT>-seed<seed>-<H>x<W>/<source>/``: the reference ``<source>_ref.png``, the
distorted ``<source>_dXX_lY.png`` and ``labels.json``, written atomically (temporary file +
``os.replace``) only after all images of the source exist. An interrupted generation therefore
loses nothing finished and never leaves a partial labels file; reopening regenerates only the
sources without labels. Everything is deterministic for ``seed``.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from .._pool import ignore_sigint, stop_pool
from ..errors import DatasetError, InputError
from ..registry import DATASETS
from .base import Dataset, Sample
from .builtin import photo_names, photo_paths
from .distortions import DISTORTIONS, N_LEVELS, apply_distortion
from ..metrics.cells import cells_and_stats
from .kadid_mos import MOS_TERMS, TERMS, mos_from_terms, terms_from_stats

#: Bump when the code of a distortion changes: the images go to a new cache folder
#: ``v<FORMAT>-...`` (changes of the level table are caught by :func:`fingerprint`).
FORMAT = 3
#: Bump when the pseudo-MOS or the stored cell statistics change: sources whose labels carry
#: another version are relabelled in place, reusing their (still valid) images.
LABEL_FORMAT = 4
CELLS = "cells.npy"
SPLITS = ("train", "val", "test")
_SPLIT_TAG = 0x5B117  # mixes into the split seed so it differs from the image seeds
LABELS = "labels.json"
Task = Tuple[str, str, int, int]  # (source folder, source, seed, dist_id)


def fingerprint() -> str:
    """Short hash of the distortion table (ids, names, levels), the pseudo-MOS terms,
    :data:`FORMAT` and :data:`LABEL_FORMAT`; stored in every labels file, a mismatch makes the
    source regenerate (its images are reused when the distortion table is unchanged)."""
    table = [(d.id, d.name, list(d.levels)) for d in DISTORTIONS.values()]
    blob = json.dumps([FORMAT, LABEL_FORMAT, table, TERMS, MOS_TERMS], sort_keys=True).encode("utf-8")
    return hashlib.sha1(blob).hexdigest()[:12]


def default_root() -> Path:
    """``$IQAGUARD_CACHE/builtin-kadid``, else ``~/.cache/iqaguard/builtin-kadid``."""
    base = os.environ.get("IQAGUARD_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "iqaguard") / "builtin-kadid"


def split_sources(seed: int = 0) -> Dict[str, List[str]]:
    """Split the builtin photographs by source: about 70 / 15 / 15 %, at least 3 test and 2 val.

    Args:
        seed: split seed (the dataset's ``seed``).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each a sorted list of source stems;
        disjoint, covering every photograph, deterministic for ``seed``.
    """
    names = photo_names()
    n = len(names)
    n_test, n_val = max(3, round(0.15 * n)), max(2, round(0.15 * n))
    if n - n_test - n_val < 1:
        raise DatasetError(f"builtin-kadid needs at least {n_test + n_val + 1} photographs, found {n}")
    order = np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_TAG])).permutation(n)
    picked = [names[i] for i in order]
    return {"test": sorted(picked[:n_test]), "val": sorted(picked[n_test:n_test + n_val]),
            "train": sorted(picked[n_test + n_val:])}


def image_seed(seed: int, source: str, dist_id: int, level: int) -> np.random.SeedSequence:
    """The seed of one distorted image: ``SeedSequence([seed, crc32(source), type, level])``."""
    return np.random.SeedSequence([int(seed), zlib.crc32(source.encode("utf-8")), int(dist_id), int(level)])


def make_reference(photo: Path, size: Tuple[int, int]) -> np.ndarray:
    """Centre-crop ``photo`` to the aspect ratio of ``size = (H, W)`` and Lanczos-resize it.

    Returns:
        ``H x W x 3`` uint8 RGB.
    """
    h, w = size
    with Image.open(photo) as im:
        im = im.convert("RGB")
        pw, ph = im.size
        if pw * h > ph * w:  # too wide: crop the width
            cw = round(ph * w / h)
            box = ((pw - cw) // 2, 0, (pw - cw) // 2 + cw, ph)
        else:
            ch = round(pw * h / w)
            box = (0, (ph - ch) // 2, pw, (ph - ch) // 2 + ch)
        return np.asarray(im.crop(box).resize((w, h), Image.Resampling.LANCZOS))


def distorted_name(source: str, dist_id: int, level: int) -> str:
    """File name ``<source>_dXX_lY.png`` of the distorted image (type 1..25, level 1..5)."""
    return f"{source}_d{dist_id:02d}_l{level}.png"


def _write_png(arr: np.ndarray, path: Path) -> None:
    """Atomic write (temporary file, then ``os.replace``): a PNG on disk is always complete."""
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)


def _read_png(path: Path, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """The RGB pixels of an existing image of ``shape``, or ``None`` (absent, unreadable, other size)."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None
    return arr if arr.shape == shape else None


def _to_tensor(arrs: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float().div_(255.0)


def generate_type(folder: str, source: str, seed: int, dist_id: int, reuse: bool = True) -> List[Dict[str, Any]]:
    """Write the 5 levels of one type for one source and return their label records.

    Reads ``<folder>/<source>_ref.png``; every image uses its own generator
    (:func:`image_seed`). With ``reuse``, an image already in the folder is kept (the folder
    name fixes the distortion code, :data:`FORMAT`, and images are written atomically, so an
    existing decodable image is the one this code would write): a label upgrade relabels
    without redistorting. The pseudo-MOS and the per-cell statistics
    (:func:`iqaguard.metrics.cells.cells_and_stats`, record key ``"cells"``, float16
    ``[4, H/16, W/16]``) are computed on the 8-bit images as saved.
    """
    base = Path(folder)
    with Image.open(base / f"{source}_ref.png") as im:
        ref8 = np.asarray(im.convert("RGB"))
    ref = ref8.astype(np.float32) / 255.0
    d = DISTORTIONS[dist_id]
    outs, names = [], []
    for level in range(1, N_LEVELS + 1):
        names.append(distorted_name(source, dist_id, level))
        y8 = _read_png(base / names[-1], ref8.shape) if reuse else None
        if y8 is None:
            y = apply_distortion(ref, dist_id, level, np.random.default_rng(image_seed(seed, source, dist_id, level)))
            y8 = (y * 255.0 + 0.5).astype(np.uint8)
            _write_png(y8, base / names[-1])
        outs.append(y8)
    x, r = _to_tensor(outs), _to_tensor([ref8])
    with torch.no_grad():
        cells, stats = cells_and_stats(x, r)
        terms = terms_from_stats(x, r, stats)
    mos = mos_from_terms(terms)
    return [{"name": names[i], "dist_id": dist_id, "dist_name": d.name, "level": i + 1,
             "mos": float(mos[i]), "terms": {k: float(v[i]) for k, v in terms.items()},
             "cells": cells[i].half().numpy()}
            for i in range(N_LEVELS)]


def _init_worker() -> None:
    ignore_sigint()  # Ctrl-C goes to the parent, which stops the pool (no traceback per worker)
    torch.set_num_threads(1)


def read_labels(folder: Path) -> Optional[List[Dict[str, Any]]]:
    """The label records of a finished source, or ``None`` when it must be (re)generated."""
    f = folder / LABELS
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("format") != LABEL_FORMAT or data.get("fingerprint") != fingerprint()
            or not (folder / CELLS).is_file()):
        return None
    items = data.get("items")
    if not isinstance(items, list) or len(items) != len(DISTORTIONS) * N_LEVELS:
        return None
    try:
        files = [it["name"] for it in items] + [data["reference"]]
    except (KeyError, TypeError):
        return None
    return items if all((folder / f).is_file() for f in files) else None


def read_cells(folder: Path) -> np.ndarray:
    """The per-cell statistics ``(s, m, d, c)`` of a finished source's images, float16
    ``[125, 4, H/16, W/16]`` in the order of its labels file (:func:`read_labels`)."""
    return np.load(folder / CELLS, allow_pickle=False)


def _write_labels(folder: Path, source: str, seed: int, size: Tuple[int, int], items: List[Dict[str, Any]]) -> None:
    """``cells.npy`` then ``labels.json``, each atomically: a labels file implies its cells."""
    items = sorted(items, key=lambda it: (it["dist_id"], it["level"]))
    cells = np.stack([it.pop("cells") for it in items])
    tmp_cells = folder / (CELLS + ".tmp.npy")
    np.save(tmp_cells, cells, allow_pickle=False)
    os.replace(tmp_cells, folder / CELLS)
    data = {"format": LABEL_FORMAT, "fingerprint": fingerprint(), "source": source, "seed": seed, "size": list(size),
            "reference": f"{source}_ref.png", "pseudo_mos": "1 + 4 * mean of " + "; ".join(TERMS[k[2:]] for k in MOS_TERMS),
            "items": items}
    tmp = folder / (LABELS + ".tmp")
    tmp.write_text(json.dumps(data, indent=0), encoding="utf-8")
    os.replace(tmp, folder / LABELS)


def _run_tasks(tasks: List[Task], workers: int, on_done: Callable[[Task, List[Dict[str, Any]]], None]) -> None:
    """Run :func:`generate_type` on every task, in-process when ``workers <= 1`` (one torch
    thread, restored afterwards) or in a pool of spawned processes; ``on_done`` gets each result
    as soon as it is ready. The first failure cancels the pending tasks and is re-raised."""
    if workers <= 1:
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for t in tasks:
                on_done(t, generate_type(*t))
        finally:
            torch.set_num_threads(prev)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        futs: Dict[Future, Task] = {pool.submit(generate_type, *t): t for t in tasks}
        try:
            for f in as_completed(futs):
                on_done(futs[f], f.result())
        except BaseException:  # a failure, Ctrl-C or SIGTERM: terminate the workers, keep finished sources
            stop_pool(pool)
            raise


@DATASETS.register("builtin-kadid")
class BuiltinKadid(Dataset):
    """KADID-10k-style synthetic FR dataset over the builtin photographs (pseudo-MOS 1..5).

    Args:
        split: ``"all"``, ``"train"``, ``"val"`` or ``"test"`` (by source, see :func:`split_sources`).
        seed: seed of the split and of every distorted image.
        root: cache base folder (default :func:`default_root`); files go to the sub-folder
            ``v<FORMAT>-seed<seed>-<H>x<W>``.
        size: ``(H, W)`` of references and distorted images (both >= 16; KADID uses 384 x 512).
        progress: show a progress bar while generating.
        sources: optional subset of source stems (must belong to ``split``); default all.
        workers: processes used for generation (default ``min(4, cpu_count)``; 1 = in-process).

    Samples: ``name`` ``"{source}_dXX_lY.png"``, ``path``, ``ref_path``, ``mos`` (pseudo-MOS),
    ``meta`` ``{source, dist_id, dist_name, level, split}``; images ``[1, 3, H, W]`` in [0, 1].
    """

    name = "builtin-kadid"
    mos_range = (1.0, 5.0)
    full_reference = True

    def __init__(self, split: str = "all", seed: int = 0, root: Optional[os.PathLike] = None,
                 size: Tuple[int, int] = (384, 512), progress: bool = True,
                 sources: Optional[Sequence[str]] = None, workers: Optional[int] = None) -> None:
        if split not in SPLITS + ("all",):
            raise InputError(f"split: expected one of 'all', 'train', 'val', 'test', got {split!r}")
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(v, int) and v >= 16 for v in size)):
            raise InputError(f"size: expected (H, W) integers >= 16, got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"seed: expected a non-negative integer, got {seed!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InputError(f"workers: expected a positive integer (1 = no subprocesses), got {workers!r}")
        if isinstance(sources, str):
            sources = [sources]
        self.seed, self.size, self.split = int(seed), (int(size[0]), int(size[1])), split
        self.root = (Path(root) if root is not None else default_root()) / f"v{FORMAT}-seed{self.seed}-{size[0]}x{size[1]}"
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        splits = split_sources(self.seed)
        split_of = {s: k for k, names in splits.items() for s in names}
        chosen = sorted(split_of) if split == "all" else splits[split]
        if sources is not None:
            bad = [s for s in sources if s not in chosen]
            if bad:
                where = {s: split_of.get(s, "not a builtin photograph") for s in bad}
                raise DatasetError(f"sources: {where} not in split {split!r}; choose among {chosen}")
            chosen = [s for s in chosen if s in set(sources)]
        self.sources = chosen
        self.generate(progress)
        super().__init__(list(self._samples(split_of)))

    def _folder(self, source: str) -> Path:
        return self.root / source

    def missing_sources(self) -> List[str]:
        """Sources of this dataset whose cache is absent or incomplete."""
        return [s for s in self.sources if read_labels(self._folder(s)) is None]

    def generate(self, progress: bool = True) -> List[str]:
        """Generate every missing source (see the module docstring); return the generated ones."""
        todo = self.missing_sources()
        if not todo:
            return []
        photos = {p.stem: p for p in photo_paths()}
        tasks, pending = [], {}
        for s in todo:
            folder = self._folder(s)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / LABELS).unlink(missing_ok=True)
            ref8 = make_reference(photos[s], self.size)
            old_ref = _read_png(folder / f"{s}_ref.png", ref8.shape)
            if old_ref is None or not np.array_equal(old_ref, ref8):
                # a new or changed reference invalidates the distorted images made from it
                for old in folder.glob(f"{s}_d*_l*.png"):
                    old.unlink()
                _write_png(ref8, folder / f"{s}_ref.png")
            tasks += [(str(folder), s, self.seed, d) for d in DISTORTIONS]
            pending[s] = []
        with _Progress(progress, len(tasks) * N_LEVELS, f"builtin-kadid: generating {len(todo)} source(s)") as advance:
            def on_done(task: Task, items: List[Dict[str, Any]]) -> None:
                s = task[1]
                pending[s] += items
                advance(len(items))
                if len(pending[s]) == len(DISTORTIONS) * N_LEVELS:
                    _write_labels(self._folder(s), s, self.seed, self.size, pending.pop(s))

            _run_tasks(tasks, min(self.workers, len(tasks)), on_done)
        return todo

    def _samples(self, split_of: Dict[str, str]) -> Iterator[Sample]:
        for s in self.sources:
            folder = self._folder(s)
            items = read_labels(folder)
            if items is None:
                raise DatasetError(f"builtin-kadid cache for {s!r} is incomplete in {folder}; delete it and reopen")
            for it in items:
                yield Sample(name=it["name"], path=folder / it["name"], mos=float(it["mos"]),
                             ref_path=folder / f"{s}_ref.png",
                             meta={"source": s, "dist_id": it["dist_id"], "dist_name": it["dist_name"],
                                   "level": it["level"], "split": split_of[s]})


class _Progress:
    """Context manager yielding ``advance(n)``: a rich progress bar, or a no-op when disabled."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.enabled, self.total, self.description = enabled, total, description
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn())
        self._bar.start()
        task = self._bar.add_task(self.description, total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


__all__ = ["BuiltinKadid", "FORMAT", "LABEL_FORMAT", "read_cells", "default_root", "fingerprint", "generate_type", "image_seed", "make_reference",
           "read_labels", "split_sources"]
