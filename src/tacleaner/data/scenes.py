"""What each image of a synthetic world shows, and whether a text is true of it.

``tacleaner synth`` writes ``scenes.jsonl`` beside a world's CSVs: per pair image, its objects
(colour, shape, size, centre) and background (:func:`tacleaner.data.synth.scene_record`). There
the truth of a subtext is exact: a text is true of an image when every attribute it names
matches what the image shows (:func:`true_of`). TA-Cleaner's ``mask: truth`` uses it to mask
every column that is no negative and to drop every negative that is true of its own image, so
that the subtext terms can be tested free of false negatives.

The rules, over the world's own words (:mod:`.synth`):

- an object mention is a shape with the size and colour words before it ("small red circle";
  "red" alone names a red object of any shape); the mentions of a text name distinct objects;
- "dark / gray / light background" names the background;
- "left of", "right of", "above", "below", "next to" between two mentions hold as the world
  places them (the thresholds of ``synth._place``), "top" / "bottom" after a mention names its
  half of the picture;
- the world's verbs are drawn at random ("sits", "floats"): they say nothing about the image, nor
  do the framing words ("a photo of", "image may contain", "background" alone);
- any other word names something no image of the world shows: such a text is false of every
  image. A few plain synonyms of the world's words count as them ("big" is "large", "grey" is
  "gray").
"""
from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TacleanerError
from ..text.normalise import fold_plural
from .synth import BACKGROUNDS, COLOURS, SCENES_FILE, SHAPES, SIZES, VERBS

ALIASES = {"big": "large", "huge": "large", "little": "small", "tiny": "small", "grey": "gray",
           "beneath": "below", "under": "below", "over": "above", "beside": "next"}
RELATION_WORDS = ("left", "right", "above", "below", "next")
POSITION_WORDS = ("top", "bottom")
# Words of the world's captions that name nothing the image shows (frames, function words, the
# alt-text boilerplate of synth._web_caption).
NEUTRAL = frozenset(
    "a an the of on in to and is are there this i found photo picture image drawing illustration vector how draw "
    "close up isolated stock may contain background nearby it with at its".split())
# The words a negative can swap that change what the text says about the image; a swap of any
# other word (a verb, a frame word) leaves a text exactly as true as before.
ATTRIBUTE_WORDS = frozenset(COLOURS) | frozenset(SHAPES) | frozenset(SIZES) | frozenset(BACKGROUNDS) | \
    frozenset(RELATION_WORDS) | frozenset(POSITION_WORDS)
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    x: float
    y: float


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str
    relation: str | None = None  # the one the generator placed objects 0 and 1 in ("left", "above", "next")


@dataclass(frozen=True)
class Mention:
    """One object a text names: the attributes it gives (None: not named)."""

    size: str | None = None
    colour: str | None = None
    shape: str | None = None
    position: str | None = None  # "top" / "bottom"

    def fits(self, o: SceneObject) -> bool:
        return ((self.size is None or self.size == o.size) and (self.colour is None or self.colour == o.colour)
                and (self.shape is None or self.shape == o.shape)
                and (self.position is None or (o.y < 0.5) == (self.position == "top")))


@dataclass(frozen=True)
class Claim:
    """What a text says an image shows (:func:`parse`); ``unknown`` holds words that name
    nothing of the world (the text is then false of every image)."""

    mentions: tuple[Mention, ...]
    background: str | None
    relations: tuple[tuple[str, int, int], ...]  # (relation, mention a, mention b): "a <relation> b"
    unknown: tuple[str, ...] = ()


def _word(w: str) -> str:
    w = w.lower()
    w = ALIASES.get(w, w)
    if w in ATTRIBUTE_WORDS or w in NEUTRAL or w in VERBS:
        return w
    folded = fold_plural(w)
    return ALIASES.get(folded, folded)


