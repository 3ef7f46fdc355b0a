"""The weights cache: fetch a zoo entry once, verify it, convert it to our ``.safetensors``, keep that.

* Where: ``$EFFICIENTDET_HOME/weights`` (default ``$XDG_CACHE_HOME/efficientdet``, i.e.
  ``~/.cache/efficientdet``), one file per entry, ``efficientdet-d0_coco.safetensors``; nothing
  else is kept (the archive is unpacked and converted in a temporary folder beside it).
* From where: the entry's URL, or ``$EFFICIENTDET_WEIGHTS_MIRROR`` — an ``http(s)://`` base or a
  local folder holding the files under their original names (``efficientdet-d0.tar.gz``,
  ``tf_efficientdet_d0_34-f153e0cf.pth`` ...). ``EFFICIENTDET_OFFLINE=1`` never touches the network.
* Safely: one process fetches while the others (DDP ranks, parallel jobs) wait on a file lock and
  then find the entry made; the transfer is bounded in size and time (:mod:`.download`); a
  published sha256 prefix is checked; an official archive, which has none, is unpacked with
  checks (:mod:`.archive`), every tensor read with its CRC32C and every name and shape matched to
  the variant; the result is written atomically, so an interrupted run leaves no entry and the
  previous one (if any) stays intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from ..config import get_config, override
from ..model import EfficientDet
from .archive import unpack
from .download import DownloadError, fetch_to
from .errors import WeightsError
from .zoo import ENTRIES, OFFICIAL, PARAMS, Entry, find, is_weights_name

ENV_HOME, ENV_OFFLINE, ENV_MIRROR = "EFFICIENTDET_HOME", "EFFICIENTDET_OFFLINE", "EFFICIENTDET_WEIGHTS_MIRROR"
PARTIAL = ".partial-"
# Transfer deadline: a fixed allowance plus the ceiling at a slow link's pace.
DEADLINE_BASE_S, SLOW_LINK_BYTES_PER_S = 120.0, 256 * 1024


def cache_dir() -> Path:
    """The folder cached weights live in (not created here)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser() / "weights"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "efficientdet" / "weights"


def cached_path(entry: Entry) -> Path:
    return cache_dir() / f"{entry.variant}_{entry.tag.replace(':', '_')}.safetensors"


def is_offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def source_of(entry: Entry) -> str:
    """Where ``entry`` is fetched from: the mirror when one is set, else its own URL."""
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if not mirror:
        return entry.url
    if mirror.startswith(("http://", "https://")):
        return f"{mirror.rstrip('/')}/{entry.filename}"
    return str(Path(mirror).expanduser() / entry.filename)


def max_bytes(entry: Entry) -> int:
    """The most an entry's file (and an archive's unpacked content) may weigh: float32 weights
    times the copies it may hold — an official checkpoint its raw and EMA values and optimiser
    slots, an effdet training checkpoint its weights and EMA — plus room for the rest."""
    copies, slack = (4, 64 << 20) if entry.kind == OFFICIAL else (2, 16 << 20)
    return copies * 4 * PARAMS[entry.variant] + slack


def resolve(weights: str | os.PathLike, variant: str) -> tuple[str | os.PathLike, dict]:
    """``weights`` as something :func:`~efficientdet.weights.read_weights` opens, and the config
    fields the weights were trained with: a zoo name (``coco``, ``coco:effdet``,
    ``efficientdet-d0:advprop``) becomes its cached file (fetched when missing); a path stays."""
    text = str(weights)
    if Path(text).exists() or Path(f"{text}.index").exists() or not is_weights_name(text):
        return weights, {}
    entry = find(text, variant)
    return fetch(entry), dict(entry.overrides)


def fetch(entry: Entry, progress: bool = True) -> Path:
    """The cached file of ``entry``, fetched, verified and converted first when missing."""
    dest = cached_path(entry)
    if dest.is_file():
        return dest
    if is_offline():
        raise WeightsError(_missing(entry, f"{ENV_OFFLINE} is set and it is not in the cache; its file is "
                                          f"{source_of(entry)}"))
    folder = _make_folder(dest.parent)
    deadline = DEADLINE_BASE_S + max_bytes(entry) / SLOW_LINK_BYTES_PER_S
    try:
        # The holder may be converting D7x after a slow download: wait as long as that may take.
        with FileLock(folder / f".{dest.name}.lock", timeout=3 * deadline):
            if dest.is_file():  # another process made it while this one waited
                return dest
            _remove_partials(folder, dest.name)
            _make(entry, dest, deadline, progress)
    except Timeout:
        raise WeightsError(f"{entry.name}: another process has held the lock on {dest} for over "
                           f"{3 * deadline:.0f} s; remove {folder}/.{dest.name}.lock if none runs") from None
    except DownloadError as e:
        raise WeightsError(_missing(entry, str(e))) from None
    return dest


