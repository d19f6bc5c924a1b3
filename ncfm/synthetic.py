"""A synthetic dataset shaped like a Kaggle image competition's files.

    ncfm make_synthetic demo/data --n-train 400                      # NCFM, ~2 s at --scale 0.25
    ncfm make_synthetic demo/dogs --layout dog-breed --n-classes 10  # Dog Breed Identification
    ncfm make_synthetic demo/planet --layout planet                  # several tags per image

Seven layouts, each imitating one Kaggle competition's files as its data page describes them;
four with one class per image:
    ncfm             train/<CLASS>/img_NNNNN.jpg, test_stg1/img_NNNNN.jpg, test_stg2/image_NNNNN.jpg
                     (optionally nested test_stg2/test_stg2/), sample_submission_stg1.csv and _stg2.csv
                     (image,ALB,...,YFT; stage 2 = the stage-1 names, then test_stg2/image_NNNNN.jpg)
    dog-breed        train/<id>.jpg and test/<id>.jpg (ids: 32 hex digits), labels.csv (id,breed; ids
                     without .jpg), sample_submission.csv (id,<breed>,...: one probability per breed)
    plant-seedlings  train/<Species>/<id>.png (names with spaces, capitals, hyphens), test/<id>.png,
                     sample_submission.csv (file,species: file names with .png, one label per row)
    aerial-cactus    train/<id>.jpg and test/<id>.jpg, always 32x32, train.csv (id,has_cactus; ids with
                     .jpg; ~75% ones), sample_submission.csv (id,has_cactus: P(cactus), 0.5 each)
and three whose answer is something else:
    planet           several tags per image (Planet: Understanding the Amazon from Space):
                     train-jpg/train_<n>.jpg, test-jpg/test_<n>.jpg (n from 0), square; train_v2.csv
                     (image_name,tags: names without .jpg, tags space-separated, e.g. "clear primary"),
                     sample_submission_v2.csv (image_name,tags: "primary clear" each). n_classes of the
                     17 tags (default 6, always primary and clear), each its own drawn object (shape,
                     stripes, hue), one per tag present, in cells of a grid; primary on ~90% of the
                     images, clear ~70%, the others Kaggle's share but at least 5% (agriculture ~30%),
                     every tag on at least n_train/25 images (16 at 400); one weather tag at most per
                     image, nothing else on a cloudy one, every image has a tag; videos of up to 4
                     frames (6 elsewhere): more videos, so more tag combinations in a small set
                     (more combinations than tags from about n_train=100 at the default 6 tags)
    pawpularity      a number per image (PetFinder.my Pawpularity): train/<Id>.jpg, test/<Id>.jpg (Ids: 32
                     hex digits); train.csv (Id, 12 binary metadata columns, Pawpularity: 1 to 100),
                     test.csv (Id and the metadata), sample_submission.csv (Id,Pawpularity: 50.0 each).
                     The score is the pet's appeal, drawn as its size (larger = higher), plus the
                     boat's offset and noise (sd 8): mean ~38, sd ~20, right-skewed; frames of a video
                     differ a little in score; the metadata is drawn independently of it
    aptos            an ordered grade per image (APTOS 2019 Blindness Detection): train_images/<id_code>.png,
                     test_images/<id_code>.png (12 hex digits), square; train.csv (id_code,diagnosis:
                     0 to 4, in APTOS's balance with a floor), test.csv (id_code), sample_submission.csv
                     (id_code,diagnosis: 0 each). A round fundus over the boat's deck, with more and
                     larger lesions (yellow exudates, dark red haemorrhages) the higher the grade

What every layout imitates, because the pipeline's choices depend on it:
- boats (cameras, backgrounds): each boat has one image size (Kaggle's NCFM sizes times --scale;
  square for plant seedlings, planet and aptos; 32x32 for aerial cactus) and its own deck
  (colour, plank seams, sea, rails, gear, lighting). Boats correlate with classes, but every
  class appears on several boats, so group-aware folds are possible;
- videos: consecutive near-identical frames of one boat (same deck, object moved a little), so
  plain stratified folds leak; on NCFM some videos are night-vision (grey or green monochrome);
- classes: a distinct drawing per class (fish shape, colours, stripes, fins; NCFM's NoF and the
  cactus-free aerial photos have none), in the competition's class balance (NCFM: ALB ~45%,
  LAG ~2%) with a floor so every class fills 5 folds; likewise Planet's tags and APTOS's grades,
  and Pawpularity's score is visible in the image (see above);
- NCFM's stage 2 shows boats never seen in training; the other layouts have one test folder,
  drawn on the training boats.

Extra files that Kaggle does not ship, for tests and metrics: train_boats.csv (image,boat: the
true boat of each training image, image relative to the data folder) and test_truth.csv (the
sample submission's id column, then label; NCFM adds boat,stage; planet, pawpularity and aptos name
the label as Kaggle does: tags, Pawpularity, diagnosis). NCFM's layout also gets the
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
_PLAN, _BOAT, _VIDEO, _FRAME, _BOXES, _DECOY, _ANSWER = 0, 1, 2, 3, 4, 5, 6
# ... and within _ANSWER (planet, pawpularity, aptos): one sub-stream per purpose
_APPEAL, _METADATA, _EYE = 0, 1, 2


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
# Planet: Understanding the Amazon from Space: its 17 tags and about how many of its 40,479 training
# images carry each (train_v2.csv). The weather tags are exclusive: exactly one per image on Kaggle,
# and a cloudy image carries no other tag.
PLANET_TAG_COUNTS = {"agriculture": 12315, "artisinal_mine": 339, "bare_ground": 862, "blooming": 332,
                     "blow_down": 101, "clear": 28431, "cloudy": 2089, "conventional_mine": 100,
                     "cultivation": 4547, "habitation": 3660, "haze": 2697, "partly_cloudy": 7261,
                     "primary": 37513, "road": 8071, "selective_logging": 340, "slash_burn": 209, "water": 7411}
PLANET_IMAGES = 40479
PLANET_WEATHER = ("clear", "cloudy", "haze", "partly_cloudy")
# PetFinder.my Pawpularity: 12 binary metadata columns (train.csv, test.csv) and about how often each
# is 1; they say little about the score, on Kaggle as here (drawn independently of it).
PET_METADATA = {"Subject Focus": 0.03, "Eyes": 0.77, "Face": 0.90, "Near": 0.86, "Action": 0.01,
                "Accessory": 0.07, "Group": 0.13, "Collage": 0.05, "Human": 0.17, "Occlusion": 0.17,
                "Info": 0.06, "Blur": 0.07}
# The score: the photo's appeal (visible: the pet's size) plus the boat's (camera's) own offset plus
# noise, rounded and clipped to 1..100. Appeal ~ shift + Gamma(shape, scale): right-skewed like
# Kaggle's scores (mean ~38, sd ~20).
PAW_SHAPE, PAW_SCALE, PAW_SHIFT = 4.9, 8.54, -3.9
PAW_NOISE_SD, PAW_BOAT_SD = 8.0, 4.0
PAW_BINS = [(lo, lo + 9) for lo in range(1, 100, 10)]  # the summary's class_counts: images per ten points
# APTOS 2019 Blindness Detection: training images per diagnosis grade (0 no DR ... 4 proliferative DR).
APTOS_TRAIN_COUNTS = {"0": 1805, "1": 370, "2": 999, "3": 193, "4": 295}
# lesions drawn on a fundus of each grade (times 0.8-1.2): more with every grade, so neighbouring
# grades look more alike than distant ones
APTOS_LESIONS = (0, 4, 10, 18, 30)


@dataclass(frozen=True)
class Layout:
    """What one competition's files look like, as far as this module imitates them."""

    counts: dict            # every class -> Kaggle's training images of it, in Kaggle's (sorted) order
    default_classes: int    # classes in a synthetic set unless n_classes says otherwise
    ext: str                # image files: "jpg" or "png"
    id_digits: int          # hex digits of an image id; 0: NCFM's numbered img_NNNNN.jpg
    class_folders: bool     # train/<class>/... (else a flat train/ and a labels CSV)
    size: str               # "boat": the boat's camera size x scale; "square": its height squared; "32x32"
    answer: str = "class"   # what a label is: "class" (one per image), "tags" (several), "number", "grade"
    train_folder: str = "train"
    test_folder: str = "test"


