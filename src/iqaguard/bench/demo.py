"""The demo benchmark: builtin-nr on builtin-kadid test images, I-FGSM x JPEG, non-adaptive.

Protocol (seed 002 §3): clean scores once; each attack preset computed once per image and reused
by every defense preset (non-adaptive); one row per image x attack x preset x defense x preset
in a DuckDB file; a summary table per defense preset (time, SROCC clean/adv, D_score,
D_score^(D), R_score, PSNR, SSIM, MSE, L-inf).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .. import attacks, data, defenses, metrics, scores
from ..metrics.base import Bounds
from ..validation import resolve_device
from .store import Store

ATTACK_PRESETS = ("weak", "medium", "strong")
NO_DEFENSE = "none"


def select_images(ds: data.Dataset, n: int, seed: int) -> List[int]:
    """Seed 002 A.3.1 subset: KMeans (10 clusters) on SI, CF and MOS, ``n/10`` per cluster."""
    if len(ds) <= n:
        return list(range(len(ds)))
    idx = data.cluster_subset(ds, k_per_cluster=max(1, n // 10), n_clusters=10, seed=seed)
    if len(idx) < n:  # small clusters: top up deterministically
        rest = [i for i in np.random.default_rng(seed).permutation(len(ds)) if i not in set(idx)]
        idx = sorted(idx + [int(i) for i in rest[: n - len(idx)]])
    return idx


def run_demo(store_path: Path, n_images: int = 50, batch_size: int = 5, seed: int = 0,
             device: object = None, console: Optional[Console] = None) -> Store:
    """Run the demo grid into ``store_path`` (resumable: finished images are skipped)."""
    console = console or Console()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    metric = metrics.create("builtin-nr", device=dev)
    ds = data.create("builtin-kadid", split="test", seed=seed)
    idx = select_images(ds, n_images, seed)
    jpeg_presets = list(range(len(defenses.create("jpeg").presets)))
    store = Store(store_path)
    done = {k[1] for k in store.done_keys()}
    todo = [i for i in idx if ds[i].name not in done]
    console.print(f"[bold]iqaguard demo[/]: builtin-nr on {len(idx)} builtin-kadid test images "
                  f"({len(idx) - len(todo)} already in {store_path}), device {dev}")
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*cols, console=console, transient=False) as bar:
        task = bar.add_task("attack + defend", total=len(todo))
        for start in range(0, len(todo), batch_size):
            chunk = [ds[i] for i in todo[start:start + batch_size]]
            rows = _run_batch(metric, chunk, jpeg_presets, seed, dev)
            store.insert(rows)
            bar.advance(task, len(chunk))
    return store


@torch.no_grad()
def _scores(metric: metrics.Metric, x: torch.Tensor) -> torch.Tensor:
    return metric(x).cpu()


def _run_batch(metric: metrics.Metric, samples: List[data.Sample], jpeg_presets: List[int],
               seed: int, dev: torch.device) -> List[Dict]:
    x = torch.cat([s.image for s in samples]).to(dev)
    clean = _scores(metric, x)
    b = metric.bounds
    base = [{"dataset": "builtin-kadid", "image": s.name, "metric": metric.name, "mode": "non-adaptive",
             "mos": s.mos, "clean": float(clean[i]), "bound_worst": b.worst, "bound_best": b.best,
             "lower_better": metric.lower_better, "seed": seed, "spec_version": "demo-1"}
            for i, s in enumerate(samples)]
    defended_clean = {NO_DEFENSE: (clean, 0.0, x)}
    for p in jpeg_presets:
        t = time.perf_counter()
        px = defenses.create("jpeg", preset=p)(x)
        dt = (time.perf_counter() - t) / len(samples)
        defended_clean[f"jpeg/{p}"] = (_scores(metric, px), dt, px)
    rows = []
    for preset in ATTACK_PRESETS:
        atk = attacks.create("ifgsm", preset=preset)
        t = time.perf_counter()
        x_adv = atk(metric, x)
        t_attack = (time.perf_counter() - t) / len(samples)
        adv = _scores(metric, x_adv)
        for key, (dclean, _, _) in defended_clean.items():
            t = time.perf_counter()
            if key == NO_DEFENSE:
                pxa, dt = x_adv, 0.0
            else:
                pxa = defenses.create("jpeg", preset=int(key.split("/")[1]))(x_adv)
                dt = (time.perf_counter() - t) / len(samples)
            dadv = adv if key == NO_DEFENSE else _scores(metric, pxa)
            fid = {k: fn(pxa, x).cpu() for k, fn in
                   (("psnr", scores.psnr), ("ssim", scores.ssim), ("mse", scores.mse), ("linf", scores.linf))}
            defense, dpreset = (key, "-") if key == NO_DEFENSE else ("jpeg", key.split("/")[1])
            for i in range(len(samples)):
                rows.append(dict(base[i], attack="ifgsm", attack_preset=preset, defense=defense,
                                 defense_preset=dpreset, attacked=float(adv[i]),
                                 defended_clean=float(dclean[i]), defended_attacked=float(dadv[i]),
                                 t_attack=t_attack, t_defense=dt,
                                 **{k: float(v[i]) for k, v in fid.items()}))
    return rows


def summary(store: Store) -> List[Dict]:
    """One dict per (attack preset, defense, defense preset) with the seed 002 Table 2 columns."""
    rows = store.df("SELECT * FROM results ORDER BY attack, attack_preset, defense, defense_preset, image")
    groups: Dict[tuple, List[Dict]] = {}
    for r in rows:
        groups.setdefault((r["defense"], r["defense_preset"], r["attack"], r["attack_preset"]), []).append(r)
    out = []
    for (defense, dpreset, attack, apreset), g in groups.items():
        col = lambda k: np.array([r[k] for r in g], dtype=float)  # noqa: E731
        b = Bounds(g[0]["bound_worst"], g[0]["bound_best"])
        out.append({
            "defense": defense, "defense_preset": dpreset, "attack": attack, "attack_preset": apreset,
            "n": len(g), "time_ms": 1000 * float(col("t_defense").mean()),
            "srocc_clean": scores.srocc(col("defended_clean"), col("mos")),
            "srocc_adv": scores.srocc(col("defended_attacked"), col("mos")),
            "d_score": scores.d_score(col("clean"), col("defended_attacked"), b),
            "d_score_d": scores.d_score_d(col("defended_clean"), col("defended_attacked"), b),
            "r_score": scores.r_score(col("clean"), col("defended_attacked"), b),
            "psnr": float(col("psnr").mean()), "ssim": float(col("ssim").mean()),
            "mse": float(col("mse").mean()), "linf": float(col("linf").mean()),
            "gain": float((col("attacked") - col("clean")).mean()),
        })
    return out


def print_summary(summ: List[Dict], console: Console) -> None:
    """One table per defense preset; rows are attack presets."""
    order = {p: i for i, p in enumerate(ATTACK_PRESETS)}
    keys = sorted({(s["defense"], s["defense_preset"]) for s in summ},
                  key=lambda k: (k[0] != NO_DEFENSE, k[0], k[1]))
    for defense, dpreset in keys:
        title = "no defense" if defense == NO_DEFENSE else f"{defense} preset {dpreset}"
        t = Table(title=title, title_justify="left")
        for c in ("attack", "n", "time ms", "SROCC clean", "SROCC adv", "D_score", "D_score(D)", "R_score",
                  "PSNR", "SSIM", "MSE", "L∞·255"):
            t.add_column(c, justify="right")
        for s in sorted((s for s in summ if (s["defense"], s["defense_preset"]) == (defense, dpreset)),
                        key=lambda s: order.get(s["attack_preset"], 9)):
            t.add_row(f"{s['attack']}/{s['attack_preset']}", str(s["n"]), f"{s['time_ms']:.1f}",
                      f"{s['srocc_clean']:.3f}", f"{s['srocc_adv']:.3f}", f"{s['d_score']:.2f}",
                      f"{s['d_score_d']:.2f}", f"{s['r_score']:.3f}", f"{s['psnr']:.2f}", f"{s['ssim']:.4f}",
                      f"{s['mse']:.2e}", f"{255 * s['linf']:.2f}")
        console.print(t)
