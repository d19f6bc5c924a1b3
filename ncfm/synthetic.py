"""A synthetic dataset shaped like a Kaggle image-classification competition's files.

    ncfm make_synthetic demo/data --n-train 400                      # NCFM, ~2 s at --scale 0.25
    ncfm make_synthetic demo/dogs --layout dog-breed --n-classes 10  # Dog Breed Identification

Four layouts, each imitating one Kaggle competition's files as its data page describes them:
    ncfm             train/<CLASS>/img_NNNNN.jpg, test_stg1/img_NNNNN.jpg, test_stg2/image_NNNNN.jpg
                     (optionally nested test_stg2/test_stg2/), sample_submission_stg1.csv and _stg2.csv
                     (image,ALB,...,YFT; stage 2 = the stage-1 names, then test_stg2/image_NNNNN.jpg)
    dog-breed        train/<id>.jpg and test/<id>.jpg (ids: 32 hex digits), labels.csv (id,breed; ids
                     without .jpg), sample_submission.csv (id,<breed>,...: one probability per breed)
    plant-seedlings  train/<Species>/<id>.png (names with spaces, capitals, hyphens), test/<id>.png,
                     sample_submission.csv (file,species: file names with .png, one label per row)
    aerial-cactus    train/<id>.jpg and test/<id>.jpg, always 32x32, train.csv (id,has_cactus; ids with
                     .jpg; ~75% ones), sample_submission.csv (id,has_cactus: P(cactus), 0.5 each)

What every layout imitates, because the pipeline's choices depend on it:
- boats (cameras, backgrounds): each boat has one image size (Kaggle's NCFM sizes times --scale;
  square for plant seedlings; 32x32 for aerial cactus) and its own deck (colour, plank seams,
  sea, rails, gear, lighting). Boats correlate with classes, but every class appears on several
  boats, so group-aware folds are possible;
- videos: consecutive near-identical frames of one boat (same deck, object moved a little), so
  plain stratified folds leak; on NCFM some videos are night-vision (grey or green monochrome);
- classes: a distinct drawing per class (fish shape, colours, stripes, fins; NCFM's NoF and the
  cactus-free aerial photos have none), in the competition's class balance (NCFM: ALB ~45%,
  LAG ~2%) with a floor so every class fills 5 folds;
- NCFM's stage 2 shows boats never seen in training; the other layouts have one test folder,
  drawn on the training boats.

Extra files that Kaggle does not ship, for tests and metrics: train_boats.csv (image,boat: the
true boat of each training image, image relative to the data folder) and test_truth.csv (the
sample submission's id column, then label; NCFM adds boat,stage). NCFM's layout also gets the
training fish's boxes as the community shared them, boxes/<class>_labels.json in the Sloth tool's
JSON (for `ncfm boxes`; see _sloth_files). --small-fish draws small fish on large frames, --decoys N
N fish-like distractors on every frame (crates, rags, fish-shaped bags in fish colours).
Every image is drawn from a random generator seeded by (seed, image), so the output is
byte-identical for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import colorsys
import itertools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ncfm import NcfmError
from ncfm.competition import NCFM_CLASSES
from ncfm.fileio import atomic_write_text

# Kaggle's ten image sizes (width, height); boat i of the training set gets TRAIN_SIZES[i % 12],
# so the common sizes are shared by several boats, as on NCFM.
KAGGLE_SIZES = [(1280, 720), (1280, 750), (1280, 974), (1276, 718), (1192, 670),
                (1280, 924), (1518, 854), (1732, 974), (1334, 750), (1244, 700)]
TRAIN_SIZES = [(1280, 720), (1280, 750), (1280, 974), (1280, 720), (1276, 718), (1192, 670),
               (1280, 924), (1280, 720), (1518, 854), (1244, 700), (1280, 750), (1280, 974)]
STAGE2_SIZES = [(1732, 974), (1334, 750), (1280, 720), (1518, 854), (1280, 974), (1192, 670)]
# NCFM's training images per class: the synthetic set keeps these proportions (with a floor).
NCFM_TRAIN_COUNTS = {"ALB": 1719, "BET": 200, "DOL": 117, "LAG": 67, "NoF": 465,
                     "OTHER": 299, "SHARK": 176, "YFT": 734}
JPEG_QUALITY = 90
NIGHT_VIDEO_SHARE = 0.12
DECK_COLOURS = [(150, 150, 150), (110, 125, 140), (215, 215, 210), (190, 175, 140), (60, 90, 70),
                (70, 120, 125), (140, 80, 60), (90, 90, 100), (180, 190, 200), (120, 105, 80)]

# Random streams, one per purpose, so adding a draw to one never shifts another.
_PLAN, _BOAT, _VIDEO, _FRAME, _BOXES, _DECOY = 0, 1, 2, 3, 4, 5


# --------------------------------------------------------------------------- the competitions
# Dog Breed Identification's 120 breeds (its sample submission's columns); the training set is
# nearly balanced (66 to 126 images a breed), so the synthetic one is balanced.
DOG_BREEDS = (
    "affenpinscher afghan_hound african_hunting_dog airedale american_staffordshire_terrier appenzeller "
    "australian_terrier basenji basset beagle bedlington_terrier bernese_mountain_dog black-and-tan_coonhound "
    "blenheim_spaniel bloodhound bluetick border_collie border_terrier borzoi boston_bull bouvier_des_flandres "
    "boxer brabancon_griffon briard brittany_spaniel bull_mastiff cairn cardigan chesapeake_bay_retriever "
    "chihuahua chow clumber cocker_spaniel collie curly-coated_retriever dandie_dinmont dhole dingo doberman "
    "english_foxhound english_setter english_springer entlebucher eskimo_dog flat-coated_retriever "
    "french_bulldog german_shepherd german_short-haired_pointer giant_schnauzer golden_retriever gordon_setter "
    "great_dane great_pyrenees greater_swiss_mountain_dog groenendael ibizan_hound irish_setter irish_terrier "
    "irish_water_spaniel irish_wolfhound italian_greyhound japanese_spaniel keeshond kelpie kerry_blue_terrier "
    "komondor kuvasz labrador_retriever lakeland_terrier leonberg lhasa malamute malinois maltese_dog "
    "mexican_hairless miniature_pinscher miniature_poodle miniature_schnauzer newfoundland norfolk_terrier "
    "norwegian_elkhound norwich_terrier old_english_sheepdog otterhound papillon pekinese pembroke pomeranian "
    "pug redbone rhodesian_ridgeback rottweiler saint_bernard saluki samoyed schipperke scotch_terrier "
    "scottish_deerhound sealyham_terrier shetland_sheepdog shih-tzu siberian_husky silky_terrier "
    "soft-coated_wheaten_terrier staffordshire_bullterrier standard_poodle standard_schnauzer sussex_spaniel "
    "tibetan_mastiff tibetan_terrier toy_poodle toy_terrier vizsla walker_hound weimaraner "
    "welsh_springer_spaniel west_highland_white_terrier whippet wire-haired_fox_terrier yorkshire_terrier"
).split()
# Plant Seedlings Classification's 12 species (its training folders) and their image counts.
PLANT_TRAIN_COUNTS = {"Black-grass": 263, "Charlock": 390, "Cleavers": 287, "Common Chickweed": 611,
                      "Common wheat": 221, "Fat Hen": 475, "Loose Silky-bent": 654, "Maize": 221,
                      "Scentless Mayweed": 516, "Shepherds Purse": 231, "Small-flowered Cranesbill": 496,
                      "Sugar beet": 385}
# Aerial Cactus Identification's has_cactus labels: about 75% ones.
CACTUS_TRAIN_COUNTS = {"0": 4364, "1": 13136}


@dataclass(frozen=True)
class Layout:
    """What one competition's files look like, as far as this module imitates them."""

    counts: dict            # every class -> Kaggle's training images of it, in Kaggle's (sorted) order
    default_classes: int    # classes in a synthetic set unless n_classes says otherwise
    ext: str                # image files: "jpg" or "png"
    id_digits: int          # hex digits of an image id; 0: NCFM's numbered img_NNNNN.jpg
    class_folders: bool     # train/<class>/... (else a flat train/ and a labels CSV)
    size: str               # "boat": the boat's camera size x scale; "square": its height squared; "32x32"


