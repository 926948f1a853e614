"""The user's labelled images in two halves: *validation* (what the defender's rule and the scans
read) and *test* (where the report's clean accuracy is measured), so that the accuracy a setting
is reported with is not the accuracy it was chosen on."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from ..data.zeroshot import Classes, LabelledImages
from ..errors import TacleanerError
from ..fileio import atomic_path

MIN_PER_HALF = 2  # classes each half must show: zero-shot accuracy and the scan need a choice


def halves(data: LabelledImages, classes: Classes, source: str) -> tuple[LabelledImages, LabelledImages]:
    """Each class's images, in file order, alternately to validation and test (the first to
    validation): both halves keep the classes' shares. Fails in one line, naming ``source``,
    when the images do not show at least two classes in each half."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(data.labels):
        by_class[y].append(i)
    val = sorted(i for rows in by_class.values() for i in rows[0::2])
    test = sorted(i for rows in by_class.values() for i in rows[1::2])
    shown = {name: len({data.labels[i] for i in rows}) for name, rows in (("validation", val), ("test", test))}
    if min(shown.values()) < MIN_PER_HALF:
        named = sorted({classes.classnames[y] for y in data.labels})
        raise TacleanerError(f"{source}: the labelled images show {len(named)} class(es) "
                             f"({', '.join(named[:3])}{', ...' if len(named) > 3 else ''}) with too few images to "
                             f"split; the audit needs at least {MIN_PER_HALF} classes with 2 images each")

    def subset(rows: list[int]) -> LabelledImages:
        return LabelledImages([data.images[i] for i in rows], [data.labels[i] for i in rows], None)

    return subset(val), subset(test)


def write_labelled(path: Path, data: LabelledImages, classes: Classes) -> None:
    """A zero-shot CSV (absolute image paths, class names) that ``--data`` of scan and evaluate
    reads back as ``data``: the report's commands run on exactly these images."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("image", "label"))
        for image, y in zip(data.images, data.labels):
            w.writerow((str(Path(image).resolve()), classes.classnames[y]))
