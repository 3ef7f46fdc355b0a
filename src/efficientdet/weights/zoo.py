"""The published EfficientDet weights, as data: one :class:`Entry` per (variant, weights set).

A name users type is ``VARIANT[:TAG]`` — ``efficientdet-d0`` (= ``efficientdet-d0:coco``),
``efficientdet-d0:coco:effdet``, ``efficientdet-d3:advprop``, ``efficientdet-d4:coco640`` — or,
where the variant is known (``create_model(name, weights=...)``, ``--model``), the tag alone.

Sources, read for this table (no figure here was measured by us):

* google/automl ``efficientdet/README.md`` (commit 6a54c87): the ``coco2/`` D0–D7x archives and
  their COCO val2017 AP (column AP\\ :sup:`val`); the ``coco/`` Lite archives and their float mAP;
  the ``coco640/`` D2–D6 archives trained at 640×640 and their mAP;
* google/automl ``efficientdet/Det-AdvProp.md``: the ``advprop/`` D0–D5 archives and their val AP;
  they take the input scaled to [-1, 1] (``mean_rgb=0, stddev_rgb=1, scale_range=True``);
* rwightman/efficientdet-pytorch ``effdet/config/model_config.py`` (release ``v0.1`` files, the
  8 hex digits of a name being its sha256 prefix) and ``README.md`` (each port's val2017 mAP as
  effdet measured it).

No official archive has a published hash: those are verified by content instead (see :mod:`.hub`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import PreprocessConfig, list_models

OFFICIAL_BASE = "https://storage.googleapis.com/cloud-tpu-checkpoints/efficientdet"
EFFDET_BASE = "https://github.com/rwightman/efficientdet-pytorch/releases/download/v0.1"
DEFAULT_TAG = "coco"

AUTOML_README = "google/automl efficientdet/README.md"
ADVPROP_README = "google/automl efficientdet/Det-AdvProp.md"
EFFDET_README = "rwightman/efficientdet-pytorch README.md"

# Official (google/automl) sets need the variant's own checkpoint inside a tar archive; effdet's
# ports are plain PyTorch state dicts.
OFFICIAL, EFFDET = "official-archive", "effdet-state-dict"


@dataclass(frozen=True)
class Entry:
    """One downloadable weights file and what it holds."""

    variant: str  # a name of list_models()
    tag: str  # coco, coco:effdet, advprop, advprop:effdet, coco640
    url: str
    kind: str  # OFFICIAL or EFFDET
    coco_ap: float  # COCO val2017 AP in percent, as ``ap_source`` states it
    ap_source: str
    sha256_prefix: str | None = None  # published with the file (effdet); None: verified by content
    # Config fields the weights were trained with, beyond the variant's defaults.
    overrides: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.variant}:{self.tag}"

    @property
    def filename(self) -> str:
        """The file's name at its source, and so in a mirror."""
        return self.url.rsplit("/", 1)[1]

    @property
    def archive_folder(self) -> str:
        """The folder an official archive unpacks to (its name without ``.tar.gz`` / ``.tgz``)."""
        return self.filename.removesuffix(".tar.gz").removesuffix(".tgz")


def _official(variant: str, tag: str, folder: str, filename: str, ap: float, source: str, **overrides) -> Entry:
    return Entry(variant, tag, f"{OFFICIAL_BASE}/{folder}/{filename}", OFFICIAL, ap, source, overrides=overrides)


def _effdet(variant: str, tag: str, filename: str, ap: float) -> Entry:
    sha = filename.removesuffix(".pth").rsplit("-", 1)[1]
    return Entry(variant, tag, f"{EFFDET_BASE}/{filename}", EFFDET, ap, EFFDET_README, sha256_prefix=sha)


# Parameters of each variant as google/automl counts them (its model_inspect / README #params);
# the model reproduces them to the unit (tests/test_model.py). The cache bounds file sizes by them.
PARAMS = {
    "efficientdet-d0": 3_880_067, "efficientdet-d1": 6_625_898, "efficientdet-d2": 8_097_039,
    "efficientdet-d3": 12_032_296, "efficientdet-d4": 20_723_675, "efficientdet-d5": 33_653_315,
    "efficientdet-d6": 51_871_782, "efficientdet-d7": 51_871_782, "efficientdet-d7x": 77_147_166,
    "efficientdet-lite0": 3_243_470, "efficientdet-lite1": 4_248_318, "efficientdet-lite2": 5_252_334,
    "efficientdet-lite3": 8_350_862, "efficientdet-lite3x": 9_280_862, "efficientdet-lite4": 15_130_894,
}
# Official val2017 AP (AP^val column) of the coco2 release; Lite: float mAP.
_COCO2_AP = {"d0": 34.3, "d1": 40.2, "d2": 43.5, "d3": 46.8, "d4": 49.3, "d5": 51.2, "d6": 52.1, "d7": 53.4,
             "d7x": 54.4}