LAYOUTS = {
    "ncfm": Layout({c: NCFM_TRAIN_COUNTS[c] for c in NCFM_CLASSES}, 8, "jpg", 0, True, "boat"),
    "dog-breed": Layout(dict.fromkeys(DOG_BREEDS, 1), 6, "jpg", 32, False, "boat"),
    "plant-seedlings": Layout(PLANT_TRAIN_COUNTS, 5, "png", 9, True, "square"),
    "aerial-cactus": Layout(CACTUS_TRAIN_COUNTS, 2, "jpg", 32, False, "32x32"),
}


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise NcfmError(f"received layout={name!r}; known layouts: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def _class_weights(name: str, n_classes: int | None) -> dict[str, int]:
    """The synthetic set's classes (a spread of the competition's, in its order) and their weights."""
    counts = _layout(name).counts
    n = _layout(name).default_classes if n_classes is None else n_classes
    if name in ("ncfm", "aerial-cactus") and n != len(counts):
        raise NcfmError(f"received n_classes={n_classes}; the {name} layout has exactly {len(counts)} classes "
                        f"(leave n_classes out)")
    if not 2 <= n <= len(counts):
        raise NcfmError(f"received n_classes={n_classes}; the {name} layout has 2 to {len(counts)} classes")
    # evenly spread over the sorted names (not the first n: they would all start with "a")
    chosen = [list(counts)[i * len(counts) // n] for i in range(n)]
    return {c: counts[c] for c in chosen}


# --------------------------------------------------------------------------- the plan
def _class_counts(n_train: int, weights: dict[str, int] = NCFM_TRAIN_COUNTS) -> dict[str, int]:
    """The weights' proportions, every class at least `floor` images, the largest takes up the rest."""
    k = len(weights)
    if n_train < 5 * k:
        raise NcfmError(f"received n_train={n_train}; need at least {5 * k} (5 per class)")
    # 16 at 400 on NCFM: enough for 5 stratified group folds
    floor = max(5, min(n_train // 25, 40, n_train // (2 * k)))
    total = sum(weights.values())
    counts = {c: max(floor, round(n_train * w / total)) for c, w in weights.items()}
    largest = max(weights, key=weights.get)
    rest = n_train - sum(counts.values())
    if counts[largest] + rest > 0:  # NCFM: ALB
        counts[largest] += rest
    else:  # many equal classes all rounded up: one image fewer each, in turn, until it adds up
        for c in itertools.cycle(list(counts)):
            if rest == 0:
                break
            if counts[c] > 5:
                counts[c] -= 1
                rest += 1
    return counts


def _class_boats(rng, boats: int, weights: dict[str, int]) -> dict[str, tuple[list[int], np.ndarray]]:
    """For each class: the boats it appears on and how often (boats correlate with classes)."""
    total = sum(weights.values())
    out = {}
    for c, w in weights.items():
        # the common classes (a tenth of the images or more) are everywhere; the rare ones on about
        # half the boats (>= 5)
        k = boats if w / total >= 0.1 else min(boats, max(5, boats // 2))
        chosen = sorted(rng.choice(boats, size=k, replace=False).tolist())
        out[c] = (chosen, rng.dirichlet(np.full(k, 1.5)))
    return out


def _videos(rng, label: str, n: int, boat_list: list[int], weights, max_len: int) -> list[tuple]:
    """Split n images of a class into videos (boat, n_frames); each listed boat gets one first."""
    # short enough videos that every listed boat gets at least one
    max_len = max(1, min(max_len, n // len(boat_list)))
    videos, left, i = [], n, 0
    while left > 0:
        length = int(min(left, rng.integers(1, max_len + 1)))
        boat = boat_list[i] if i < len(boat_list) else int(rng.choice(boat_list, p=weights))
        videos.append((boat, label, length))
        left -= length
        i += 1
    return videos


def _plan(layout: str, weights: dict[str, int], n_train, n_test1, n_test2, boats, seed, nested_stg2):
    """Every image to draw: (relative path, boat, label, video id, frame index, stage).

    Stage 0 is training, 1 the (first) test folder, 2 NCFM's stage 2 (n_test2 > 0 only).
    """
    rng = np.random.default_rng([seed, _PLAN])
    class_boats = _class_boats(rng, boats, weights)
    shares = np.array(list(weights.values()), float)
    shares /= shares.sum()

    def draw(counts, boat_of_class, max_len):
        vids = []
        for c in weights:
            if counts[c]:
                blist, w = boat_of_class(c)
                vids += _videos(rng, c, counts[c], blist, w, max_len)
        return vids

    train_videos = draw(_class_counts(n_train, weights), lambda c: class_boats[c], 6)
    test1_counts = dict(zip(weights, rng.multinomial(n_test1, shares).tolist()))
    test1_videos = draw(test1_counts, lambda c: class_boats[c], 3)
    test2_videos = []
    if n_test2:
        n_new = max(3, boats // 3)
        new_boats = list(range(boats, boats + n_new))
        test2_counts = dict(zip(weights, rng.multinomial(n_test2, shares).tolist()))
        test2_videos = draw(test2_counts, lambda c: (new_boats, np.full(n_new, 1 / n_new)), 4)

    def frames(videos, first_video_id):
        return [(first_video_id + v, boat, label, f)
                for v, (boat, label, length) in enumerate(videos) for f in range(length)]

    train = frames(train_videos, 0)
    test1 = frames(test1_videos, len(train_videos))
    test2 = frames(test2_videos, len(train_videos) + len(test1_videos))
    if layout == "ncfm":
        return _ncfm_names(rng, train, test1, test2, nested_stg2)
    return _hex_names(rng, LAYOUTS[layout], train, test1)


def _ncfm_names(rng, train, test1, test2, nested_stg2) -> list[tuple]:
    """NCFM's file names: train/<CLASS>/img_NNNNN.jpg, test_stg1/img_NNNNN.jpg, test_stg2/image_NNNNN.jpg."""
    # Kaggle's numbers say nothing about class or video: shuffle, then number.
    numbers = rng.choice(np.arange(1, 100000), size=len(train) + len(test1), replace=False)
    numbers[: len(train)] = rng.permutation(numbers[: len(train)])
    jobs = []
    for (video, boat, label, f), num in zip(train, numbers[: len(train)]):
        jobs.append((f"train/{label}/img_{num:05d}.jpg", boat, label, video, f, 0))
    for (video, boat, label, f), num in zip(test1, numbers[len(train):]):
        jobs.append((f"test_stg1/img_{num:05d}.jpg", boat, label, video, f, 1))
    stg2 = "test_stg2/test_stg2" if nested_stg2 else "test_stg2"
    for (video, boat, label, f), num in zip(test2, rng.permutation(len(test2)) + 1):
        jobs.append((f"{stg2}/image_{num:05d}.jpg", boat, label, video, f, 2))
    return jobs


def _hex_names(rng, layout: Layout, train, test) -> list[tuple]:
    """train/[<class>/]<id>.<ext> and test/<id>.<ext>, ids random hex (32 digits like an md5, or 9
    as in Plant Seedlings)."""
    ids: list[str] = []
    seen = set()
    while len(ids) < len(train) + len(test):
        new = rng.bytes(16).hex()[: layout.id_digits]
        if new not in seen:
            seen.add(new)
            ids.append(new)
    jobs = []
    for (video, boat, label, f), i in zip(train, ids):
        folder = f"train/{label}" if layout.class_folders else "train"
        jobs.append((f"{folder}/{i}.{layout.ext}", boat, label, video, f, 0))
    for (video, boat, label, f), i in zip(test, ids[len(train):]):
        jobs.append((f"test/{i}.{layout.ext}", boat, label, video, f, 1))
    return jobs


def _image_size(layout: Layout, boat: int, boats: int, scale: float) -> tuple[int, int]:
    if layout.size == "32x32":
        return 32, 32
    w, h = _boat_size(boat, boats, scale)
    return (h, h) if layout.size == "square" else (w, h)


def _boat_size(boat: int, boats: int, scale: float) -> tuple[int, int]:
    w, h = TRAIN_SIZES[boat % len(TRAIN_SIZES)] if boat < boats else STAGE2_SIZES[(boat - boats) % len(STAGE2_SIZES)]
    return max(16, round(w * scale)), max(9, round(h * scale))


# --------------------------------------------------------------------------- drawing
_BACKGROUNDS: dict = {}  # per process: (seed, boat, w, h) -> uint8 array


def _background(seed: int, boat: int, w: int, h: int) -> np.ndarray:
    """The boat's deck: base colour, plank seams, lighting, mottling, sea, rails and gear."""
    key = (seed, boat, w, h)
    if key in _BACKGROUNDS:
        return _BACKGROUNDS[key]
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, _BOAT, boat])
    base = np.array(DECK_COLOURS[rng.integers(len(DECK_COLOURS))], np.float32) + rng.integers(-20, 21, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / w
    theta, period = rng.uniform(0, math.pi), rng.uniform(0.03, 0.09)
    phase = (xx * math.cos(theta) + yy * math.sin(theta)) / period
    seams = (phase - np.floor(phase)) < rng.uniform(0.06, 0.15)
    phi, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.6)
    light = 1 + strength * ((xx - 0.5) * math.cos(phi) + (yy - 0.5 * h / w) * math.sin(phi))
    small = rng.uniform(0.8, 1.2, (max(2, h // 24), max(2, w // 24))).astype(np.float32)
    mottle = np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BICUBIC))
    img = base * (light * mottle * (1 - rng.uniform(0.25, 0.5) * seams))[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    # sea or sky along one edge
    sea = tuple(int(v) for v in rng.choice([[20, 50, 90], [30, 70, 80], [10, 30, 50], [120, 150, 170]]))
    edge, depth = rng.integers(4), rng.uniform(0.1, 0.35)
    a, b = rng.uniform(0, 1, 2) * depth
    corners = {0: [(0, 0), (w, 0), (w, b * h), (0, a * h)],
               1: [(0, h), (w, h), (w, h - b * h), (0, h - a * h)],
               2: [(0, 0), (0, h), (a * w, h), (b * w, 0)],
               3: [(w, 0), (w, h), (w - a * w, h), (w - b * w, 0)]}[int(edge)]
    draw.polygon(corners, fill=sea)
    # rails, hatches, buckets, ropes: fixed per boat
    for _ in range(rng.integers(1, 3)):
        y0, y1 = rng.uniform(0, h, 2)
        draw.line([(0, y0), (w, y1)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=max(1, int(rng.uniform(0.006, 0.02) * w)))
    for _ in range(rng.integers(3, 8)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rw, rh = rng.uniform(0.04, 0.18) * w, rng.uniform(0.04, 0.18) * w
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.4 else draw.rectangle
        shape([cx - rw / 2, cy - rh / 2, cx + rw / 2, cy + rh / 2], fill=colour)
    out = np.asarray(pil)
    _BACKGROUNDS[key] = out
    return out


def _colour(rng, rgb, spread=15) -> tuple:
    return tuple(int(np.clip(v + rng.integers(-spread, spread + 1), 0, 255)) for v in rgb) + (255,)


# body height / length; back, belly and fin colours; what makes each class recognisable
FISH = {
    "ALB": dict(aspect=0.26, back=(25, 35, 80), belly=(200, 205, 215), fin=(40, 50, 90)),
    "BET": dict(aspect=0.36, back=(15, 20, 50), belly=(175, 180, 195), fin=(235, 205, 40)),
    "DOL": dict(aspect=0.30, back=(40, 140, 70), belly=(225, 205, 60), fin=(30, 60, 150)),
    "LAG": dict(aspect=0.60, back=(205, 95, 90), belly=(235, 155, 145), fin=(225, 25, 30)),
    "OTHER": dict(aspect=0.35, back=(100, 90, 70), belly=(190, 180, 160), fin=(80, 70, 60)),
    "SHARK": dict(aspect=0.18, back=(105, 110, 118), belly=(205, 205, 205), fin=(95, 100, 108)),
    "YFT": dict(aspect=0.30, back=(20, 40, 105), belly=(210, 210, 195), fin=(245, 200, 30)),
}
FISH_LENGTH = {"ALB": 0.30, "BET": 0.26, "DOL": 0.28, "LAG": 0.20, "OTHER": 0.20, "SHARK": 0.34, "YFT": 0.28}


@dataclass(frozen=True)
class Look:
    """How one class is drawn: a fish shape from FISH ("" = nothing), its length as a fraction of
    the image width, colours replacing the shape's own (None = keep them), dark bands across it."""

    shape: str
    length: float = 0.0
    colours: dict | None = None
    stripes: int = 0


# fish whose look is fixed ("OTHER" is a new species every time, on purpose)
_SHAPES = ("ALB", "BET", "DOL", "LAG", "SHARK", "YFT")


def _palette(hue: float) -> dict:
    """Back, belly and fin colours around one hue, for classes beyond the shapes x stripes."""
    def rgb(h, s, v):
        return tuple(round(255 * x) for x in colorsys.hsv_to_rgb(h % 1, s, v))
    return {"back": rgb(hue, 0.8, 0.45), "belly": rgb(hue + 0.5, 0.35, 0.9), "fin": rgb(hue + 0.25, 0.9, 0.95)}


def _looks(layout: str, classes: list[str]) -> dict[str, Look]:
    """One look per class. NCFM: its own fish (NoF: none). Aerial cactus: a long green shape or
    nothing. Otherwise class k gets shape k % 6, k // 6 % 4 stripes, and from k = 24 on a new palette."""
    if layout == "ncfm":
        return {c: Look(c, FISH_LENGTH[c]) if c in FISH else Look("") for c in classes}
    if layout == "aerial-cactus":  # at 32x32 the cactus needs to be long to be seen
        return {"0": Look(""), "1": Look("DOL", 0.6)}
    looks = {}
    for k, c in enumerate(classes):
        shape, stripes, palette = _SHAPES[k % 6], k // 6 % 4, k // 24
        colours = _palette((palette - 1) / 4) if palette else None
        looks[c] = Look(shape, FISH_LENGTH[shape], colours, stripes)
    return looks


def _draw_fish(label: str, length: float, rng, colours: dict | None = None, stripes: int = 0):
    """One fish of a shape as an RGBA image, head on the left; same rng state → same fish.

    colours replaces the shape's back/belly/fin colours; stripes draws dark bands across the body.
    """
    from PIL import Image, ImageDraw

    spec = dict(FISH[label])
    if label == "OTHER":  # "other" is many species: random colours and build
        spec.update(aspect=rng.uniform(0.2, 0.5), back=tuple(rng.integers(30, 160, 3)),
                    belly=tuple(rng.integers(120, 230, 3)), fin=tuple(rng.integers(30, 200, 3)))
    spec.update(colours or {})
    L = max(8.0, length)
    bh = L * spec["aspect"] * rng.uniform(0.9, 1.1)
    W, H = int(L) + 2, int(bh * 2.6) + 4
    img = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    back, belly, fin = (_colour(rng, spec[k]) for k in ("back", "belly", "fin"))
    cy, x0, x1 = H / 2, 0.03 * L, 0.80 * L
    top, bot = cy - bh / 2, cy + bh / 2

    # tail: forked, or heterocercal for the shark
    if label == "SHARK":
        d.polygon([(x1 - 0.05 * L, cy), (L, cy - bh * 1.3), (0.93 * L, cy), (0.95 * L, cy + bh * 0.6)], fill=back)
    else:
        d.polygon([(x1 - 0.05 * L, cy), (L, cy - bh * 0.8), (0.9 * L, cy), (L, cy + bh * 0.8)],
                  fill=fin if label in ("LAG", "YFT") else back)
    # dorsal / anal fins under the body
    if label == "YFT":  # long yellow sickles
        d.polygon([(0.42 * L, top + 2), (0.62 * L, top - bh * 0.9), (0.55 * L, top + 2)], fill=fin)
        d.polygon([(0.45 * L, bot - 2), (0.64 * L, bot + bh * 0.9), (0.57 * L, bot - 2)], fill=fin)
    elif label == "SHARK":
        d.polygon([(0.35 * L, top + 2), (0.45 * L, top - bh * 1.0), (0.52 * L, top + 2)], fill=fin)
    elif label == "DOL":  # one long fin along the whole back
        d.polygon([(0.12 * L, top + 2), (0.15 * L, top - bh * 0.35), (0.72 * L, top - bh * 0.15), (0.76 * L, top + 2)],
                  fill=fin)
    elif label == "LAG":
        d.polygon([(0.25 * L, top + 4), (0.35 * L, top - bh * 0.6), (0.7 * L, top + bh * 0.1)], fill=fin)
    else:
        d.polygon([(0.35 * L, top + 2), (0.45 * L, top - bh * 0.4), (0.55 * L, top + 2)], fill=fin)
    # body: belly, with the back's colour over the upper half
    if label == "SHARK":  # pointed snout
        d.polygon([(0, cy + bh * 0.1), (x0 + 0.1 * L, top + 1), (x0 + 0.1 * L, bot - 1)], fill=back)
    d.ellipse([x0, top, x1, bot], fill=belly)
    d.chord([x0, top, x1, bot], 180, 360, fill=back)
    if label == "DOL":  # blunt forehead, blue spots
        d.polygon([(x0, top + bh * 0.15), (x0 + 0.12 * L, top), (x0 + 0.12 * L, cy), (x0, cy)], fill=back)
        for _ in range(6):
            px, py = rng.uniform(0.2, 0.7) * L, cy + rng.uniform(-0.3, 0.3) * bh
            r = 0.012 * L + 0.5
            d.ellipse([px - r, py - r, px + r, py + r], fill=(40, 80, 200, 255))
    if label == "LAG":  # white spots
        for _ in range(14):
            px, py = rng.uniform(0.1, 0.75) * L, cy + rng.uniform(-0.4, 0.4) * bh
            r = 0.015 * L + 0.5
            d.ellipse([px - r, py - r, px + r, py + r], fill=(250, 250, 245, 255))
    if label == "YFT":  # yellow lateral stripe
        d.line([(0.12 * L, cy), (0.74 * L, cy)], fill=fin, width=max(1, int(bh * 0.12)))
    if label == "ALB":  # very long pectoral fin
        d.polygon([(0.28 * L, cy), (0.74 * L, cy + bh * 0.08), (0.28 * L, cy + bh * 0.2)], fill=fin)
    if label == "SHARK":  # gill slits
        for k in range(4):
            gx = x0 + (0.16 + 0.025 * k) * L
            d.line([(gx, cy - bh * 0.2), (gx, cy + bh * 0.15)], fill=(60, 60, 65, 255), width=1)
    if label in ("BET", "YFT", "ALB"):  # finlets toward the tail
        for k in range(5):
            fx = (0.62 + 0.035 * k) * L
            s = 0.02 * L + 1
            for y, sign in ((top + bh * 0.12 * (k + 1) / 5, -1), (bot - bh * 0.12 * (k + 1) / 5, 1)):
                d.polygon([(fx, y), (fx + s, y), (fx + s / 2, y + sign * s)],
                          fill=fin if label != "ALB" else back)
    for k in range(stripes):  # vertical bands, evenly over the body
        sx = x0 + (0.25 + 0.5 * (k + 1) / (stripes + 1)) * (x1 - x0)
        d.line([(sx, top + bh * 0.1), (sx, bot - bh * 0.1)], fill=(20, 20, 25, 255), width=max(1, int(0.04 * L)))
    # eye: bigeye has the big one
    r = (0.065 if label == "BET" else 0.03) * L + 0.5
    ex, ey = x0 + 0.09 * L, cy - bh * 0.08
    d.ellipse([ex - r, ey - r, ex + r, ey + r], fill=(235, 235, 230, 255))
    d.ellipse([ex - r / 2, ey - r / 2, ex + r / 2, ey + r / 2], fill=(10, 10, 10, 255))
    return img


_NOISE_MARGIN = 64
_NOISE: dict = {}  # per process: (w, h) -> int16 noise field


def _noise_field(w: int, h: int) -> np.ndarray:
    if (w, h) not in _NOISE:
        rng = np.random.default_rng([w, h])
        _NOISE[(w, h)] = np.round(rng.normal(0, 5, (h + _NOISE_MARGIN, w + _NOISE_MARGIN))).astype(np.int16)
    return _NOISE[(w, h)]


def _gain_lut(gain: float) -> list[int]:
    return np.clip(np.round(np.arange(256) * gain), 0, 255).astype(int).tolist()


@dataclass(frozen=True)
class Style:
    """What every image of one dataset shares; sent to each worker process with its jobs."""

    seed: int
    sizes: dict         # boat -> (width, height)
    looks: dict         # class -> Look
    night_share: float  # share of night-vision (monochrome) videos
    ext: str            # "jpg" or "png"
    fish_scale: float = 1.0  # fish length relative to the frame, times the class's own (small_fish: 0.4)
    decoys: int = 0  # fish-like distractors per frame (see _draw_decoy)


def _draw_decoy(length: float, rng):
    """A fish-like distractor as an RGBA image: fish-sized and in one fish's colours, but no fish
    (no eye, no fins, no markings): an elongated body with a tail (a fish-shaped bag, a rag), a
    coloured crate or a tarpaulin. A detector that has learned "fish-coloured, fish-sized" fires
    on it; one that has learned what a fish looks like does not."""
    from PIL import Image, ImageDraw

    spec = FISH[_SHAPES[int(rng.integers(len(_SHAPES)))]]
    L = max(8.0, length * rng.uniform(0.7, 1.2))
    bh = L * rng.uniform(0.2, 0.45)
    W, H = int(L) + 2, int(bh) + 4
    img = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    main, other = _colour(rng, spec["back"]), _colour(rng, spec["belly"])
    kind = rng.integers(3)
    cy = H / 2
    if kind == 0:  # body and tail, all one colour band over another
        d.polygon([(0.75 * L, cy), (L, cy - bh / 2), (L, cy + bh / 2)], fill=main)
        d.ellipse([0, cy - bh / 2, 0.82 * L, cy + bh / 2], fill=other)
        d.chord([0, cy - bh / 2, 0.82 * L, cy + bh / 2], 180, 360, fill=main)
    elif kind == 1:  # a crate
        d.rectangle([0, cy - bh / 2, L, cy + bh / 2], fill=main)
        d.rectangle([0.1 * L, cy - bh / 4, 0.9 * L, cy + bh / 4], outline=other, width=max(1, int(0.04 * L)))
    else:  # a tarpaulin: a rounded blob
        d.rounded_rectangle([0, cy - bh / 2, L, cy + bh / 2], radius=bh / 2, fill=other)
        d.line([(0.1 * L, cy), (0.9 * L, cy)], fill=main, width=max(1, int(bh * 0.3)))
    return img


def _render(job, style: Style, with_fish: bool = True) -> tuple[bytes, list[tuple]]:
    """Draw one frame: the boat's deck (camera nudged), the video's fish moved a little, gear, noise.

    Returns the encoded image and the tight box (x, y, width, height) of each fish drawn, in the
    image's pixels, clipped to it (a fish wholly out of the frame has none). with_fish=False draws the
    same frame without its fish (the same random draws), to check the boxes against.
    """
    from io import BytesIO

    from PIL import Image, ImageDraw

    path, boat, label, video, frame, _stage = job
    w, h = style.sizes[boat]
    look = style.looks[label]
    seed = style.seed
    vr = np.random.default_rng([seed, _VIDEO, video])  # what every frame of the video shares
    fr = np.random.default_rng([seed, _FRAME, video, frame])  # what changes frame to frame
    night = vr.random() < style.night_share
    green = vr.random() < 0.5
    dx, dy = (vr.integers(-1, 2, 2) * np.ceil(0.005 * np.array([w, h]))).astype(int)
    gain = vr.uniform(0.85, 1.15) * fr.uniform(0.97, 1.03)
    n_fish = 0 if not look.shape else (2 if vr.random() < 0.2 else 1)
    fish = []
    for _ in range(n_fish):
        length = look.length * w * style.fish_scale * vr.uniform(0.75, 1.3)
        fish_rng = np.random.default_rng(vr.integers(2**32))
        pos = vr.uniform([0.2 * w, 0.2 * h], [0.8 * w, 0.8 * h])
        velocity = vr.normal(0, 0.012, 2) * w  # per frame: the fish is dragged across the deck
        angle, spin = vr.uniform(0, 360), vr.normal(0, 4)
        fish.append((length, fish_rng, pos + frame * velocity + fr.normal(0, 0.004 * w, 2), angle + frame * spin))
    gear = vr.random() < 0.5  # a crew member's boot or glove, in any class (not a class cue)
    gear_xy = vr.uniform([0, 0], [w, h]) + frame * fr.normal(0, 0.01 * w, 2)
    gear_colour = _colour(vr, (230, 140, 30) if vr.random() < 0.5 else (40, 40, 45), 20)

    bg = _background(seed, boat, w, h)
    pil = Image.fromarray(np.roll(bg, (int(dy), int(dx)), axis=(0, 1)) if (dx or dy) else bg)
    if style.decoys:  # their own streams: the rest of the frame is drawn as without them
        dv, df = np.random.default_rng([seed, _DECOY, video]), np.random.default_rng([seed, _DECOY, video, frame])
        typical = 0.28 * w * style.fish_scale
        for _ in range(style.decoys):
            sprite = _draw_decoy(typical, np.random.default_rng(dv.integers(2**32)))
            sprite = sprite.rotate(dv.uniform(0, 360), expand=True, resample=Image.BILINEAR)
            cx, cy = dv.uniform([0.05 * w, 0.05 * h], [0.95 * w, 0.95 * h]) + df.normal(0, 0.004 * w, 2)
            pil.paste(sprite, (int(cx - sprite.width / 2), int(cy - sprite.height / 2)), sprite)
    if gear:
        r = 0.04 * w
        ImageDraw.Draw(pil).ellipse([gear_xy[0] - r, gear_xy[1] - r * 0.6, gear_xy[0] + r, gear_xy[1] + r * 0.6],
                                    fill=gear_colour)
    boxes = []
    for length, fish_rng, (cx, cy), angle in fish:
        sprite = _draw_fish(look.shape, length, fish_rng, look.colours, look.stripes)
        sprite = sprite.rotate(angle, expand=True, resample=Image.BILINEAR)
        x, y = int(cx - sprite.width / 2), int(cy - sprite.height / 2)
        if with_fish:
            pil.paste(sprite, (x, y), sprite)
        # the box of every pixel the fish touches (alpha > 0) inside the frame
        cx0, cy0 = max(0, -x), max(0, -y)
        cx1, cy1 = min(sprite.width, w - x), min(sprite.height, h - y)
        seen = sprite.getchannel("A").crop((cx0, cy0, cx1, cy1)).getbbox() if cx1 > cx0 and cy1 > cy0 else None
        if seen:
            left, top, right, bottom = seen
            boxes.append((float(x + cx0 + left), float(y + cy0 + top), float(right - left), float(bottom - top)))

    if night:  # monochrome night vision: same scene, its luminance in grey or green
        lum = pil.convert("L")
        gain *= 0.8
        tint = (0.55, 1.0, 0.55) if green else (1.0, 1.0, 1.0)
        pil = Image.merge("RGB", [lum.point(_gain_lut(gain * t)) for t in tint])
    else:
        pil = pil.point(_gain_lut(gain) * 3)
    # sensor noise: a window of a fixed noise field at a per-frame offset (drawing millions
    # of normals per frame would cost more than everything else together)
    field = _noise_field(w, h)
    oy, ox = fr.integers(0, _NOISE_MARGIN, 2)
    noise = field[oy: oy + h, ox: ox + w]
    x = np.asarray(pil).astype(np.int16)
    x += (noise * 2 if night else noise)[..., None]
    out = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    buf = BytesIO()
    if style.ext == "png":
        out.save(buf, "PNG")
    else:
        out.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), boxes


def _render_chunk(jobs, out_dir: str, style: Style) -> list[list[tuple]]:
    """Draw and write the jobs' images; the fish boxes of each, in order."""
    boxes = []
    for job in jobs:
        data, fish = _render(job, style)
        with open(os.path.join(out_dir, job[0]), "wb") as f:
            f.write(data)
        boxes.append(fish)
    return boxes


# --------------------------------------------------------------------------- the CSV files
def _tables(layout: str, jobs: list[tuple], classes: list[str]) -> dict[str, str]:
    """Every CSV file of the dataset: file name -> text. Kaggle's own, then train_boats.csv and
    test_truth.csv (labels and boats that Kaggle keeps to itself)."""
    train = sorted((j for j in jobs if j[5] == 0), key=lambda j: j[0])
    boats = "image,boat\n" + "".join(f"{j[0]},{j[1]}\n" for j in train)
    if layout == "ncfm":
        return {**_ncfm_tables(jobs, classes), "train_boats.csv": boats}

    test = sorted((j for j in jobs if j[5] == 1), key=lambda j: j[0])

    def name(job):  # the file name, as aerial cactus and plant seedlings write ids
        return job[0].split("/")[-1]

    def stem(job):  # without the extension, as dog breed writes ids
        return name(job).rsplit(".", 1)[0]

    tables = {}
    if layout == "dog-breed":
        id_column, test_id = "id", stem
        tables["labels.csv"] = "id,breed\n" + "".join(f"{stem(j)},{j[2]}\n" for j in train)
        uniform = ",".join([str(1 / len(classes))] * len(classes))
        sample = "id," + ",".join(sorted(classes)) + "\n" + "".join(f"{stem(j)},{uniform}\n" for j in test)
    elif layout == "plant-seedlings":  # labels come from the training folders
        id_column, test_id = "file", name
        sample = "file,species\n" + "".join(f"{name(j)},{classes[0]}\n" for j in test)
    else:  # aerial-cactus
        id_column, test_id = "id", name
        tables["train.csv"] = "id,has_cactus\n" + "".join(f"{name(j)},{j[2]}\n" for j in train)
        sample = "id,has_cactus\n" + "".join(f"{name(j)},0.5\n" for j in test)
    tables["sample_submission.csv"] = sample
    tables["train_boats.csv"] = boats
    tables["test_truth.csv"] = f"{id_column},label\n" + "".join(f"{test_id(j)},{j[2]}\n" for j in test)
    return tables


def _ncfm_tables(jobs: list[tuple], classes: list[str]) -> dict[str, str]:
    """Both sample submissions (stage 2 lists the stage-1 names first) and test_truth.csv."""
    test1 = sorted(j[0].split("/")[-1] for j in jobs if j[5] == 1)
    test2 = sorted("test_stg2/" + j[0].split("/")[-1] for j in jobs if j[5] == 2)
    uniform = ",".join(["0.125"] * len(classes))
    header = "image," + ",".join(classes) + "\n"
    truth = sorted((j[0].split("/")[-1] if j[5] == 1 else "test_stg2/" + j[0].split("/")[-1], j[2], j[1], j[5])
                   for j in jobs if j[5] > 0)
    return {
        "sample_submission_stg1.csv": header + "".join(f"{i},{uniform}\n" for i in test1),
        "sample_submission_stg2.csv": header + "".join(f"{i},{uniform}\n" for i in test1 + test2),
        "test_truth.csv": "image,label,boat,stage\n" + "".join(f"{i},{c},{b},{s}\n" for i, c, b, s in truth),
    }


# --------------------------------------------------------------------------- the fish boxes
BOXES_FOLDER = "boxes"  # OUT/boxes/<class>_labels.json, where `ncfm boxes` looks by default
STICK_OUT_SHARE = 0.05  # of all boxes: drawn past the frame's edge, taken from the fish it cuts
NO_BOX_SHARE = 1 / 50   # fish images the annotators skipped
PREFIX_SHARE = 0.03     # file names given with a folder prefix
SMALL_FISH_FRAME = 2    # small_fish: frames this many times wider and higher,
SMALL_FISH_LENGTH = 0.8  # and fish this long in pixels relative to the default frames' fish


def _sloth_files(jobs: list[tuple], fish_boxes: dict, sizes: dict, fish_classes: list[str], seed: int) -> tuple:
    """The true fish boxes (training image -> [(x, y, width, height), ...]) as the community's Sloth
    files, <class lower>_labels.json -> JSON text, with their flaws: about STICK_OUT_SHARE of the
    boxes drawn past the frame's edge (only fish the frame cuts, so clipping gives the true box
    back), a few fish images without an entry, a few names with a folder prefix. Its own random
    stream, so the images never change. Returns (files, counts of the flaws)."""
    import json

    rng = np.random.default_rng([seed, _BOXES])
    n_boxes = sum(len(fish_boxes[j[0]]) for j in jobs if j[0] in fish_boxes)
    n_cut = sum(x <= 0 or y <= 0 or x + bw >= sizes[j[1]][0] or y + bh >= sizes[j[1]][1]
                for j in jobs if j[0] in fish_boxes for x, y, bw, bh in fish_boxes[j[0]])
    stick_out = min(1.0, STICK_OUT_SHARE * n_boxes / max(1, n_cut))  # of the cut fish's boxes
    entries: dict[str, list] = {c: [] for c in fish_classes}
    flaws = {"stick_out": 0, "without_box": 0, "prefixed": 0}
    for path, boat, label, *_ in sorted(j for j in jobs if j[5] == 0 and j[2] in entries):
        w, h = sizes[boat]
        skip, prefix = rng.random(2)  # the same draws for every image, so one choice never shifts another
        if skip < NO_BOX_SHARE:
            flaws["without_box"] += 1
            continue
        name = path.split("/")[-1]
        if prefix < PREFIX_SHARE:
            name = f"../data/{path}"
            flaws["prefixed"] += 1
        annotations = []
        for x, y, bw, bh in fish_boxes[path]:
            stick, side = rng.random(2)
            past = round(float(rng.uniform(0.5, 0.03 * w)), 1)
            cut = [e for e, at_edge in (("left", x <= 0), ("top", y <= 0), ("right", x + bw >= w),
                                        ("bottom", y + bh >= h)) if at_edge]
            if cut and stick < stick_out:
                edge = cut[int(side * len(cut))]
                flaws["stick_out"] += 1
                if edge == "left":
                    x, bw = x - past, bw + past
                elif edge == "top":
                    y, bh = y - past, bh + past
                elif edge == "right":
                    bw += past
                else:
                    bh += past
            annotations.append({"class": "rect", "x": x, "y": y, "width": bw, "height": bh})
        entries[label].append({"filename": name, "class": "image", "annotations": annotations})
    files = {f"{c.lower()}_labels.json": json.dumps(e, indent=2) + "\n" for c, e in entries.items()}
    return files, flaws


# --------------------------------------------------------------------------- API
def _prepare(layout: str, n_train: int, n_test1: int, n_test2: int | None, boats: int, scale: float, seed: int,
             nested_stg2: bool, n_classes: int | None, small_fish: bool, decoys: int = 0) -> tuple:
    """Check the settings; every image to draw and what they share: (classes, jobs, style, frame scale)."""
    spec = _layout(layout)
    weights = _class_weights(layout, n_classes)
    classes = list(weights)
    if layout == "ncfm":
        n_test2 = 80 if n_test2 is None else n_test2
    elif n_test2 is not None or nested_stg2:
        raise NcfmError(f"received n_test2={n_test2}, nested_stg2={nested_stg2}; only the ncfm layout has a "
                        f"second test stage (the {layout} layout has one test/ folder of n_test1 images)")
    if boats < 5:
        raise NcfmError(f"received boats={boats}; need at least 5 so every class spans several boats")
    if not 0.01 <= scale <= 2:
        raise NcfmError(f"received scale={scale}; use a fraction of Kaggle's size in [0.01, 2] (1.0 = full size)")
    if layout == "ncfm" and (n_test1 < 1 or n_test2 < 1):
        raise NcfmError(f"received n_test1={n_test1}, n_test2={n_test2}; each stage needs at least one image")
    if n_test1 < 1:
        raise NcfmError(f"received n_test1={n_test1}; the {layout} layout's test/ folder needs at least one image")
    if decoys < 0:
        raise NcfmError(f"received decoys={decoys}; the fish-like distractors per frame are 0 or more")
    if small_fish and spec.size == "32x32":
        raise NcfmError(f"received small_fish=True; the {layout} layout's images are always 32x32 (leave it out)")
    jobs = _plan(layout, weights, n_train, n_test1, n_test2 or 0, boats, seed, nested_stg2)
    # small fish: frames twice as wide and high (4x the area), fish a little shorter in pixels
    frame_scale = scale * SMALL_FISH_FRAME if small_fish else scale
    style = Style(seed=seed, sizes={b: _image_size(spec, b, boats, frame_scale) for b in sorted({j[1] for j in jobs})},
                  looks=_looks(layout, classes), night_share=NIGHT_VIDEO_SHARE if layout == "ncfm" else 0.0,
                  ext=spec.ext, fish_scale=SMALL_FISH_LENGTH / SMALL_FISH_FRAME if small_fish else 1.0,
                  decoys=decoys)
    return classes, jobs, style, frame_scale


def make_synthetic(out_dir, n_train: int = 400, n_test1: int = 60, n_test2: int | None = None, boats: int = 12,
                   scale: float = 0.25, seed: int = 0, nested_stg2: bool = False, *, layout: str = "ncfm",
                   n_classes: int | None = None, small_fish: bool = False, decoys: int = 0, workers: int = 0,
                   progress: bool = False) -> dict:
    """Write the dataset into out_dir (created; existing files of the same names are overwritten).

    layout: one of LAYOUTS ("ncfm", "dog-breed", "plant-seedlings", "aerial-cactus").
    n_test1: NCFM's stage-1 test images, or the other layouts' test images.
    n_test2, nested_stg2: NCFM's stage 2 only (n_test2 defaults to 80 there).
    n_classes: how many of the competition's classes (default: 8 NCFM, 6 dog breeds, 5 plant
        species, 2 aerial cactus; dog breeds go up to 120, plant species to 12).
    scale: image size as a fraction of NCFM's camera sizes (aerial cactus is always 32x32).
    small_fish: small fish on large frames, as on real decks: frames twice as wide and high as
        `scale` gives (4x the area), fish 0.8x as long in pixels as on the default frames (a
        fish's box covers ~1-3% of the frame instead of ~5-15%); a fifth of the images hold two.

    The ncfm layout also writes the training fish's boxes as the community's Sloth files,
    boxes/<class>_labels.json (see _sloth_files), for `ncfm boxes`.

    Returns a summary: counts per class, boats and their sizes, seconds taken; on ncfm, the true
    fish boxes {image: [(x, y, width, height), ...]} and the flaws put in the Sloth files.
    workers=0 uses every core for large sets and one for small ones; the output never depends on it.
    """
    from tqdm import tqdm

    from ncfm.pool import cpu_count, process_pool

    started = time.perf_counter()
    classes, jobs, style, frame_scale = _prepare(layout, n_train, n_test1, n_test2, boats, scale, seed,
                                                 nested_stg2, n_classes, small_fish, decoys)
    spec = _layout(layout)
    out = Path(out_dir)
    folders = {os.path.dirname(j[0]) for j in jobs}
    if spec.class_folders:  # every class's folder, as Kaggle's
        folders |= {f"train/{c}" for c in classes}
    for folder in sorted(folders):
        (out / folder).mkdir(parents=True, exist_ok=True)

    w, h = _image_size(spec, 0, boats, frame_scale)
    if workers <= 0:  # auto: every core, unless a pool costs more than it saves
        workers = 1 if len(jobs) * w * h < 20e6 else cpu_count()
    chunks = [jobs[i: i + 16] for i in range(0, len(jobs), 16)]
    drawn: list[list[tuple]] = []
    with tqdm(total=len(jobs), desc="drawing images", unit="img", disable=not progress) as bar:
        if workers == 1:
            for chunk in chunks:
                drawn += _render_chunk(chunk, str(out), style)
                bar.update(len(chunk))
        else:
            with process_pool(workers) as pool:
                futures = [pool.submit(_render_chunk, c, str(out), style) for c in chunks]
                for chunk, fut in zip(chunks, futures):
                    drawn += fut.result()
                    bar.update(len(chunk))

    for file_name, text in _tables(layout, jobs, classes).items():
        atomic_write_text(out / file_name, text)

    train = [j for j in jobs if j[5] == 0]
    n_new = max(3, boats // 3) if layout == "ncfm" else 0
    summary = {
        "out_dir": str(out),
        "layout": layout,
        "n_train": len(train),
        "n_test1": sum(1 for j in jobs if j[5] == 1),
        "n_test2": sum(1 for j in jobs if j[5] == 2),
        "class_counts": {c: sum(1 for j in train if j[2] == c) for c in classes},
        "train_boats": boats, "stage2_boats": n_new,
        "videos": len({j[3] for j in jobs}),
        "boat_sizes": {b: "%dx%d" % _image_size(spec, b, boats, frame_scale) for b in range(boats + n_new)},
    }
    if layout == "ncfm":  # NoF is the empty class: boxes make sense
        fish_classes = [c for c in classes if style.looks[c].shape]
        truth = {j[0]: boxes for j, boxes in zip(jobs, drawn) if j[5] == 0 and j[2] in fish_classes}
        files, flaws = _sloth_files(jobs, truth, style.sizes, fish_classes, seed)
        (out / BOXES_FOLDER).mkdir(exist_ok=True)
        for file_name, text in files.items():
            atomic_write_text(out / BOXES_FOLDER / file_name, text)
        summary["fish_boxes"] = truth
        # the test fish's boxes, which Kaggle never shows: to measure a detector on held-out images
        test_fish = {j[0]: boxes for j, boxes in zip(jobs, drawn) if j[5] != 0 and j[2] in fish_classes}
        atomic_write_text(out / "test_boxes.csv", "image,x,y,width,height\n" + "".join(
            f"{image},{x},{y},{w},{h}\n" for image, boxes in sorted(test_fish.items()) for x, y, w, h in boxes))
        summary["boxes"] = {"folder": str(out / BOXES_FOLDER), "files": len(files),
                            "boxes": sum(map(len, truth.values())), **flaws}
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def main(args) -> int:
    """`ncfm make_synthetic OUT_DIR`: refuse a non-empty folder unless --force, then draw."""
    import sys

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise NcfmError(f"{out}: exists and is not a folder; choose another OUT_DIR")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise NcfmError(f"{out}: folder is not empty; choose another OUT_DIR or pass --force to write into it")
    summary = make_synthetic(out, n_train=args.n_train, n_test1=args.n_test1, n_test2=args.n_test2,
                             boats=args.boats, scale=args.scale, seed=args.seed, nested_stg2=args.nested_stg2,
                             layout=args.layout, n_classes=args.n_classes, small_fish=args.small_fish,
                             decoys=args.decoys, progress=sys.stderr.isatty())
    counts = " ".join(f"{c}={n}" for c, n in summary["class_counts"].items())
    if summary["layout"] == "ncfm":
        print(f"wrote {summary['n_train']} train ({counts}), {summary['n_test1']} stage-1 and "
              f"{summary['n_test2']} stage-2 test images to {out} in {summary['seconds']:.1f} s")
        print(f"{summary['train_boats']} training boats, {summary['stage2_boats']} stage-2-only boats, "
              f"{summary['videos']} videos; true boats in {out / 'train_boats.csv'}")
        b = summary["boxes"]
        print(f"{b['boxes']} fish boxes in {b['files']} Sloth files in {b['folder']} (for `ncfm boxes`), with "
              f"{b['stick_out']} drawn past the frame, {b['without_box']} fish images left out and "
              f"{b['prefixed']} names with a folder prefix")
    else:
        print(f"wrote {summary['n_train']} train ({counts}) and {summary['n_test1']} test images in the "
              f"{summary['layout']} layout to {out} in {summary['seconds']:.1f} s")
        print(f"{summary['train_boats']} boats (backgrounds), {summary['videos']} videos; true boats in "
              f"{out / 'train_boats.csv'}, test labels in {out / 'test_truth.csv'}")
    return 0