def parse(text: str) -> Claim:
    """The :class:`Claim` of ``text`` (rules in the module docstring)."""
    words = [_word(w) for w in _WORD.findall(text)]
    mentions: list[dict] = []
    pending: dict = {}
    background = None
    relations: list[list] = []  # [relation, a, b or None]
    unknown = []

    def close() -> None:
        nonlocal pending
        if pending:
            mentions.append(pending)
            for r in relations:
                if r[2] is None and r[1] != len(mentions) - 1:
                    r[2] = len(mentions) - 1
            pending = {}

    for i, w in enumerate(words):
        if w in BACKGROUNDS and (i + 1 < len(words) and words[i + 1] == "background"):
            close()
            background = w
        elif w in SIZES:
            if "size" in pending:
                close()
            pending["size"] = w
        elif w in COLOURS:
            if "colour" in pending:
                close()
            pending["colour"] = w
        elif w in SHAPES:
            pending["shape"] = w
            close()
        elif w in RELATION_WORDS:
            close()
            if mentions:
                relations.append([w, len(mentions) - 1, None])
        elif w in POSITION_WORDS:
            close()
            if mentions:
                mentions[-1] = {**mentions[-1], "position": w}
        elif w in VERBS or w in NEUTRAL or w in BACKGROUNDS:
            close()
        else:
            close()
            unknown.append(w)
    close()
    return Claim(tuple(Mention(**m) for m in mentions), background,
                 tuple((r, a, b) for r, a, b in relations if b is not None), tuple(unknown))


def _relation_holds(relation: str, scene: Scene, i: int, j: int) -> bool:
    """Whether objects ``i`` and ``j`` of ``scene`` stand in ``relation``: as the generator
    placed the first two (its captions name that relation even when a crowded scene kept a
    draw that misses it), or by the thresholds :func:`tacleaner.data.synth._place` places them by."""
    if relation == "right":
        relation, i, j = "left", j, i
    if relation == "below":
        relation, i, j = "above", j, i
    if (i, j) == (0, 1) and relation == scene.relation:
        return True
    a, b = scene.objects[i], scene.objects[j]
    if relation == "left":
        return b.x - a.x > 0.25 and abs(a.y - b.y) < 0.25
    if relation == "above":
        return b.y - a.y > 0.25 and abs(a.x - b.x) < 0.25
    return 0.2 < math.dist((a.x, a.y), (b.x, b.y)) < 0.55  # "next"


def claim_true_of(claim: Claim, scene: Scene) -> bool:
    """Whether every attribute ``claim`` names matches ``scene``: its mentions fit distinct
    objects, in an assignment under which every named relation holds."""
    if claim.unknown or (claim.background is not None and claim.background != scene.background):
        return False
    n = len(claim.mentions)
    for chosen in itertools.permutations(range(len(scene.objects)), n):
        if all(m.fits(scene.objects[o]) for m, o in zip(claim.mentions, chosen)) and \
                all(_relation_holds(r, scene, chosen[a], chosen[b]) for r, a, b in claim.relations):
            return True
    return False


def true_of(text: str, scene: Scene) -> bool:
    """Whether ``text`` is true of the image ``scene`` describes (the module docstring's rules)."""
    return claim_true_of(parse(text), scene)


def negative_true_of(text: str, source: str, scene: Scene) -> bool:
    """Whether a negative (``source`` swapped for another word, giving ``text``) is still true of
    its own image: always when the swapped word names no attribute (a verb, a frame word), else
    when ``text`` is."""
    return _word(source) not in ATTRIBUTE_WORDS or true_of(text, scene)


def _scene(row: dict) -> Scene:
    return Scene(tuple(SceneObject(o["colour"], o["shape"], o["size"], float(o["x"]), float(o["y"]))
                       for o in row["objects"]), row["background"], row.get("relation"))


def read_scenes(folder: Path) -> dict[Path, Scene]:
    """The scenes of ``folder/scenes.jsonl`` by absolute image path. A missing file is a
    one-line error: only a world written by ``tacleaner synth`` knows what its images show."""
    path = Path(folder) / SCENES_FILE
    if not path.is_file():
        raise TacleanerError(f"{path} not found: exact truth needs what every image shows, which only a world "
                             "written by `tacleaner synth` records")
    base = path.parent.resolve()
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                out[Path(base / row["image"])] = _scene(row)
            except (ValueError, KeyError, TypeError) as e:
                raise TacleanerError(f"{path}:{n}: not a scene record ({e})") from None
    return out


def scenes_for(images, folder: Path) -> list[Scene]:
    """The scene of every image path in ``images`` (a table's column), from ``folder``'s
    ``scenes.jsonl``; an image it does not describe is a one-line error naming it."""
    known = read_scenes(folder)
    out = []
    for i, image in enumerate(images):
        scene = known.get(Path(image))
        if scene is None:
            raise TacleanerError(f"{image} (row {i + 1}): not in {Path(folder) / SCENES_FILE}; exact truth needs "
                                 "every image's attributes")
        out.append(scene)
    return out
