"""Regenerate the builtin photographs in ``src/iqaguard/data/photos/`` from their sources.

The sources are redistributable photographs shipped by Debian packages (desktop wallpapers,
the photographs of the educational suite GCompris and of the jigsaw game Palapeli) and by
scikit-image / scikit-learn (sample images). This script is the only place that knows
where they come from; the package itself never reads the sources at run time.

Processing (the same for every photograph):

1. open, apply the EXIF orientation, convert to 8-bit RGB;
2. if the short side exceeds 512 px, resize (Lanczos) so that it is exactly 512 px, keeping
   the aspect ratio; smaller images keep their native size (never upsampled);
3. save as baseline JPEG, quality 95, 4:2:0 chroma subsampling, with short lowercase names.

It also writes ``sources.json`` (read by :mod:`iqaguard.data.builtin`) and ``DATA_CARD.md``.

Usage::

    python scripts/make_photos.py --debs /tmp/debs/x           # Debian packages extracted there
    python scripts/make_photos.py --debs /tmp/debs/x --check   # only verify the sources exist

The Debian packages (``mate-backgrounds``, ``plasma-workspace-wallpapers``, ``lomiri-wallpapers-16.04``,
``lomiri-wallpapers-20.04``, ``gcompris-qt-data``, ``palapeli-data``) can be unpacked with
``apt-get download <pkg> && dpkg-deb -x <pkg>.deb <debs>/<pkg>``. GCompris keeps its images in
Qt resource bundles (``.rcc``); reading them needs PyQt5 (``pip install PyQt5``), used by this
script only. scikit-image and scikit-learn are found through their installed Python packages.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "src" / "iqaguard" / "data" / "photos"
SHORT_SIDE = 512
QUALITY = 95

MATE = "mate-backgrounds"
PLASMA = "plasma-workspace-wallpapers"
LOMIRI = "lomiri-wallpapers-{}"  # lomiri-wallpapers-16.04 / -20.04 (Ubuntu Touch wallpaper contests)
LOMIRI_DIR = "usr/share/backgrounds"
MATE_NATURE = "usr/share/backgrounds/mate/nature"
PLASMA_DIR = "usr/share/wallpapers"
GPL = "GPL-2+ (Debian copyright file)"
LGPL = "LGPL-3.0 (wallpaper metadata.json); GPL-2+ (Debian copyright file)"


@dataclass
class Source:
    """One photograph: output name, origin (package + path), author and licence."""

    name: str
    package: str
    path: str
    author: str
    licence: str
    original_size: str = ""
    processing: str = ""


# (output name, original file name, author as in debian/copyright)
_MATE_PHOTOS: List[Tuple[str, str, str]] = [
    ("aqua", "Aqua.jpg", "Charles Barbin"),
    ("blinds", "Blinds.jpg", "Lennart Poettering, Andrea Cimitan"),
    ("dune", "Dune.jpg", "Marco Cogoni, Hylke Bons"),
    ("freshflower", "FreshFlower.jpg", "Jens Ansorg"),
    ("garden", "Garden.jpg", "Charles Barbin"),
    ("meadow", "GreenMeadow.jpg", "Timothy Schellhase, Lapo Calamandrei"),
    ("ladybird", "LadyBird.jpg", "Charles Barbin"),
    ("raindrops", "RainDrops.jpg", "\"blackcombwhistler07\""),
    ("storm", "Storm.jpg", "Sergey Nazarov"),
    ("twowings", "TwoWings.jpg", "Charles Barbin, Hylke Bons"),
    ("wood", "Wood.jpg", "Jean-François Fortin Tam"),
    ("yellowflower", "YellowFlower.jpg", "Charles Barbin"),
]

# (output name, wallpaper folder); author and licence are read from its metadata.json
_PLASMA_PHOTOS: List[Tuple[str, str]] = [
    ("bythewater", "BytheWater"), ("coldripple", "ColdRipple"), ("cups", "ColorfulCups"),
    ("eveningglow", "EveningGlow"), ("fallenleaf", "FallenLeaf"), ("onestandsout", "OneStandsOut"),
    ("path", "Path"), ("summer1am", "summer_1am"), ("darkesthour", "DarkestHour"),
    ("grey", "Grey"), ("kite", "Kite"),
]

# (output name, release, original file name, author and licence as in debian/copyright)
_LOMIRI_PHOTOS: List[Tuple[str, str, str, str, str]] = [
    ("bridge", "16.04", "Bridge_by_Sander_Klootwijk.jpg", "Sander Klootwijk", "CC-BY-SA-4.0"),
    ("dragonfly", "16.04", "Dragonfly_by_Bolly.jpg", "\"Bolly\"", "CC-BY-SA-4.0"),
    ("fig", "16.04", "Picture_0B_by_freespace.jpg", "Trevor \"Freespace\"", "CC-BY-4.0"),
    ("brushes", "16.04", "Picture_1A_by_freespace.jpg", "Trevor \"Freespace\"", "CC-BY-4.0"),
    ("wine", "16.04", "Wine_by_Jakkub_Mede.jpg", "Jakub Mede", "CC-BY-4.0"),
    ("aitzgorri", "16.04", "aitzgorri_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    ("bird", "16.04", "free_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0"),
    ("dogs", "16.04", "friends_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    ("clock", "16.04", "greentock_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0"),
    ("stream", "16.04", "life_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    ("picos", "16.04", "picosdeeuropa_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    ("dandelion", "16.04", "seeding_by_Clements_Engelhardt.jpg", "Clemens Engelhardt", "CC0-1.0"),
    ("sunset", "16.04", "sunset_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    ("nuthatch", "20.04", "Kleiber_by_Lukas_Baubkus.jpg", "Lukas Baubkus", "CC-BY-SA-3.0"),
]

# (output name, package, file inside the package, author, licence as documented by the package)
_PY_PHOTOS: List[Tuple[str, str, str, str, str]] = [
    ("astronaut", "scikit-image", "data/astronaut.png", "NASA (photograph of Eileen Collins)",
     "public domain (skimage.data.astronaut docstring)"),
    ("coffee", "scikit-image", "data/coffee.png", "Rachel Michetti (Pikolo Espresso Bar)",
     "CC0 (skimage.data.coffee docstring)"),
    ("rocket", "scikit-image", "data/rocket.jpg", "SpaceX",
     "public domain (skimage.data.rocket docstring)"),
    ("china", "scikit-learn", "datasets/images/china.jpg", "danielbuechele (Flickr)",
     "CC-BY-2.0 (sklearn/datasets/images/README.txt)"),
    ("flower", "scikit-learn", "datasets/images/flower.jpg", "vultilion (Flickr)",
     "CC-BY-2.0 (sklearn/datasets/images/README.txt)"),
]


# GCompris (Debian ``gcompris-qt-data``): the photographs of five activities, read from the Qt
# resource bundles. (resource folder, output-name prefix, left out): every image of the folder
# with a short side >= 384 px is used except those left out (castleClinton is black and white,
# middleeast a small object on a plain background). The "details" and "babyshapes" folders are
# not used: they hold paintings and duplicates of the monuments below.
GCOMPRIS = "gcompris-qt-data"
GCOMPRIS_RCC = "usr/share/gcompris-qt/rcc"
GCOMPRIS_COPYRIGHT = "usr/share/doc/gcompris-qt-data/copyright"
_GCOMPRIS_DIRS: List[Tuple[str, str, Tuple[str, ...]]] = [
    ("src/activities/erase/resource", "", ()),
    ("src/activities/explore_farm_animals/resource/animals", "farm", ()),
    ("src/activities/explore_world_animals/resource/animals", "wild", ()),
    ("src/activities/explore_world_music/resource/music", "music", ("middleeast",)),
] + [(f"src/activities/explore_monuments/resource/{c}", "", ("castleClinton",))
     for c in ("egypt", "france", "germany", "india", "usa", "wonders")]
MIN_SIDE = 384

# Palapeli (Debian ``palapeli-data``): the puzzle photographs; (output name, file stem). Author
# and licence are read from each puzzle's ``.desktop`` file.
PALAPELI = "palapeli-data"
PALAPELI_DIR = "usr/share/palapeli/collection"
_PALAPELI_PHOTOS: List[Tuple[str, str]] = [
    ("maintenon", "castle-maintenon"), ("cincinnati", "cincinnati-bridge"), ("citrus", "citrus-fruits"),
    ("honeybee", "european-honey-bee"), ("pantherchameleon", "panther-chameleon-female"),
]


def _copyright_stanzas(path: Path) -> List[Tuple[List[str], str, str]]:
    """``(file patterns, copyright, licence)`` of every ``Files:`` stanza of a machine-readable
    Debian copyright file, in file order."""
    stanzas: List[Tuple[List[str], str, str]] = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        fields: Dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Files" in fields:
            lic = fields.get("License", "").split(" ")[0] if fields.get("License") else ""
            stanzas.append((fields["Files"].split(), fields.get("Copyright", ""), lic))
    return stanzas


def _debian_licence(stanzas: List[Tuple[List[str], str, str]], rel: str) -> Tuple[str, str]:
    """(author, licence) of ``rel`` per Debian's rules: the last stanza whose pattern matches
    wins. Files are matched by stem, since the package converted the listed JPEG/PNG originals
    to WebP without updating the copyright file."""
    stem = rel.rsplit(".", 1)[0]
    author, licence = "", ""
    for patterns, copyright_, lic in stanzas:
        if any(fnmatch.fnmatchcase(stem, pat.rsplit(".", 1)[0] if "." in pat.rsplit("/", 1)[-1] else pat)
               or fnmatch.fnmatchcase(rel, pat) for pat in patterns):
            default = patterns == ["*"]
            author = "GCompris contributors (not listed individually; `Files: *` stanza)" if default else copyright_
            licence = lic
    return author, licence


def _gcompris(debs: Path) -> List[Tuple[Source, Path]]:
    """The GCompris photographs, extracted from the package's Qt resource bundles into
    ``<debs>/gcompris-qt-data/extracted/``."""
    try:
        from PyQt5.QtCore import QDir, QFile, QIODevice, QResource
    except ImportError as e:  # only this script needs it
        raise SystemExit("reading GCompris' Qt resource bundles needs PyQt5: pip install PyQt5") from e
    pkg = debs / GCOMPRIS
    for rcc in sorted((pkg / GCOMPRIS_RCC).glob("*.rcc")):
        QResource.registerResource(str(rcc))
    stanzas = _copyright_stanzas(pkg / GCOMPRIS_COPYRIGHT)
    out = []
    for folder, prefix, skip in _GCOMPRIS_DIRS:
        for fname in sorted(QDir(f":/gcompris/{folder}").entryList(QDir.Files)):
            stem = fname.rsplit(".", 1)[0]
            if stem in skip or not fname.endswith((".webp", ".jpg", ".png")):
                continue
            f = QFile(f":/gcompris/{folder}/{fname}")
            f.open(QIODevice.ReadOnly)
            data = bytes(f.readAll())
            f.close()
            dst = pkg / "extracted" / folder / fname
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            with Image.open(dst) as im:
                if min(im.size) < MIN_SIDE:
                    continue
            author, licence = _debian_licence(stanzas, f"{folder}/{fname}")
            name = prefix + stem.replace("_", "").lower()
            out.append((Source(name, GCOMPRIS, f"{folder}/{fname} (in {GCOMPRIS_RCC}/*.rcc)",
                               author, f"{licence} (Debian copyright file)"), dst))
    return out


def _palapeli(debs: Path) -> List[Tuple[Source, Path]]:
    """The Palapeli puzzle photographs with author and licence from their ``.desktop`` files."""
    out = []
    for name, stem in _PALAPELI_PHOTOS:
        folder = debs / PALAPELI / PALAPELI_DIR
        meta = dict(line.split("=", 1) for line in (folder / f"{stem}.desktop").read_text(encoding="utf-8").splitlines()
                    if "=" in line)
        licence = f"{meta['X-KDE-PluginInfo-License']} ({stem}.desktop, {meta['X-KDE-PluginInfo-Website']})"
        out.append((Source(name, PALAPELI, f"/{PALAPELI_DIR}/{stem}.jpg", meta["X-KDE-PluginInfo-Author"], licence),
                    folder / f"{stem}.jpg"))
    return out


def _plasma_meta(folder: Path) -> Tuple[str, str]:
    """(author, licence) from a Plasma wallpaper's ``metadata.json``."""
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    plugin = meta.get("KPlugin", meta)
    authors = ", ".join(a.get("Name", "") for a in plugin.get("Authors", []))
    lic = plugin.get("License", "")
    licence = LGPL if lic == "LGPLv3" else f"{lic} (wallpaper metadata.json); GPL-2+ (Debian copyright file)"
    return authors, licence


