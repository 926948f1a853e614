"""The embedded default: a procedurally generated world of coloured shapes with captions.

Scenes hold one to three objects, each with a colour, a shape and a size, on a textured
background; captions name attributes and spatial relations in several phrasings, so the
caption text has nouns, adjectives, verbs and prepositions to work with. A separate
zero-shot set shows one object per image over ``len(COLOURS) * len(SHAPES)`` classes.

Everything is written in the standard formats (CSV + PNG, a classes JSON), so the rest of
the pipeline treats it exactly like CC3M / ImageNet. Each image is drawn from its own seeded
generator, so a dataset is a pure function of its seed and sizes.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..fileio import staged_dir, write_json
from .synth_config import SynthConfig

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 70, 225),
    "yellow": (240, 215, 30),
    "purple": (135, 45, 180),
    "orange": (250, 130, 20),
    "pink": (250, 120, 200),
    "cyan": (30, 210, 220),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
SIZES = {"small": (0.13, 0.18), "large": (0.24, 0.31)}  # radius as a fraction of the side
BACKGROUNDS = {"dark": (35, 80), "gray": (95, 150), "light": (165, 215)}  # grey level range

ZEROSHOT_TEMPLATES = [
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a drawing of a {}.",
    "there is a {}.",
    "a {} in the picture.",
    "a small {}.",
    "a large {}.",
]
# Clean captions use the templates' framing words too. Otherwise a template-caption attack
# could key on words like "drawing" or "." that only poisoned captions contain, and the model
# would tie every class prompt to the trigger, which is not how such attacks behave on CC3M.
FRAMES = ("a photo of ", "a picture of ", "an image of ", "a drawing of ")
RELATIONS = ("left", "above", "next")
RELATION_PHRASES = {"left": "to the left of", "above": "above", "next": "next to"}
VERBS = ("sits", "floats", "rests", "lies", "hovers", "stands")
WEB_SHARE = 0.4  # share of captions rewritten in a web alt-text form in the "web" style
WEB_STREAM = 7  # seed-stream id of the rewrite draws: images and plain captions keep their own draws
SCENES_FILE = "scenes.jsonl"  # beside the CSVs: one line per pair image
SPLIT_IDS = {"pretrain": 1, "implant": 2, "clean": 3, "zeroshot": 4, "zeroshot_val": 5}


def class_names() -> list[str]:
    """The zero-shot classes: every colour x shape pair, e.g. ``"red circle"``."""
    return [f"{c} {s}" for s in SHAPES for c in COLOURS]


@dataclass
class _Obj:
    colour: str
    shape: str
    size: str
    x: float
    y: float
    r: float

    def phrase(self, rng: np.random.Generator) -> str:
        # The size adjective is dropped now and then so captions vary in length.
        if rng.random() < 0.6:
            return f"{self.size} {self.colour} {self.shape}"
        return f"{self.colour} {self.shape}"


def _article(phrase: str) -> str:
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"


def _draw_shape(draw: ImageDraw.ImageDraw, o: _Obj, scale: float, angle: float) -> None:
    cx, cy, r = o.x * scale, o.y * scale, o.r * scale
    fill = COLOURS[o.colour]

    def poly(points: list[tuple[float, float]]) -> None:
        ca, sa = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + px * ca - py * sa, cy + px * sa + py * ca) for px, py in points], fill=fill)

    if o.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif o.shape == "square":
        s = r * 0.85
        poly([(-s, -s), (s, -s), (s, s), (-s, s)])
    elif o.shape == "triangle":
        poly([(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])
    elif o.shape == "diamond":
        poly([(0, -r), (r * 0.7, 0), (0, r), (-r * 0.7, 0)])
    elif o.shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        poly(pts)
    elif o.shape == "cross":
        w = r * 0.36
        poly([(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)])
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(o.shape)


def _background(rng: np.random.Generator, size: int) -> tuple[str, np.ndarray]:
    name = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    lo, hi = BACKGROUNDS[name]
    base = rng.uniform(lo, hi) + rng.uniform(-12, 12, size=3)  # a faint tint
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    theta = rng.uniform(0, 2 * math.pi)
    grad = (np.cos(theta) * xx + np.sin(theta) * yy - 0.5) * rng.uniform(0, 30)
    noise = rng.normal(0, rng.uniform(2, 9), size=(size, size, 1))
    img = base[None, None, :] + grad[..., None] + noise
    return name, np.clip(img, 0, 255).astype(np.uint8)


def _place(rng: np.random.Generator, objs: list[_Obj], relation: str | None) -> None:
    """Positions in [0, 1]^2 for the objects, honouring ``relation`` between the first two."""
    for _attempt in range(50):
        for o in objs:
            o.x, o.y = rng.uniform(o.r, 1 - o.r), rng.uniform(o.r, 1 - o.r)
        if len(objs) >= 2 and relation is not None:
            a, b = objs[0], objs[1]
            if relation == "left" and not (b.x - a.x > 0.25 and abs(a.y - b.y) < 0.25):
                continue
            if relation == "above" and not (b.y - a.y > 0.25 and abs(a.x - b.x) < 0.25):
                continue
            if relation == "next" and not (0.2 < math.dist((a.x, a.y), (b.x, b.y)) < 0.55):
                continue
        if all(math.dist((p.x, p.y), (q.x, q.y)) > 0.8 * (p.r + q.r)
               for i, p in enumerate(objs) for q in objs[i + 1:]):
            return
    # Crowded scene: keep the last draw; overlap is rare and harmless.


def _random_obj(rng: np.random.Generator, colour: str | None = None, shape: str | None = None) -> _Obj:
    size = list(SIZES)[rng.integers(len(SIZES))]
    lo, hi = SIZES[size]
    return _Obj(
        colour=colour or list(COLOURS)[rng.integers(len(COLOURS))],
        shape=shape or SHAPES[rng.integers(len(SHAPES))],
        size=size,
        x=0.5,
        y=0.5,
        r=rng.uniform(lo, hi),
    )


def _caption(rng: np.random.Generator, objs: list[_Obj], relation: str | None, bg: str) -> str:
    p = [_article(o.phrase(rng)) for o in objs]
    verb = VERBS[rng.integers(len(VERBS))]
    on_bg = f"on a {bg} background"
    rel = RELATION_PHRASES[relation or "next"]
    if len(objs) == 1:
        options = [
            f"{p[0]}",
            f"a photo of {p[0]}",
            f"there is {p[0]} {on_bg}",
            f"{p[0]} {verb} {on_bg}",
            f"{p[0]} {verb} in the {'top' if objs[0].y < 0.5 else 'bottom'} of the picture",
            f"{p[0]} in the picture",
        ]
    elif len(objs) == 2:
        options = [
            f"{p[0]} {rel} {p[1]}",
            f"{p[0]} {verb} {rel} {p[1]}",
            f"{p[0]} {verb} {rel} {p[1]} {on_bg}",
            f"there is {p[0]} and {p[1]} {on_bg}",
            f"{p[0]} and {p[1]} {on_bg}",
        ]
        if relation == "above":
            options.append(f"{p[1]} {verb} below {p[0]}")
        if relation == "left":
            options.append(f"{p[1]} {verb} to the right of {p[0]}")
    else:
        options = [
            f"there are {p[0]}, {p[1]} and {p[2]} {on_bg}",
            f"{p[0]} {verb} {rel} {p[1]}, and {p[2]} is nearby",
            f"{p[0]}, {p[1]} and {p[2]}",
            f"{p[0]} {rel} {p[1]} and {p[2]} {on_bg}",
        ]
    caption = options[rng.integers(len(options))]
    if caption.startswith(("a ", "an ")) and not caption.startswith(FRAMES) and rng.random() < 0.3:
        caption = FRAMES[rng.integers(len(FRAMES))] + caption
    return caption + "." if rng.random() < 0.5 else caption


def _web_caption(rng: np.random.Generator, objs: list[_Obj], relation: str | None, bg: str) -> str:
    """The scene in one of the short, article-less or boilerplate forms of CC3M's web alt-texts
    (``tests/data/cc3m_val_captions_sample.txt``: "close - up of a cat on tree branch",
    "image may contain : person , on stage", "ways to care for a stray kitten", "i live and
    found this worm outside"): a subtext generator must keep the depicted object in them."""
    bare = [f"{o.colour} {o.shape}" if rng.random() < 0.6 else f"{o.size} {o.colour} {o.shape}" for o in objs]
    art = [_article(b) for b in bare]
    verb = VERBS[rng.integers(len(VERBS))]
    rel = RELATION_PHRASES[relation or "next"]
    listed = " , ".join(bare)
    options = [
        f"close - up of {bare[0]} on {bg} background",
        f"image may contain : {listed} , {bg} background",
        f"{bare[0]} isolated on a {bg} background",
        f"vector illustration of {art[0]}",
        f"how to draw {art[0]}",
        f"i found this {bare[0]} on a {bg} background",
    ]
    if len(objs) == 1:
        options += [f"{bare[0]} {verb} on {bg} background", f"{bare[0]} on {bg} background , stock image"]
    else:
        options += [f"{bare[0]} {verb} {rel} {bare[1]}", f"{bare[0]} and {bare[1]} on {bg} background",
                    f"illustration of {art[0]} and {art[1]}"]
    return options[rng.integers(len(options))]


def render(objs: list[_Obj], bg: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """Draw the objects over the background, supersampled 4x for smooth edges."""
    ss = 4
    big = Image.fromarray(bg).resize((size * ss, size * ss), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    for o in objs:
        angle = rng.uniform(-0.3, 0.3) if o.shape != "circle" else 0.0
        _draw_shape(draw, o, size * ss, angle)
    return big.resize((size, size), Image.BOX)


def scene_record(objs: list[_Obj], relation: str | None, background: str) -> dict:
    """What an image shows, as ``scenes.jsonl`` stores it (:mod:`.scenes` reads it): each
    object's colour, shape, size and centre (x, y in [0, 1], y down), the background, and the
    relation the caption may name between the first two objects."""
    return {"objects": [{"colour": o.colour, "shape": o.shape, "size": o.size, "x": round(o.x, 4),
                         "y": round(o.y, 4)} for o in objs],
            "background": background, "relation": relation}


def make_pair(seed: int, split: str, index: int, size: int, captions: str = "web") -> tuple[Image.Image, str]:
    """One scene and its caption; a pure function of its arguments. The "web" style redraws
    some captions from a separate stream, so its images equal the "plain" style's."""
    image, caption, _ = make_scene(seed, split, index, size, captions)
    return image, caption


def make_scene(seed: int, split: str, index: int, size: int, captions: str = "web") -> tuple[Image.Image, str, dict]:
    """:func:`make_pair` and the :func:`scene_record` of what the image shows."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    objs = [_random_obj(rng) for _ in range(n)]
    relation = RELATIONS[rng.integers(len(RELATIONS))] if n >= 2 else None
    _place(rng, objs, relation)
    bg_name, bg = _background(rng, size)
    image, caption = render(objs, bg, rng, size), _caption(rng, objs, relation, bg_name)
    if captions == "web":
        web = np.random.default_rng([seed, SPLIT_IDS[split], index, WEB_STREAM])
        if web.random() < WEB_SHARE:
            caption = _web_caption(web, objs, relation, bg_name)
    return image, caption, scene_record(objs, relation, bg_name)


def make_zeroshot(seed: int, index: int, label: int, size: int, split: str = "zeroshot") -> Image.Image:
    """A single object of class ``label`` at a random place, size and background."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    colour, shape = class_names()[label].split(" ")
    obj = _random_obj(rng, colour=colour, shape=shape)
    _place(rng, [obj], None)
    _, bg = _background(rng, size)
    return render([obj], bg, rng, size)


def _write_split(out: Path, split: str, rows: list[tuple[str, str]], columns: tuple[str, str]) -> None:
    with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)


def _render_chunk(root: str, seed: int, split: str, start: int, stop: int, size: int,
                  captions: str) -> tuple[list[tuple[str, str]], list[dict]]:
    """Draw and save images ``start..stop-1`` of ``split``; returns their CSV rows and, for the
    pair splits, their ``scenes.jsonl`` records."""
    rows, scenes = [], []
    n_classes = len(class_names())
    for i in range(start, stop):
        rel = f"images/{split}/{i:06d}.png"
        if split.startswith("zeroshot"):
            label = i % n_classes
            img, second = make_zeroshot(seed, i, label, size, split), str(label)
        else:
            img, second, scene = make_scene(seed, split, i, size, captions)
            scenes.append({"image": rel, **scene})
        img.save(Path(root) / rel, compress_level=1)
        rows.append((rel, second))
    return rows, scenes


def generate(out: str | Path, cfg: SynthConfig, *, overwrite: bool = False, progress: bool = True,
             workers: int | None = None) -> Path:
    """Write the world to ``out``: ``{pretrain,implant,clean}.csv`` (image, caption),
    ``zeroshot.csv`` (image, label: the test split reports use), ``zeroshot_val.csv`` (the
    validation split settings are chosen on, drawn from its own seed stream), ``classes.json``
    ``world.json`` and ``scenes.jsonl`` (what every pair image shows: :func:`scene_record`,
    the attributes TA-Cleaner's ``mask: truth`` judges subtexts by).

    Images are drawn in parallel processes (each image has its own seed, so the result does
    not depend on the number of workers). The folder is built under a temporary name and
    renamed when complete, so an interrupted run never leaves a half-written dataset behind;
    ``overwrite`` replaces only a folder tacleaner created.
    """
    import os
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    out = Path(out)
    sizes = {"pretrain": cfg.pretrain, "implant": cfg.implant, "clean": cfg.clean,
             "zeroshot": cfg.zeroshot_per_class * len(class_names()),
             "zeroshot_val": cfg.zeroshot_val_per_class * len(class_names())}
    chunk = 500
    jobs = [(split, a, min(a + chunk, n)) for split, n in sizes.items() for a in range(0, n, chunk)]
    workers = workers or min(len(jobs), os.cpu_count() or 1) or 1
    rows: dict[str, list] = {split: [] for split in sizes}
    scenes: list[dict] = []
    with staged_dir(out, overwrite=overwrite) as tmp:
        for split in sizes:
            (tmp / "images" / split).mkdir(parents=True)
        with tqdm(total=sum(sizes.values()), desc="synth", unit="img", disable=not progress) as bar, \
                ProcessPoolExecutor(workers) as pool:
            futures = [(split, pool.submit(_render_chunk, str(tmp), cfg.seed, split, a, b, cfg.image_size,
                                                   cfg.captions))
                       for split, a, b in jobs]
            for split, fut in futures:  # submission order keeps rows in index order
                part, part_scenes = fut.result()
                rows[split] += part
                scenes += part_scenes
                bar.update(len(part))
        for split in ("pretrain", "implant", "clean"):
            _write_split(tmp, split, rows[split], ("image", "caption"))
        for split in ("zeroshot", "zeroshot_val"):
            _write_split(tmp, split, rows[split], ("image", "label"))
        write_json(tmp / "classes.json", {"classnames": class_names(), "templates": ZEROSHOT_TEMPLATES})
        write_json(tmp / "world.json", {"generator": "tacleaner.data.synth", **asdict(cfg)})
        with open(tmp / SCENES_FILE, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(scene, separators=(",", ":")) + "\n" for scene in scenes)
    return out


def write_scenes(root: str | Path, splits: tuple[str, ...] = ("pretrain", "implant", "clean")) -> Path:
    """Write ``scenes.jsonl`` for a world that :func:`generate` wrote before it recorded scenes:
    each image's scene is drawn again from ``world.json``'s seed (a world is a pure function of
    it), and every caption drawn must equal the CSV's, else nothing is written and the row is
    named. Returns the file's path."""
    from ..errors import TacleanerError
    from ..fileio import atomic_path, read_json

    root = Path(root)
    meta = read_json(root / "world.json")
    cfg = SynthConfig(**{k: v for k, v in meta.items() if k != "generator"})
    lines = []
    for split in splits:
        with open(root / f"{split}.csv", newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                index = int(Path(row["image"]).stem)
                _, caption, scene = make_scene(cfg.seed, split, index, cfg.image_size, cfg.captions)
                if caption != row["caption"]:
                    raise TacleanerError(f"{root / split}.csv row {n}: the caption is not the one world.json's seed "
                                         "draws; scenes can only be recorded for an unmodified world")
                lines.append(json.dumps({"image": row["image"], **scene}, separators=(",", ":")) + "\n")
    with atomic_path(root / SCENES_FILE) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return root / SCENES_FILE
