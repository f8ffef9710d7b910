"""Render the report of a result store and screenshot it in headless Chromium.

By default the store is the one of a real builtin run, ``iqaguard demo`` (``runs/demo/demo.duckdb``):
the screenshot in ``docs/report_screenshot.png`` shows measured numbers. ``--synthetic`` instead
builds the synthetic store below (also used by the report tests to exercise every section).

The store mimics Guardians of Image Quality's grid on a small scale: metrics with different bounds and directions,
datasets with and without MOS (NIPS 2017 has none), three attacks x weak/medium/strong, purification
defenses x five presets, both modes. Scores follow a simple generative model (a defense removes part
of the attack's gain and blurs the metric's agreement with MOS; randomised defenses keep more of
their strength against adaptive attacks), so the tables and plots have the shapes of Guardians of Image Quality.

Usage::

    iqaguard demo && python scripts/report_screenshot.py [--store runs/demo/demo.duckdb]
    python scripts/report_screenshot.py --synthetic [--out FILE.png] [--html-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from iqaguard import __version__
from iqaguard.bench.store import COLUMNS, Store

#: name -> (worst, best, lower_better)
METRICS = {"builtin-nr": (0.0, 1.0, False), "linearity": (10.0, 90.0, False), "lpips-like": (0.8, 0.0, True)}
DATASETS = {"koniq10k": True, "kadid10k": True, "nips2017": False}
ATTACKS = {"ifgsm": 1.0, "pgd": 1.1, "square": 0.6}
PRESETS = {"weak": 0.5, "medium": 1.0, "strong": 1.6}
#: name -> (removal at preset 0..4 non-adaptive, adaptive retention, MOS damage, time s, randomised)
DEFENSES = {
    "jpeg": (0.55, 0.45, 0.25, 0.004, False), "gaussian-blur": (0.6, 0.3, 0.45, 0.001, False),
    "median-blur": (0.55, 0.25, 0.5, 0.0011, False), "resize": (0.6, 0.2, 0.3, 0.0019, False),
    "flip": (0.8, 0.02, 0.2, 0.0005, False), "random-rotate": (0.75, 0.7, 0.35, 0.0021, True),
    "diffpure": (0.9, 0.75, 0.6, 0.69, True), "disco": (0.85, 0.25, 0.3, 0.14, False),
}


def synthetic_rows(n_images: int = 24, defenses: Optional[Sequence[str]] = None,
                   metrics: Optional[Sequence[str]] = None, datasets: Optional[Sequence[str]] = None,
                   attacks: Optional[Sequence[str]] = None, modes: Sequence[str] = ("non-adaptive", "adaptive"),
                   seed: int = 0) -> List[Dict]:
    """Rows of a synthetic benchmark (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    names = list(defenses or DEFENSES)
    rows: List[Dict] = []
    for metric in metrics or METRICS:
        worst, best, lower = METRICS[metric]
        diam, sign = abs(best - worst), (-1.0 if lower else 1.0)
        for dataset in datasets or DATASETS:
            mos = rng.uniform(1.0, 5.0, n_images)
            quality = np.clip((mos - 1.0) / 4.0 + rng.normal(0, 0.2, n_images), 0.02, 0.98)
            clean = worst + sign * diam * quality
            for attack in attacks or ATTACKS:
                a_strength = ATTACKS[attack]
                for preset, p_strength in PRESETS.items():
                    gain = sign * diam * 0.45 * a_strength * p_strength * rng.uniform(0.0, 1.0, n_images)
                    attacked = clean + gain
                    base = dict(dataset=dataset, metric=metric, attack=attack, attack_preset=preset,
                                bound_worst=worst, bound_best=best, lower_better=lower, seed=seed,
                                spec_version="synthetic-1")
                    for i in range(n_images):
                        rows.append(dict(base, image=f"img{i:03d}", defense="none", defense_preset="-",
                                         mode="non-adaptive", mos=float(mos[i]) if DATASETS[dataset] else None,
                                         clean=float(clean[i]), attacked=float(attacked[i]),
                                         defended_clean=float(clean[i]), defended_attacked=float(attacked[i]),
                                         psnr=float(rng.normal(44, 1)), ssim=float(rng.normal(0.94, 0.01)),
                                         mse=float(abs(rng.normal(2.5e-3, 3e-4))), linf=p_strength * 4 / 255,
                                         t_attack=0.05, t_defense=0.0))
                    for name in names:
                        rows += _defended(rng, base, name, mos, clean, attacked, gain, diam, sign, modes,
                                          DATASETS[dataset], p_strength)
    return rows


def _defended(rng, base, name, mos, clean, attacked, gain, diam, sign, modes, has_mos, p_strength) -> List[Dict]:
    removal, retention, damage, t, randomised = DEFENSES[name]
    out = []
    n = len(clean)
    for k in range(5):
        strength = (k + 1) / 5.0
        shift = -sign * diam * 0.08 * damage * strength  # the defense lowers predicted quality a bit
        noise = diam * 0.3 * damage * strength
        dclean = clean + shift + rng.normal(0, noise, n)
        for mode in modes:
            keep = 1.0 - removal * (0.4 + 0.6 * strength) * (retention if mode == "adaptive" else 1.0)
            keep = min(1.0, keep * (1.0 + 0.15 * (p_strength - 1.0) * (mode == "adaptive")))
            dadv = dclean + gain * keep + rng.normal(0, noise * 0.5, n)
            psnr = 40.0 - 12.0 * strength * damage - (25.0 if name in ("flip", "random-rotate") else 0.0)
            for i in range(n):
                out.append(dict(base, image=f"img{i:03d}", defense=name, defense_preset=str(k), mode=mode,
                                mos=float(mos[i]) if has_mos else None, clean=float(clean[i]),
                                attacked=float(attacked[i]), defended_clean=float(dclean[i]),
                                defended_attacked=float(dadv[i]), psnr=float(psnr + rng.normal(0, 0.5)),
                                ssim=float(np.clip(0.97 - 0.3 * strength * damage + rng.normal(0, 0.01), 0, 1)),
                                mse=float(10 ** (-psnr / 10)), linf=float(0.1 + 0.4 * strength * damage),
                                t_attack=0.05 * (3 if mode == "adaptive" else 1),
                                t_defense=float(t * (1 + 0.2 * k))))
    return out


def insert_rows(path: Path, rows: Sequence[Dict]) -> Path:
    """Create a store at ``path`` and bulk-insert ``rows`` (missing columns -> NULL).

    The rows go in through one ``INSERT ... BY NAME SELECT * FROM read_json(...)`` of a temporary
    JSON-lines file (``Store.insert`` inserts row by row, slow for ~10^5 rows).
    """
    with Store(path) as store, tempfile.TemporaryDirectory() as tmp:
        if rows:
            lines = Path(tmp) / "rows.jsonl"
            lines.write_text("\n".join(json.dumps({c: r.get(c) for c in COLUMNS} | {"version": __version__})
                                       for r in rows))
            spec = ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items())
            store.con.execute(f"INSERT INTO {store.table} BY NAME SELECT * FROM read_json(?, "
                              f"format='newline_delimited', columns={{{spec}}})", [str(lines)])
    return Path(path)