def _largest(folder: Path) -> Path:
    """The real (non-symlink) image file with the most pixels in a wallpaper's images folder."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())

    def pixels(p: Path) -> int:
        with Image.open(p) as im:
            return im.size[0] * im.size[1]

    return max(files, key=pixels)


def collect(debs: Path) -> List[Tuple[Source, Path]]:
    """Every source photograph with the absolute path of its original file."""
    import skimage
    import sklearn

    out: List[Tuple[Source, Path]] = []
    for name, fname, author in _MATE_PHOTOS:
        rel = f"{MATE_NATURE}/{fname}"
        out.append((Source(name, MATE, "/" + rel, author, GPL), debs / MATE / rel))
    for name, folder in _PLASMA_PHOTOS:
        wall = debs / PLASMA / PLASMA_DIR / folder
        src = _largest(wall / "contents" / "images")
        author, licence = _plasma_meta(wall)
        rel = "/" + str(src.relative_to(debs / PLASMA))
        out.append((Source(name, PLASMA, rel, author, licence), src))
    for name, release, fname, author, licence in _LOMIRI_PHOTOS:
        pkg, rel = LOMIRI.format(release), f"{LOMIRI_DIR}/{fname}"
        out.append((Source(name, pkg, "/" + rel, author, f"{licence} (Debian copyright file)"), debs / pkg / rel))
    roots: Dict[str, Path] = {"scikit-image": Path(skimage.__file__).parent,
                              "scikit-learn": Path(sklearn.__file__).parent}
    versions = {"scikit-image": skimage.__version__, "scikit-learn": sklearn.__version__}
    for name, pkg, rel, author, licence in _PY_PHOTOS:
        pkg_label = f"{pkg} {versions[pkg]} (Python package)"
        mod = "skimage" if pkg == "scikit-image" else "sklearn"
        out.append((Source(name, pkg_label, f"{mod}/{rel}", author, licence), roots[pkg] / rel))
    out += _gcompris(debs) + _palapeli(debs)
    names = [s.name for s, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SystemExit(f"two sources map to the same output name: {dupes}")
    return out


def process(src: Path, dst: Path) -> Tuple[Tuple[int, int], str]:
    """Resize ``src`` to a 512-px short side (never upsampling) and save JPEG q95 at ``dst``."""
    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        w, h = im.size
        if min(w, h) > SHORT_SIDE:
            s = SHORT_SIDE / min(w, h)
            size = (SHORT_SIDE, round(h * s)) if w <= h else (round(w * s), SHORT_SIDE)
            im = im.resize(size, Image.Resampling.LANCZOS)
            how = f"Lanczos resize to {size[0]}x{size[1]}"
        else:
            how = f"kept at {w}x{h} (short side <= {SHORT_SIDE})"
        im.save(dst, format="JPEG", quality=QUALITY, subsampling="4:2:0", optimize=True)
    return (w, h), how + f", JPEG q{QUALITY}"


_CARD_HEAD = """# Builtin photographs — data card