LAYOUTS = {
    "ncfm": Layout({c: NCFM_TRAIN_COUNTS[c] for c in NCFM_CLASSES}, 8, "jpg", 0, True, "boat"),
    "dog-breed": Layout(dict.fromkeys(DOG_BREEDS, 1), 6, "jpg", 32, False, "boat"),
    "plant-seedlings": Layout(PLANT_TRAIN_COUNTS, 5, "png", 9, True, "square"),
    "aerial-cactus": Layout(CACTUS_TRAIN_COUNTS, 2, "jpg", 32, False, "32x32"),
    # counts: the tags' images; the score's column; the grades' images
    "planet": Layout(PLANET_TAG_COUNTS, 6, "jpg", 0, False, "square", "tags", "train-jpg", "test-jpg"),
    "pawpularity": Layout({"Pawpularity": 9912}, 1, "jpg", 32, False, "boat", "number"),
    "aptos": Layout(APTOS_TRAIN_COUNTS, 5, "png", 12, False, "square", "grade", "train_images", "test_images"),
}


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise NcfmError(f"received layout={name!r}; known layouts: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def _class_weights(name: str, n_classes: int | None) -> dict[str, int]:
    """The synthetic set's classes (a spread of the competition's, in its order) and their weights."""
    counts = _layout(name).counts
    n = _layout(name).default_classes if n_classes is None else n_classes
    if name in ("ncfm", "aerial-cactus", "aptos") and n != len(counts):
        kind = "grades (0 to 4)" if name == "aptos" else "classes"
        raise NcfmError(f"received n_classes={n_classes}; the {name} layout has exactly {len(counts)} {kind} "
                        f"(leave n_classes out)")
    if not 2 <= n <= len(counts):
        raise NcfmError(f"received n_classes={n_classes}; the {name} layout has 2 to {len(counts)} classes")
    # evenly spread over the sorted names (not the first n: they would all start with "a")
    chosen = [list(counts)[i * len(counts) // n] for i in range(n)]
    return {c: counts[c] for c in chosen}


def _answer_classes(name: str, n_classes: int | None) -> list[str]:
    """What the summary counts on the layouts whose answer is not one class per image: Planet's tags
    (n_classes of the 17, default 6: primary and clear, then a spread over the others from the
    commonest to the rarest, in Kaggle's alphabetical order), Pawpularity's bins of ten points."""
    if name == "pawpularity":
        if n_classes is not None:
            raise NcfmError(f"received n_classes={n_classes}; the pawpularity layout has a number per image "
                            f"(Pawpularity, 1 to 100), not classes (leave n_classes out)")
        return [f"{lo}-{hi}" for lo, hi in PAW_BINS]
    n = _layout(name).default_classes if n_classes is None else n_classes
    if not 2 <= n <= len(PLANET_TAG_COUNTS):
        raise NcfmError(f"received n_classes={n_classes}; the planet layout has 2 to {len(PLANET_TAG_COUNTS)} tags")
    others = sorted((t for t in PLANET_TAG_COUNTS if t not in ("primary", "clear")),
                    key=lambda t: -PLANET_TAG_COUNTS[t])
    chosen = {"primary", "clear"} | {others[i * len(others) // (n - 2)] for i in range(n - 2)}
    return [t for t in PLANET_TAG_COUNTS if t in chosen]


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
    """train/[<class>/]<id>.<ext> and test/<id>.<ext> (or the layout's folders), ids random hex (32
    digits like an md5, 12 as in APTOS, or 9 as in Plant Seedlings)."""
    ids: list[str] = []
    seen = set()
    while len(ids) < len(train) + len(test):
        new = rng.bytes(16).hex()[: layout.id_digits]
        if new not in seen:
            seen.add(new)
            ids.append(new)
    jobs = []
    for (video, boat, label, f), i in zip(train, ids):
        folder = f"{layout.train_folder}/{label}" if layout.class_folders else layout.train_folder
        jobs.append((f"{folder}/{i}.{layout.ext}", boat, label, video, f, 0))
    for (video, boat, label, f), i in zip(test, ids[len(train):]):
        jobs.append((f"{layout.test_folder}/{i}.{layout.ext}", boat, label, video, f, 1))
    return jobs


def _plan_answers(layout: str, tags: list[str], n_train: int, n_test: int, boats: int, seed: int) -> list[tuple]:
    """Planet's and Pawpularity's images, as _plan's: the videos first (every boat gets one, then
    by the boats' weights), then their answers. Planet: each video's tags (_tag_videos), the same on
    every frame. Pawpularity: a score per frame, the video's appeal (what the image shows, see
    _appeal) plus its boat's offset plus noise, so near-duplicate frames differ a little in score."""
    rng = np.random.default_rng([seed, _PLAN])
    boat_weights = rng.dirichlet(np.full(boats, 3.0))
    train = _boat_videos(rng, n_train, boats, boat_weights, 4 if layout == "planet" else 6)
    test = _boat_videos(rng, n_test, boats, boat_weights, 3)
    if layout == "planet":
        tag_boats = {t: rng.dirichlet(np.full(boats, 1.5)) for t in tags}  # tags correlate with boats
        floor = max(5, min(n_train // 25, 40))  # 16 at 400: every tag fills 5 folds
        labels = (_tag_videos(rng, train, tags, tag_boats, n_train, floor)
                  + _tag_videos(rng, test, tags, tag_boats, n_test, 0))

        def label(video, boat, frame):
            return labels[video]
    else:
        offsets = rng.normal(0, PAW_BOAT_SD, boats)

        def label(video, boat, frame):
            score = _appeal(seed, video) + offsets[boat] + rng.normal(0, PAW_NOISE_SD)
            return str(int(np.clip(round(score), 1, 100)))

    def frames(videos, first_video_id):
        return [(first_video_id + v, boat, label(first_video_id + v, boat, f), f)
                for v, (boat, length) in enumerate(videos) for f in range(length)]

    train_frames = frames(train, 0)
    test_frames = frames(test, len(train))
    if layout == "planet":
        return _planet_names(rng, train_frames, test_frames)
    return _hex_names(rng, LAYOUTS[layout], train_frames, test_frames)


def _boat_videos(rng, n: int, boats: int, weights: np.ndarray, max_len: int) -> list[tuple[int, int]]:
    """n images as videos (boat, n_frames) of 1 to max_len frames: boat i gets video i, the rest by weight."""
    videos, left = [], n
    while left > 0:
        length = int(min(left, rng.integers(1, max_len + 1)))
        boat = len(videos) if len(videos) < boats else int(rng.choice(boats, p=weights))
        videos.append((boat, length))
        left -= length
    return videos


def _planet_share(tag: str) -> float:
    """A tag's share of the images: Kaggle's, within [5%, 90%] (primary ~90%, clear ~70%, agriculture
    ~30% ... the rarest raised to 5%)."""
    return min(0.9, max(0.05, PLANET_TAG_COUNTS[tag] / PLANET_IMAGES))


def _tag_videos(rng, videos: list[tuple], tags: list[str], tag_boats: dict, n: int, floor: int) -> list[str]:
    """Each video's tags, space-separated in the vocabulary's order. Every tag goes to whole videos
    until its images reach max(floor, its share of n) (_pick_videos); the weather tags go to distinct
    videos (rarest first, clear last: one at most per image), a cloudy video gets no other tag, and a
    video left without any tag gets primary, so every image has one."""
    have: list[set] = [set() for _ in videos]
    free = list(range(len(videos)))  # no weather tag yet
    for t in sorted((t for t in tags if t in PLANET_WEATHER), key=PLANET_TAG_COUNTS.get):
        chosen = set(_pick_videos(rng, videos, free, max(floor, round(n * _planet_share(t))), tag_boats[t]))
        for v in chosen:
            have[v].add(t)
        free = [v for v in free if v not in chosen]
    open_ = [v for v in range(len(videos)) if "cloudy" not in have[v]]
    for t in (t for t in tags if t not in PLANET_WEATHER):
        for v in _pick_videos(rng, videos, open_, max(floor, round(n * _planet_share(t))), tag_boats[t]):
            have[v].add(t)
    return [" ".join(t for t in tags if t in h) if h else "primary" for h in have]


def _pick_videos(rng, videos: list[tuple], pool: list[int], target: int, boat_weights: np.ndarray) -> list[int]:
    """Videos of the pool, in a random order weighted by their boats (first the shortest video of each
    of the first five boats in that order, so even a rare tag spans several boats), until their
    frames reach target."""
    if target <= 0 or not pool:
        return []
    keys = rng.random(len(pool)) ** (1 / np.array([boat_weights[videos[v][0]] for v in pool]))
    order = [pool[i] for i in np.argsort(-keys, kind="stable")]
    shortest: dict[int, int] = {}  # boat -> its shortest video, boats in order of first appearance
    for v in order:
        boat = videos[v][0]
        if boat not in shortest or videos[v][1] < videos[shortest[boat]][1]:
            shortest[boat] = v
    first = list(shortest.values())[:5]
    order = first + [v for v in order if v not in set(first)]
    chosen, total = [], 0
    for v in order:
        if total >= target:
            break
        chosen.append(v)
        total += videos[v][1]
    return chosen


def _planet_names(rng, train, test) -> list[tuple]:
    """Planet's file names: train-jpg/train_<n>.jpg and test-jpg/test_<n>.jpg, numbered from 0 in an
    order that says nothing about tags or videos."""
    jobs = []
    for (video, boat, label, f), num in zip(train, rng.permutation(len(train))):
        jobs.append((f"train-jpg/train_{num}.jpg", boat, label, video, f, 0))
    for (video, boat, label, f), num in zip(test, rng.permutation(len(test))):
        jobs.append((f"test-jpg/test_{num}.jpg", boat, label, video, f, 1))
    return jobs


def _appeal(seed: int, video: int) -> float:
    """Pawpularity: how appealing a video's photo is, in score points (mean ~38); the pet is drawn
    the larger the higher it is. Its own stream, so the plan and the drawing agree."""
    return PAW_SHIFT + float(np.random.default_rng([seed, _ANSWER, _APPEAL, video]).gamma(PAW_SHAPE, PAW_SCALE))


def _pet_metadata(seed: int, video: int) -> list[int]:
    """Pawpularity's 12 binary metadata columns of a video's frames, each 1 with PET_METADATA's chance."""
    draws = np.random.default_rng([seed, _ANSWER, _METADATA, video]).random(len(PET_METADATA))
    return [int(d < p) for d, p in zip(draws, PET_METADATA.values())]


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


def _one_hue(hue: float) -> dict:
    """Back, belly and fin colours all of one saturated hue: an object told apart by its colour alone."""
    def rgb(s, v):
        return tuple(round(255 * x) for x in colorsys.hsv_to_rgb(hue % 1, s, v))
    return {"back": rgb(0.85, 0.7), "belly": rgb(0.55, 0.95), "fin": rgb(0.9, 0.5)}


PET_HUE = 0.85  # Pawpularity's pet: magenta, a colour the decks rarely have


def _looks(layout: str, classes: list[str]) -> dict[str, Look]:
    """One look per class. NCFM: its own fish (NoF: none). Aerial cactus: a long green shape or
    nothing. Planet: tag k of n gets shape k % 6, k // 6 stripes and its own hue k / n. Pawpularity:
    one pet ("pet"), its size the label's cue. APTOS: none (a fundus and its lesions, _draw_eye).
    Otherwise class k gets shape k % 6, k // 6 % 4 stripes, and from k = 24 on a new palette."""
    if layout == "ncfm":
        return {c: Look(c, FISH_LENGTH[c]) if c in FISH else Look("") for c in classes}
    if layout == "aerial-cactus":  # at 32x32 the cactus needs to be long to be seen
        return {"0": Look(""), "1": Look("DOL", 0.6)}
    if layout == "planet":
        return {c: Look(_SHAPES[k % 6], FISH_LENGTH[_SHAPES[k % 6]], _one_hue(k / len(classes)), k // 6)
                for k, c in enumerate(classes)}
    if layout == "pawpularity":
        return {"pet": Look("LAG", 0.0, _one_hue(PET_HUE))}
    if layout == "aptos":
        return {}
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
    answer: str = "class"  # the layout's kind of label (Layout.answer): "class" frames by _render, else _render_answer


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
    same frame without its fish (the same random draws), to check the boxes against. The layouts
    whose answer is not a class are drawn by _render_answer.
    """
    from PIL import Image, ImageDraw

    if style.answer != "class":
        return _render_answer(job, style)
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
    _paste_decoys(pil, style, video, frame)
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

    return _expose(pil, gain, night, green, fr, style.ext), boxes


def _paste_decoys(pil, style: Style, video: int, frame: int) -> None:
    """style.decoys fish-like distractors, in place; their own streams: the rest of the frame is drawn
    as without them."""
    if not style.decoys:
        return
    from PIL import Image

    w, h = pil.size
    dv = np.random.default_rng([style.seed, _DECOY, video])
    df = np.random.default_rng([style.seed, _DECOY, video, frame])
    typical = 0.28 * w * style.fish_scale
    for _ in range(style.decoys):
        sprite = _draw_decoy(typical, np.random.default_rng(dv.integers(2**32)))
        sprite = sprite.rotate(dv.uniform(0, 360), expand=True, resample=Image.BILINEAR)
        cx, cy = dv.uniform([0.05 * w, 0.05 * h], [0.95 * w, 0.95 * h]) + df.normal(0, 0.004 * w, 2)
        pil.paste(sprite, (int(cx - sprite.width / 2), int(cy - sprite.height / 2)), sprite)


def _expose(pil, gain: float, night: bool, green: bool, fr, ext: str) -> bytes:
    """The camera: the frame's gain (or night vision), sensor noise, the encoded file."""
    from io import BytesIO

    from PIL import Image

    w, h = pil.size
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
    if ext == "png":
        out.save(buf, "PNG")
    else:
        out.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _render_answer(job, style: Style) -> tuple[bytes, list]:
    """Draw one frame of planet, pawpularity or aptos: the boat's deck (camera nudged) with what the
    answer shows, gear, noise. Planet: one object per tag (the tag's look, _looks) in its own cell of
    a grid; Pawpularity: one pet, the larger the more appealing (_appeal); APTOS: a fundus over the
    deck, with more lesions the higher the grade (_draw_eye). The frames of a video move a little.
    Returns the encoded image and no boxes."""
    from PIL import Image, ImageDraw

    path, boat, label, video, frame, _stage = job
    w, h = style.sizes[boat]
    seed = style.seed
    vr = np.random.default_rng([seed, _VIDEO, video])  # what every frame of the video shares
    fr = np.random.default_rng([seed, _FRAME, video, frame])  # what changes frame to frame
    dx, dy = (vr.integers(-1, 2, 2) * np.ceil(0.005 * np.array([w, h]))).astype(int)
    gain = vr.uniform(0.85, 1.15) * fr.uniform(0.97, 1.03)
    bg = _background(seed, boat, w, h)
    pil = Image.fromarray(np.roll(bg, (int(dy), int(dx)), axis=(0, 1)) if (dx or dy) else bg)
    if style.answer == "grade":
        pil = _draw_eye(pil, int(label), seed, boat, vr, fr)
        _paste_decoys(pil, style, video, frame)
        return _expose(pil, gain, False, False, fr, style.ext), []

    objects = []  # (look, length, rng of its drawing, centre, angle)
    if style.answer == "tags":
        tags = label.split()
        g = 3 if len(tags) <= 9 else 4  # a grid of g x g cells, one object in each of len(tags)
        for tag, cell in zip(tags, vr.permutation(g * g)):
            look = style.looks[tag]
            length = look.length * w * 0.9 * vr.uniform(0.85, 1.15)
            centre = np.array([(cell % g + 0.5 + vr.uniform(-0.2, 0.2)) * w / g,
                               (cell // g + 0.5 + vr.uniform(-0.2, 0.2)) * h / g])
            velocity = vr.normal(0, 0.006, 2) * w
            angle, spin = vr.uniform(0, 360), vr.normal(0, 4)
            objects.append((look, length, np.random.default_rng(vr.integers(2**32)),
                            centre + frame * velocity + fr.normal(0, 0.004 * w, 2), angle + frame * spin))
    else:  # number: the pet, 0.1 to 0.55 of the width long as the appeal goes from 0 to 100
        look = style.looks["pet"]
        length = (0.1 + 0.45 * float(np.clip(_appeal(seed, video), 0, 100)) / 100) * w
        centre = vr.uniform([0.35 * w, 0.35 * h], [0.65 * w, 0.65 * h])
        objects.append((look, length, np.random.default_rng(vr.integers(2**32)),
                        centre + fr.normal(0, 0.006 * w, 2), vr.uniform(-30, 30) + fr.normal(0, 3)))
    gear = vr.random() < 0.5  # a crew member's boot or glove, whatever the answer (not a cue)
    gear_xy = vr.uniform([0, 0], [w, h]) + frame * fr.normal(0, 0.01 * w, 2)
    gear_colour = _colour(vr, (230, 140, 30) if vr.random() < 0.5 else (40, 40, 45), 20)

    _paste_decoys(pil, style, video, frame)
    if gear:
        r = 0.04 * w
        ImageDraw.Draw(pil).ellipse([gear_xy[0] - r, gear_xy[1] - r * 0.6, gear_xy[0] + r, gear_xy[1] + r * 0.6],
                                    fill=gear_colour)
    for look, length, obj_rng, (cx, cy), angle in objects:
        sprite = _draw_fish(look.shape, length, obj_rng, look.colours, look.stripes)
        sprite = sprite.rotate(angle, expand=True, resample=Image.BILINEAR)
        pil.paste(sprite, (int(cx - sprite.width / 2), int(cy - sprite.height / 2)), sprite)
    return _expose(pil, gain, False, False, fr, style.ext), []


def _draw_eye(pil, grade: int, seed: int, boat: int, vr, fr):
    """APTOS: a fundus photograph over the deck (the camera's): a round orange-red retina, darker
    toward its rim, black around it, a pale optic disc with vessels, and lesions by grade: about
    APTOS_LESIONS[grade] yellow exudates and dark red haemorrhages, a little larger with every grade."""
    from PIL import Image, ImageDraw

    w, h = pil.size
    camera = np.random.default_rng([seed, _ANSWER, _EYE, boat])  # each boat (camera) its own retina colour
    retina = np.array([200, 85, 40], np.float32) + camera.integers(-25, 26, 3)
    retina *= vr.uniform(0.9, 1.1, 3)  # and each eye a little its own
    r = 0.47 * min(w, h)
    cx, cy = np.array([w / 2, h / 2]) + fr.normal(0, 0.004 * w, 2)  # the eye moves a little frame to frame
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2
    deck = np.asarray(pil).astype(np.float32)
    inside = (0.3 * deck + 0.7 * retina) * (1 - 0.35 * np.minimum(d2, 1))[..., None]
    pil = Image.fromarray(np.clip(inside, 0, 255).astype(np.uint8))  # the retina, drawn on, then cut round
    draw = ImageDraw.Draw(pil)
    side = 1 if vr.random() < 0.5 else -1  # left or right eye
    disc = np.array([cx + side * 0.35 * r, cy + vr.normal(0, 0.03) * r])
    vessel = tuple(int(v) for v in np.clip(retina * 0.55, 0, 255))
    for _ in range(int(vr.integers(4, 7))):  # vessels: from the disc across the retina
        a = vr.uniform(0, 2 * math.pi)
        points = [tuple(disc)]
        for k in range(1, 5):
            a += vr.normal(0, 0.25)
            points.append((disc[0] + math.cos(a) * 0.22 * r * k, disc[1] + math.sin(a) * 0.22 * r * k))
        draw.line(points, fill=vessel, width=max(1, round(0.018 * r)))
    rd = 0.12 * r
    draw.ellipse([disc[0] - rd, disc[1] - rd, disc[0] + rd, disc[1] + rd], fill=(250, 228, 175))
    n = int(round(APTOS_LESIONS[grade] * vr.uniform(0.8, 1.2)))
    for _ in range(n):
        a, rho = vr.uniform(0, 2 * math.pi), 0.85 * r * math.sqrt(vr.random())
        px, py = cx + rho * math.cos(a), cy + rho * math.sin(a)
        size = r * vr.uniform(0.02, 0.04) * (1 + 0.15 * grade)
        colour = (245, 222, 80) if vr.random() < 0.5 else (105, 15, 10)  # exudate or haemorrhage
        draw.ellipse([px - size, py - size, px + size, py + size], fill=colour)
    eye = np.where((d2 <= 1)[..., None], np.asarray(pil), np.clip(0.08 * deck, 0, 255).astype(np.uint8))
    return Image.fromarray(eye)


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
def _tables(layout: str, jobs: list[tuple], classes: list[str], seed: int = 0) -> dict[str, str]:
    """Every CSV file of the dataset: file name -> text. Kaggle's own, then train_boats.csv and
    test_truth.csv (labels and boats that Kaggle keeps to itself). seed: Pawpularity's metadata."""
    train = sorted((j for j in jobs if j[5] == 0), key=lambda j: j[0])
    boats = "image,boat\n" + "".join(f"{j[0]},{j[1]}\n" for j in train)
    if layout == "ncfm":
        return {**_ncfm_tables(jobs, classes), "train_boats.csv": boats}

    test = sorted((j for j in jobs if j[5] == 1), key=lambda j: j[0])
    if LAYOUTS[layout].answer != "class":
        return {**_answer_tables(layout, train, test, seed), "train_boats.csv": boats}

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


def _answer_tables(layout: str, train: list[tuple], test: list[tuple], seed: int) -> dict[str, str]:
    """Planet's, Pawpularity's and APTOS's CSV files, ids without the extension, and test_truth.csv:
    the sample submission's ids (in its order) with the true answer under Kaggle's column name."""
    def stem(job):
        return job[0].split("/")[-1].rsplit(".", 1)[0]

    def rows(jobs, *columns):
        return "".join(",".join([stem(j), *(c(j) for c in columns)]) + "\n" for j in jobs)

    def answer(job):
        return job[2]

    if layout == "planet":  # in Kaggle's order: train_0, train_1, ...
        def number(job):
            return int(stem(job).split("_")[1])

        train, test = sorted(train, key=number), sorted(test, key=number)
        return {"train_v2.csv": "image_name,tags\n" + rows(train, answer),
                "sample_submission_v2.csv": "image_name,tags\n" + rows(test, lambda j: "primary clear"),
                "test_truth.csv": "image_name,tags\n" + rows(test, answer)}
    if layout == "pawpularity":
        header = "Id," + ",".join(PET_METADATA)

        def metadata(job):  # what a video's photo shows: the same for its frames
            return ",".join(map(str, _pet_metadata(seed, job[3])))

        return {"train.csv": header + ",Pawpularity\n" + rows(train, metadata, answer),
                "test.csv": header + "\n" + rows(test, metadata),
                "sample_submission.csv": "Id,Pawpularity\n" + rows(test, lambda j: "50.0"),
                "test_truth.csv": "Id,Pawpularity\n" + rows(test, answer)}
    return {"train.csv": "id_code,diagnosis\n" + rows(train, answer),  # aptos
            "test.csv": "id_code\n" + rows(test),
            "sample_submission.csv": "id_code,diagnosis\n" + rows(test, lambda j: "0"),
            "test_truth.csv": "id_code,diagnosis\n" + rows(test, answer)}


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
    if spec.answer in ("tags", "number"):
        weights, classes = {}, _answer_classes(layout, n_classes)
    else:
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
    if small_fish and spec.answer != "class":
        raise NcfmError(f"received small_fish=True; the {layout} layout's answer is not a fish's class, its "
                        f"objects keep their size (leave it out)")
    if spec.answer in ("tags", "number"):
        if n_train < 20:
            raise NcfmError(f"received n_train={n_train}; need at least 20 (4 per fold)")
        jobs = _plan_answers(layout, classes, n_train, n_test1, boats, seed)
    else:
        jobs = _plan(layout, weights, n_train, n_test1, n_test2 or 0, boats, seed, nested_stg2)
    # small fish: frames twice as wide and high (4x the area), fish a little shorter in pixels
    frame_scale = scale * SMALL_FISH_FRAME if small_fish else scale
    style = Style(seed=seed, sizes={b: _image_size(spec, b, boats, frame_scale) for b in sorted({j[1] for j in jobs})},
                  looks=_looks(layout, classes), night_share=NIGHT_VIDEO_SHARE if layout == "ncfm" else 0.0,
                  ext=spec.ext, fish_scale=SMALL_FISH_LENGTH / SMALL_FISH_FRAME if small_fish else 1.0,
                  decoys=decoys, answer=spec.answer)
    return classes, jobs, style, frame_scale


def make_synthetic(out_dir, n_train: int = 400, n_test1: int = 60, n_test2: int | None = None, boats: int = 12,
                   scale: float = 0.25, seed: int = 0, nested_stg2: bool = False, *, layout: str = "ncfm",
                   n_classes: int | None = None, small_fish: bool = False, decoys: int = 0, workers: int = 0,
                   progress: bool = False) -> dict:
    """Write the dataset into out_dir (created; existing files of the same names are overwritten).

    layout: one of LAYOUTS ("ncfm", "dog-breed", "plant-seedlings", "aerial-cactus", "planet",
        "pawpularity", "aptos"; see the module's docstring for their files).
    n_test1: NCFM's stage-1 test images, or the other layouts' test images.
    n_test2, nested_stg2: NCFM's stage 2 only (n_test2 defaults to 80 there).
    n_classes: how many of the competition's classes (default: 8 NCFM, 6 dog breeds, 5 plant
        species, 2 aerial cactus, 6 Planet tags; dog breeds go up to 120, plant species to 12,
        Planet tags to 17); fixed for aptos (5 grades) and none for pawpularity (leave it out).
    scale: image size as a fraction of NCFM's camera sizes (aerial cactus is always 32x32; plant
        seedlings, planet and aptos are square, the camera's height squared).
    small_fish: small fish on large frames, as on real decks: frames twice as wide and high as
        `scale` gives (4x the area), fish 0.8x as long in pixels as on the default frames (a
        fish's box covers ~1-3% of the frame instead of ~5-15%); a fifth of the images hold two.
        Not for aerial cactus, planet, pawpularity or aptos.

    The ncfm layout also writes the training fish's boxes as the community's Sloth files,
    boxes/<class>_labels.json (see _sloth_files), for `ncfm boxes`.

    Returns a summary: class_counts (training images per class; planet: per tag, the images carrying
    it; pawpularity: per ten points of score, "1-10" ... "91-100"; aptos: per grade, "0" ... "4"),
    boats and their sizes, seconds taken; on ncfm, the true fish boxes {image: [(x, y, width,
    height), ...]} and the flaws put in the Sloth files.
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

    for file_name, text in _tables(layout, jobs, classes, seed).items():
        atomic_write_text(out / file_name, text)

    train = [j for j in jobs if j[5] == 0]
    n_new = max(3, boats // 3) if layout == "ncfm" else 0
    summary = {
        "out_dir": str(out),
        "layout": layout,
        "n_train": len(train),
        "n_test1": sum(1 for j in jobs if j[5] == 1),
        "n_test2": sum(1 for j in jobs if j[5] == 2),
        "class_counts": _class_counts_of(spec.answer, train, classes),
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


def _class_counts_of(answer: str, train: list[tuple], classes: list[str]) -> dict[str, int]:
    """Training images per class or grade; per tag (images carrying it); Pawpularity: per bin of ten points."""
    if answer == "tags":
        return {t: sum(1 for j in train if t in j[2].split()) for t in classes}
    if answer == "number":
        return {c: sum(1 for j in train if lo <= int(j[2]) <= hi) for c, (lo, hi) in zip(classes, PAW_BINS)}
    return {c: sum(1 for j in train if j[2] == c) for c in classes}


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
    # where a label is not a class: what class_counts counts, and what test_truth.csv holds
    counted, answers = {"planet": ("images per tag: ", "tags"),
                        "pawpularity": ("Pawpularity by ten points: ", "scores"),
                        "aptos": ("images per diagnosis grade: ", "grades")}.get(summary["layout"], ("", "labels"))
    counts = counted + counts
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
              f"{out / 'train_boats.csv'}, test {answers} in {out / 'test_truth.csv'}")
    return 0