def build_store(path: Path, **kwargs) -> Path:
    """Write :func:`synthetic_rows` (``kwargs`` passed on) into a new store at ``path``."""
    return insert_rows(path, synthetic_rows(**kwargs))


def screenshot(html: Path, png: Path, width: int = 1280, height: Optional[int] = None) -> Path:
    """Open ``html`` in headless Chromium and save a screenshot (full page height by default)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="iqaguard-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", f"--window-size={width},900",
                 "--hide-scrollbars"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(Path(html).resolve().as_uri())
        full = height or int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(width, full)
        png.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(png))
    finally:
        driver.quit()
    from PIL import Image
    # a 128-colour palette: the page is flat colours and text, and the file shrinks ~2.5x (1.2 -> 0.46 MB)
    Image.open(png).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return png


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/report_screenshot.png"))
    ap.add_argument("--html-dir", type=Path, default=None, help="keep the report here (default: a temp dir)")
    ap.add_argument("--height", type=int, default=None, help="screenshot height in px (default: full page)")
    ap.add_argument("--store", type=Path, default=Path("runs/demo/demo.duckdb"),
                    help="result store to render (default: the store of `iqaguard demo`)")
    ap.add_argument("--synthetic", action="store_true", help="render a synthetic store instead (made-up numbers)")
    args = ap.parse_args(argv)
    from iqaguard.bench.report import write_report

    work = Path(tempfile.mkdtemp(prefix="iqaguard-report-"))
    if args.synthetic:
        store = build_store(work / "synthetic.duckdb")
    elif args.store.is_file():
        store = args.store
    else:
        raise SystemExit(f"error: no result store at {args.store}: run `iqaguard demo` first or pass --store")
    html = write_report(store, args.html_dir or work / "report")
    print(f"report: {html}")
    print(f"screenshot: {screenshot(html, args.out, height=args.height)}")


if __name__ == "__main__":
    main()