Pristine photographs shipped inside the package so that every iqaguard feature (the `builtin`
and `builtin-kadid` datasets, the builtin models, the demo benchmark) works offline. They are
regenerated from their sources by `python scripts/make_photos.py` (see its docstring), which also
writes this card and `sources.json`.

Processing: EXIF orientation applied, converted to 8-bit RGB, resized with a Lanczos filter so
that the short side is {short} px when it was larger (smaller images are kept at their native
size, never upsampled), saved as baseline JPEG quality {q} with 4:2:0 chroma subsampling.
Only real photographs were selected (each was inspected; paintings, renders and illustrations
from the same packages were left out).

| file | source package | original path | author | licence | original size | processing |
|---|---|---|---|---|---|---|
"""

_CARD_TAIL = """
## Redistribution

Every file is redistributable under the licence given in its row. The wallpapers come from the
Debian packages `mate-backgrounds` (GPL-2+, authors as listed in its `debian/copyright`) and
`plasma-workspace-wallpapers` (each wallpaper's `metadata.json` declares LGPL-3.0 and its author;
Debian's `copyright` file states GPL-2+ for the package) and `lomiri-wallpapers-16.04` /
`lomiri-wallpapers-20.04` (photographs of the Ubuntu Touch wallpaper contests; each file's author
and Creative Commons licence — CC0-1.0, CC-BY-4.0, CC-BY-SA-3.0/4.0 — as listed in the package's
`debian/copyright`), `gcompris-qt-data` (photographs of the GCompris activities "erase" and
"explore ..."; licence and author of each file as given by the package's `debian/copyright`,
matched by file stem because the package ships the listed originals converted to WebP; files not
listed individually fall under its `Files: *` stanza, GPL-3+) and `palapeli-data` (each puzzle's
`.desktop` file names the author, the licence — public domain or GNU FDL — and the Wikimedia
Commons page of the original); all these licences allow copying, modifying
(here: resizing and re-encoding) and redistributing, provided the licence and the attribution
travel with the files — this card is that notice, and it ships next to the images. The
scikit-image images are public domain or CC0 (as stated in the `skimage.data` docstrings) and the
scikit-learn images are CC-BY-2.0 (as stated in `sklearn/datasets/images/README.txt`), which
allows redistribution with attribution to the photographer. These photographs keep their own
licences: the Apache-2.0 licence of the iqaguard code does not apply to them. Anyone who
redistributes the package redistributes them under those terms; to ship iqaguard without them,
delete this folder (the `builtin` datasets then raise a clear error) and point the code at
another image folder.
"""


def write_card(rows: List[Source], out_dir: Path) -> None:
    lines = [_CARD_HEAD.format(short=SHORT_SIDE, q=QUALITY)]
    for s in rows:
        lines.append(f"| {s.name}.jpg | {s.package} | `{s.path}` | {s.author} | {s.licence} "
                     f"| {s.original_size} | {s.processing} |\n")
    lines.append(_CARD_TAIL)
    (out_dir / "DATA_CARD.md").write_text("".join(lines), encoding="utf-8")


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--debs", type=Path, default=Path("/tmp/debs/x"),
                    help="folder holding the extracted Debian packages (one sub-folder per package)")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    ap.add_argument("--check", action="store_true", help="only check that every source exists")
    args = ap.parse_args(argv)
    sources = collect(args.debs)
    missing = [str(p) for _, p in sources if not p.is_file()]
    if missing:
        print("missing sources:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    if args.check:
        print(f"all {len(sources)} sources found")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for meta, path in sources:
        (w, h), how = process(path, args.out / f"{meta.name}.jpg")
        meta.original_size, meta.processing = f"{w}x{h}", how
        rows.append(meta)
        print(f"{meta.name:14s} {w}x{h} -> {how}")
    table = {s.name + ".jpg": {k: v for k, v in asdict(s).items() if k != "name"} for s in rows}
    (args.out / "sources.json").write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    write_card(rows, args.out)
    total = sum(p.stat().st_size for p in args.out.glob("*.jpg"))
    print(f"{len(rows)} photographs, {total / 2**20:.2f} MiB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