def _missing(entry: Entry, why: str) -> str:
    """One line: the model, the URL (in ``why``), the cache path and the two ways out."""
    return (f"{entry.name}: {why}; cache entry {cached_path(entry)}; either run "
            f"`efficientdet weights download {entry.name}` on a connected machine and copy its cache folder "
            f"here, or pass --weights PATH to a local file")


def _make_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, f"cannot create the weights cache {folder} ({e.strerror}); set {ENV_HOME} "
                               f"to a writable folder") from None
    return folder


def _remove_partials(folder: Path, name: str) -> None:
    """Leftovers of a fetch that was killed (the lock is held: none is running)."""
    for stale in folder.glob(f".{name}{PARTIAL}*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _make(entry: Entry, dest: Path, deadline: float, progress: bool) -> None:
    source, limit = source_of(entry), max_bytes(entry)
    try:
        work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}{PARTIAL}"))
    except OSError as e:
        raise OSError(e.errno, f"cannot write into the weights cache {dest.parent} ({e.strerror})") from None
    try:
        got = fetch_to(source, work / entry.filename, limit, deadline, progress)
        if entry.sha256_prefix and not got.sha256.startswith(entry.sha256_prefix):
            raise WeightsError(f"{source}: sha256 {got.sha256[:16]}… does not start with the published "
                               f"{entry.sha256_prefix}; the file is not {entry.filename} (left out of the cache)")
        model = EfficientDet(override(get_config(entry.variant), **entry.overrides))
        model.load_state_dict(_read(entry, got.path, work, limit, source, model))
        from . import save_safetensors

        save_safetensors(model, dest, source=source, extra={
            "weights": entry.name, "file": entry.filename, "file_sha256": got.sha256,
            "coco_ap": str(entry.coco_ap), "ap_source": entry.ap_source})
    except OSError as e:
        raise OSError(e.errno, f"cannot write {dest} ({e.strerror or e}); nothing was kept") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read(entry: Entry, path: Path, work: Path, limit: int, source: str,
          model: EfficientDet) -> dict[str, torch.Tensor]:
    """The fetched file as a state dict for ``model``, every check failing with ``source`` named."""
    if entry.kind != OFFICIAL:
        from .effdet import convert_effdet, load_effdet_file

        try:
            return convert_effdet(model, load_effdet_file(path), what=source)
        except WeightsError as e:
            raise WeightsError(str(e).replace(str(path), source)) from None
    from . import read_official
    from .tf_checkpoint import TFCheckpoint

    folder = unpack(path, work / "unpacked", entry.archive_folder, limit, source)
    path.unlink()  # the archive is not needed any more: keep the peak disk use at one copy
    try:
        ckpt = TFCheckpoint(folder)
        for name in ckpt.keys():  # every tensor, each checked against its CRC32C
            ckpt.read(name)
        _check_backbone(ckpt.keys(), entry.variant, source)
        return read_official(model, folder, what=source)
    except WeightsError as e:  # errors name the temporary folder: name the archive's own instead
        message = str(e).replace(str(folder), entry.archive_folder)
        raise WeightsError(message if message.startswith(source) else f"{source}: {message}") from None


def _check_backbone(names: list[str], variant: str, source: str) -> None:
    """Another variant's checkpoint is named as such, rather than by its first missing tensor."""
    expected = get_config(variant).backbone.name
    scopes = sorted({n.split("/", 1)[0] for n in names if n.startswith("efficientnet-")})
    if scopes and expected not in scopes:
        raise WeightsError(f"{source}: holds another variant's checkpoint (backbone {', '.join(scopes)}; "
                           f"{variant} has {expected})")


def cached_entries() -> list[tuple[Entry, Path]]:
    return [(e, cached_path(e)) for e in ENTRIES if cached_path(e).is_file()]


def remove(entry: Entry) -> bool:
    """Delete ``entry``'s cached file; False when it was not cached."""
    path = cached_path(entry)
    if not path.is_file():
        return False
    path.unlink()
    return True


def verify(entry: Entry) -> str:
    """Re-check a cached file: its metadata names ``entry`` and every tensor loads into the variant
    (names and shapes both ways). Returns what was checked; raises WeightsError otherwise."""
    from . import read_own_metadata, read_safetensors

    path = cached_path(entry)
    meta = read_own_metadata(path)
    if meta.get("weights") != entry.name:
        raise WeightsError(f"{path}: holds {meta.get('weights') or 'weights of unknown origin'}, not {entry.name}")
    model = EfficientDet(override(get_config(entry.variant), **entry.overrides))
    model.load_state_dict(read_safetensors(model, path))
    return f"{entry.name}: {path} ({path.stat().st_size:,} bytes) loads into {entry.variant}"

