"""Zero-shot evaluation data: a classes file and labelled images (CSV or ImageFolder)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TacleanerError
from ..fileio import read_json
from .pairs import read_csv_rows

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".jpe"}


@dataclass
class Classes:
    """Class names and prompt templates (each with ``{}`` where the class name goes)."""

    classnames: list[str]
    templates: list[str]

    def index(self, label: str | int) -> int:
        """The class index of ``label``: a class name or an integer index."""
        if isinstance(label, int) or str(label).strip().lstrip("-").isdigit():
            i = int(label)
            if 0 <= i < len(self.classnames):
                return i
            raise TacleanerError(f"label {i} out of range: {len(self.classnames)} classes")
        try:
            return self.classnames.index(str(label).strip())
        except ValueError:
            close = [c for c in self.classnames if str(label).lower() in c.lower()][:5]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise TacleanerError(f"label {label!r} is not in the classes file{hint}") from None


def imagenet_classes() -> Classes:
    """ImageNet-1K class names and the 80 OpenAI prompt templates, as open_clip ships them."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    return Classes(list(IMAGENET_CLASSNAMES), [t("{}") for t in OPENAI_IMAGENET_TEMPLATES])


BUILTIN_CLASSES = {"imagenet": imagenet_classes}


def read_classes(path: str | Path) -> Classes:
    """A classes JSON (``classnames``, ``templates``) or a built-in name (``imagenet``)."""
    if str(path) in BUILTIN_CLASSES:
        return BUILTIN_CLASSES[str(path)]()
    obj = read_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("classnames"), list) or not obj["classnames"]:
        raise TacleanerError(f"{path}: expected a JSON object with a non-empty 'classnames' list")
    templates = obj.get("templates") or ["a photo of a {}."]
    bad = [t for t in templates if not isinstance(t, str) or "{}" not in t]
    if bad:
        raise TacleanerError(f"{path}: template {bad[0]!r} has no '{{}}' for the class name")
    seen: dict[str, int] = {}
    for i, name in enumerate(obj["classnames"]):
        if name in seen:
            raise TacleanerError(f"{path}: class names are not unique: {name!r} is class {seen[name]} and class {i}")
        seen[name] = i
    return Classes([str(c) for c in obj["classnames"]], list(templates))


@dataclass
class LabelledImages:
    """Evaluation images and their class indices. Evaluation never skips an image it was given
    (a missing or unreadable one stops it, naming the file: a skipped image would change CA's
    denominator); ``skipped`` counts the files of an ImageFolder tree that were not taken as
    images (by cause: ``not_an_image``), reported in the evaluation's JSON."""

    images: list[Path]
    labels: list[int]
    source: str | None = None  # the CSV the rows came from (errors name its row); None for a folder tree
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def read_zeroshot(path: str | Path, classes: Classes, image_col: str = "image", label_col: str = "label") -> LabelledImages:
    """Labelled images from a CSV (``image``, ``label`` as index or name) or an ImageFolder tree.

    ImageFolder sub-folders are matched to class names when every name matches; ImageNet's
    WordNet-id folders, all 1,000 or a subset (ImageNet-A, -R), to their ImageNet-1K index;
    otherwise by sorted order, which needs one folder per class; numbered folders (ImageNet-V2's
    ``0`` .. ``999``) sort as numbers.
    """
    path = Path(path)
    if path.is_dir():
        return _read_image_folder(path, classes)
    rows = read_csv_rows(path, (image_col, label_col))
    images, labels = [], []
    for line, row in enumerate(rows, start=2):
        try:
            labels.append(classes.index(row[label_col]))
        except TacleanerError as e:
            raise TacleanerError(f"{path}: row {line}: {e}") from None
        images.append((path.parent / row[image_col].strip()).resolve())
    return LabelledImages(images, labels, str(path))


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> dict[str, int]:
    """ImageNet-1K's WordNet ids -> class index (the shipped ``imagenet_wnids.txt``)."""
    text = (Path(__file__).parent / "imagenet_wnids.txt").read_text()
    ids = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return {w: i for i, w in enumerate(ids)}


def present_classes(data: LabelledImages, classes: Classes) -> tuple[LabelledImages, Classes]:
    """The data relabelled over only the classes it contains, in their order: ImageNet-A and -R
    are evaluated among their 200 classes, as the literature does."""
    present = sorted(set(data.labels))
    new = {old: i for i, old in enumerate(present)}
    return (LabelledImages(data.images, [new[y] for y in data.labels], data.source, data.skipped),
            Classes([classes.classnames[i] for i in present], classes.templates))


def _read_image_folder(root: Path, classes: Classes) -> LabelledImages:
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    if not folders:
        raise TacleanerError(f"{root}: no class sub-folders (expected an ImageFolder tree)")
    if all(d.name.isdigit() for d in folders):  # ImageNet-V2's 0..999: "10" is class 10, not the third
        folders.sort(key=lambda d: int(d.name))
    wnids = imagenet_wnids()
    if all(d.name in classes.classnames for d in folders):
        label_of = {d: classes.classnames.index(d.name) for d in folders}
    elif len(classes.classnames) == len(wnids) and all(d.name in wnids for d in folders):
        # WordNet-id folders, all 1,000 (val, -Sketch) or a subset (-A, -R: 200): each by its id
        label_of = {d: wnids[d.name] for d in folders}
    elif len(folders) == len(classes.classnames):
        label_of = {d: i for i, d in enumerate(folders)}
    else:
        raise TacleanerError(
            f"{root}: {len(folders)} sub-folders neither match the class names nor number "
            f"{len(classes.classnames)} (one per class)"
        )
    images, labels, other = [], [], 0
    for d in folders:
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(f.resolve())
                labels.append(label_of[d])
            elif f.is_file():
                other += 1
    if not images:
        raise TacleanerError(f"{root}: no images found")
    return LabelledImages(images, labels, skipped={"not_an_image": other} if other else {})