_LITE_AP = {"lite0": 26.41, "lite1": 31.50, "lite2": 35.06, "lite3": 38.77, "lite3x": 42.64, "lite4": 43.18}
_ADVPROP_AP = {"d0": 35.1, "d1": 40.8, "d2": 44.3, "d3": 47.7, "d4": 50.4, "d5": 52.2}
_COCO640_AP = {"d2": 41.7, "d3": 44.0, "d4": 45.7, "d5": 46.6, "d6": 47.9}
# effdet's release files and the val2017 mAP effdet states for each port.
_EFFDET = {
    "d0": ("tf_efficientdet_d0_34-f153e0cf.pth", 34.2), "d1": ("tf_efficientdet_d1_40-a30f94af.pth", 40.1),
    "d2": ("tf_efficientdet_d2_43-8107aa99.pth", 43.4), "d3": ("tf_efficientdet_d3_47-0b525f35.pth", 47.1),
    "d4": ("tf_efficientdet_d4_49-f56376d9.pth", 49.2), "d5": ("tf_efficientdet_d5_51-c79f9be6.pth", 51.2),
    "d6": ("tf_efficientdet_d6_52-4eda3773.pth", 52.0), "d7": ("tf_efficientdet_d7_53-6d1d7a95.pth", 53.1),
    "d7x": ("tf_efficientdet_d7x-f390b87c.pth", 54.3),
    "lite0": ("tf_efficientdet_lite0-dfacfc78.pth", 27.1), "lite1": ("tf_efficientdet_lite1-6dc7ab30.pth", 32.2),
    "lite2": ("tf_efficientdet_lite2-86c5d55b.pth", 35.9), "lite3": ("tf_efficientdet_lite3-506852cb.pth", 39.6),
    "lite3x": ("tf_efficientdet_lite3x-8404c57b.pth", 43.6), "lite4": ("tf_efficientdet_lite4-391ddabc.pth", 44.2),
}
_EFFDET_ADVPROP = {
    "d0": ("tf_efficientdet_d0_ap-d0cdbd0a.pth", 34.8), "d1": ("tf_efficientdet_d1_ap-7721d075.pth", 40.8),
    "d2": ("tf_efficientdet_d2_ap-a2995c19.pth", 44.2), "d3": ("tf_efficientdet_d3_ap-e4a2feab.pth", 47.7),
    "d4": ("tf_efficientdet_d4_ap-f601a5fc.pth", 50.2), "d5": ("tf_efficientdet_d5_ap-3673ae5d.pth", 52.1),
}
# Det-AdvProp's input: pixels scaled to [-1, 1]. (Its TF input pipeline pads with raw 0 before that
# scaling, i.e. -1; ours pads the normalised image with 0 — a difference in the padding strip only.)
_ADVPROP_PREPROCESS = PreprocessConfig(mean=(127.5,) * 3, std=(127.5,) * 3)


def _entries() -> tuple[Entry, ...]:
    rows = []
    for short, ap in _COCO2_AP.items():
        rows.append(_official(f"efficientdet-{short}", "coco", "coco2", f"efficientdet-{short}.tar.gz", ap,
                              f"{AUTOML_README}, AP val"))
    for short, ap in _LITE_AP.items():
        rows.append(_official(f"efficientdet-{short}", "coco", "coco", f"efficientdet-{short}.tgz", ap,
                              f"{AUTOML_README}, mAP (float)"))
    for short, ap in _ADVPROP_AP.items():
        rows.append(_official(f"efficientdet-{short}", "advprop", "advprop", f"efficientdet-{short}.tar.gz", ap,
                              f"{ADVPROP_README}, AP val", preprocess=_ADVPROP_PREPROCESS))
    for short, ap in _COCO640_AP.items():
        rows.append(_official(f"efficientdet-{short}", "coco640", "coco640", f"efficientdet-{short}-640.tar.gz", ap,
                              f"{AUTOML_README}, 640x640 table mAP", image_size=640))
    for short, (filename, ap) in _EFFDET.items():
        rows.append(_effdet(f"efficientdet-{short}", "coco:effdet", filename, ap))
    for short, (filename, ap) in _EFFDET_ADVPROP.items():
        entry = _effdet(f"efficientdet-{short}", "advprop:effdet", filename, ap)
        rows.append(Entry(**{**entry.__dict__, "overrides": {"preprocess": _ADVPROP_PREPROCESS}}))
    return tuple(rows)


ENTRIES: tuple[Entry, ...] = _entries()
_BY_NAME = {e.name: e for e in ENTRIES}
TAGS = tuple(dict.fromkeys(e.tag for e in ENTRIES))


def is_weights_name(text: str) -> bool:
    """Whether ``text`` reads as a zoo name (``coco``, ``coco:effdet``, ``efficientdet-d0:advprop``)
    rather than a path. A tag alone or a variant-prefixed name counts even when unknown, so that a
    misspelt one gets the list of valid names instead of "no such file"."""
    variant, _, tag = text.partition(":")
    return text in TAGS or variant in list_models() or (tag != "" and "/" not in text and "." not in variant)


def find(name: str, variant: str | None = None) -> Entry:
    """The entry of ``VARIANT[:TAG]``, or of ``TAG`` for ``variant``; ValueError listing the valid
    names otherwise."""
    if name in TAGS or (variant is not None and name.partition(":")[0] not in list_models()):
        if variant is None:
            raise ValueError(f"weights {name!r} need a model: give VARIANT:{name}, e.g. efficientdet-d0:{name}")
        full = f"{variant}:{name}"
    else:
        full = name if ":" in name else f"{name}:{DEFAULT_TAG}"
    if full not in _BY_NAME:
        model = full.partition(":")[0]
        valid = [e.name for e in ENTRIES if e.variant == model]
        if valid:
            raise ValueError(f"unknown weights {full!r}; valid names for {model}: {', '.join(valid)}")
        raise ValueError(f"unknown weights {full!r}; names are VARIANT[:TAG], VARIANT one of {', '.join(list_models())}, "
                         f"TAG one of {', '.join(TAGS)} (`efficientdet weights list` shows them all)")
    entry = _BY_NAME[full]
    if variant is not None and entry.variant != variant:
        raise ValueError(f"weights {full!r} are for {entry.variant}, not {variant}")
    return entry
