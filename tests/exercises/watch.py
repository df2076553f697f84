"""Watch what a graded function builds, not only what it returns.

* ``TensorWatch`` records the shape of every tensor that any torch function (``einsum``, ``@``,
  ``F.linear``, ``.contiguous``, ...) produces while the student's code runs. The absorption
  tests of chapters 03 and 09 use it to reject an implementation that materialises per-head keys
  or values for the cached tokens, even when its numbers are right.
* ``Float8CastWatch`` checks every conversion to a float8 dtype: the values converted must already
  be finite and within the format's range. Chapter 10 uses it to require the clamp before the cast
  (torch's own cast saturates or gives NaN depending on the version, so the output alone cannot tell).
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

FLOAT8 = {torch.float8_e4m3fn, torch.float8_e5m2}


def _tensors(value) -> list[torch.Tensor]:
    return [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]


class TensorWatch(TorchFunctionMode):
    """Records (function name, shape) of every tensor produced inside the ``with`` block."""

    def __init__(self):
        super().__init__()
        self.produced: list[tuple[str, tuple[int, ...]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", str(func))
        self.produced.extend((name, tuple(t.shape)) for t in _tensors(out))
        return out

    def offending(self, cached_len: int, head_dims: set[int]) -> list[tuple[str, tuple[int, ...]]]:
        """Tensors that hold a per-head key or value for every cached token.

        A tensor is one when it has a dimension in ``head_dims`` (the per-head key or value width, or a
        multiple of it by the number of heads) and at least ``cached_len`` times that many elements: the
        keys (or values) of one head for the whole cache, whatever the layout.
        """
        found = []
        for name, shape in self.produced:
            numel = 1
            for d in shape:
                numel *= d
            if any(d in head_dims and numel >= cached_len * d for d in shape):
                found.append((name, shape))
        return found


class Float8CastWatch(TorchFunctionMode):
    """Fails on any conversion to float8 of values that are not finite or lie outside the format's range."""

    def __init__(self):
        super().__init__()
        self.casts = 0
        self.largest = 0.0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        targets = [t for t in _tensors(out) if t.dtype in FLOAT8]
        name = getattr(func, "__name__", "")
        in_place = name == "__setitem__" or (name.endswith("_") and not name.startswith("_"))
        if in_place and args and isinstance(args[0], torch.Tensor) and args[0].dtype in FLOAT8:
            targets.append(args[0])  # copy_, __setitem__, fill_ into a float8 tensor
        if targets:
            fmax = min(torch.finfo(t.dtype).max for t in targets)
            for source in _tensors((args, kwargs)):
                if source.dtype in FLOAT8 or not source.is_floating_point() or source.numel() == 0:
                    continue
                self.casts += 1
                values = source.detach().double()
                self.largest = max(self.largest, values.abs().max().item())
                if not torch.isfinite(values).all() or values.abs().max() > fmax:
                    raise AssertionError(f"{getattr(func, '__name__', func)} converts values up to "
                                         f"{values.abs().max().item()!r} to float8 (largest finite value {fmax}): "
                                         "clamp to the format's range before the cast")
        return out
