"""The one key and shape check that every weight loading goes through (nanoGPT's
``from_pretrained`` loop): each tensor the model needs is found, has the model's shape, and
each tensor of the source has a place in the model, or the error names the file, the tensor
and both shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from .errors import WeightsError


def tensor_dict(obj: object, what: str) -> Mapping[str, torch.Tensor]:
    """``obj`` if it is a ``{str: Tensor}`` mapping, else a WeightsError naming ``what``."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{what}: not a state dict (got a {type(obj).__name__})")
    if not obj:
        raise WeightsError(f"{what}: empty state dict")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(f"{what}: not a state dict: entry {key!r} is a {type(value).__name__}, not a tensor")
    return obj


def remap_state(
    source: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    what: str,
    names: Mapping[str, str] | None = None,
    ignore: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """``{our key: source[names[our key]]}`` for every tensor of ``expected``, checked both ways.

    ``expected`` is the target module's state dict; ``names`` maps its keys to the source's
    (None: the same keys); ``what`` names the source (the file) in errors. ``ignore`` holds key
    prefixes left out on both sides: the model's tensors under one are not returned and keep
    their values (a class head re-initialised for another class count), the source's may go
    unused (an ImageNet classifier). ``num_batches_tracked`` (a training counter) is dropped on
    both sides. Tensors take the target's dtype (e.g. from a half-precision file).

    ``source`` may be lazy: a tensor is read only once it is needed, and where the mapping can
    tell a shape without reading (``source.declared_shape(name)``) a wrong one, however absurd,
    is refused before any data is read.
    """
    ignore = tuple(ignore)
    expected = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    names = {k: k for k in expected} if names is None else names
    unmapped = sorted(set(expected) - set(names))
    if unmapped:  # a module the name map does not know: a bug here, not in the weights
        raise WeightsError(f"{what}: no source name for model tensor(s) {', '.join(unmapped[:5])}")
    state = {key: _take(source, names[key], key, target, what)
             for key, target in expected.items() if not key.startswith(ignore)}
    used = set(names.values())
    extra = sorted(k for k in source if k not in used and not k.endswith("num_batches_tracked")
                   and not k.startswith(ignore))
    if extra:
        raise WeightsError(
            f"{what}: {len(extra)} tensor(s) the model has no place for, e.g. {extra[:3]} "
            f"(wrong variant or number of classes?)"
        )
    return state


def _take(source: Mapping[str, torch.Tensor], name: str, key: str, target: torch.Tensor, what: str) -> torch.Tensor:
    """``source[name]`` for the model's ``key``, its shape checked before and after reading."""
    if name not in source:
        raise WeightsError(f"{what}: missing tensor {name!r} (for the model's {key})")
    declared = getattr(source, "declared_shape", None)
    if declared is not None:
        _check_shape(declared(name), name, key, target, what)
    tensor = source[name]
    _check_shape(tensor.shape, name, key, target, what)
    return tensor.detach().to(target.dtype)


def _check_shape(shape: Iterable[int], name: str, key: str, target: torch.Tensor, what: str) -> None:
    if tuple(shape) != tuple(target.shape):
        raise WeightsError(
            f"{what}: tensor {name!r} has shape {list(shape)}, the model's {key} needs {list(target.shape)}"
        )
