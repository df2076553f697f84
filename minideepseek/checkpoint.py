"""Load, check and write DeepSeek-V3 checkpoints in the published formats.

The published DeepSeek-V3 / R1 weights are 163 safetensors files (685B parameters, mostly FP8).
This module reads them, or any checkpoint in the same format, into our ``Transformer``:

* ``load_pretrained(path)`` reads ``config.json`` (hub or official form) and the weights from
  ``model.safetensors``, a sharded ``model.safetensors.index.json`` + shards, or the official
  ``model{rank}-mp{world}.safetensors`` files; it dequantises FP8 weights block by block and
  materialises the model one tensor at a time, so memory peaks near the model's own size;
* ``verify_checkpoint(path)`` reads only the safetensors *headers* and checks every tensor's
  name, shape and dtype against the config (seconds for the 685B checkpoint);
* ``save_pretrained(model, path, format="hf" | "official")`` writes the same formats, optionally
  quantised to FP8 like the release; ``convert_checkpoint`` rewrites a checkpoint from one format
  into the other without rounding its FP8 bytes.

Weights are read from safetensors only, never unpickled: a ``.bin``/``.pt`` file can run code.
Which tensors each format holds, and their names, is ``checkpoint_names.py``.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that follows),
then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from torch.overrides import TorchFunctionMode
from tqdm import tqdm

from .checkpoint_names import (
    COPY, FP32, LINEAR, PLAIN, SCALE, TensorSpec, hub_layout, hub_scale_name, model_layout, official_layout,
    official_scale_name,
)
from .config import ModelConfig
from .fp8 import dequantize_blockwise, quantize_blockwise
from .model import Transformer
from .runfolder import atomic_path, check_destination, read_json, write_json
from .validation import UserError, is_integer


class CheckpointError(UserError):
    """A checkpoint that does not match its config or its format. The message names the tensors and files."""


# safetensors dtype names <-> torch dtypes
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
FLOATS = {"F32", "BF16", "F16"}  # what an unquantised weight may be stored as
FP8 = "F8_E4M3"
HUB_INDEX = "model.safetensors.index.json"
HUB_SINGLE = "model.safetensors"
OFFICIAL_FILE = re.compile(r"model(\d+)-mp(\d+)\.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_MAX_HEADER = 200 * 2**20  # the 671B checkpoint's largest header is ~100 kB


# ============================================================================ safetensors headers
def nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of safetensors ``dtype`` and ``shape``."""
    return math.prod(shape) * DTYPES[dtype].itemsize


@dataclass(frozen=True)
class TensorInfo:
    """What a safetensors header says about one tensor (nothing of its data)."""

    dtype: str
    shape: tuple[int, ...]
    file: Path
    nbytes: int
    offsets: tuple[int, int] = (0, 0)  # [begin, end) in the data after the header


# --8<-- [start:read_header]
def read_header(file: str | Path) -> dict[str, TensorInfo]:
    """The tensors a safetensors file holds, from its header alone (no tensor data is read).

    Raises CheckpointError unless the file is what the safetensors library will load: a header that
    is a JSON object of well-formed entries, and tensor data that covers the rest of the file exactly,
    in order (each tensor starting where the previous one ends: no overlap, no gap, no cut).
    """
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file}: not a regular file")
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{file}: not a safetensors file (shorter than the 8-byte header length)")
        (length,) = struct.unpack("<Q", prefix)  # little-endian unsigned 64-bit
        if length > _MAX_HEADER:
            raise CheckpointError(f"{file}: not a safetensors file (header length {length} is implausible)")
        raw = f.read(length)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise CheckpointError(f"{file}: safetensors header is not valid JSON ({error})") from None
        data_size = os.fstat(f.fileno()).st_size - 8 - length
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: the safetensors header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{file}: __metadata__ must map names to strings")
    tensors = {name: _tensor_info(file, name, entry, data_size) for name, entry in header.items()}
    _check_coverage(file, tensors, data_size)
    return tensors
# --8<-- [end:read_header]


def _tensor_info(file: Path, name: str, entry, data_size: int) -> TensorInfo:
    """One header entry, checked: ``{"dtype": known, "shape": [ints >= 0], "data_offsets": [begin, end]}``."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise CheckpointError(f"{file}: tensor {name}: expected an object with dtype, shape and data_offsets, "
                              f"got {str(entry)[:80]}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{file}: tensor {name} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(is_integer(n) and n >= 0 for n in shape):
        raise CheckpointError(f"{file}: tensor {name} has shape {shape!r}; expected a list of integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_integer(n) for n in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{file}: tensor {name} has data_offsets {offsets!r}; expected [begin, end] "
                              "with 0 <= begin <= end")
    begin, end = offsets
    info = TensorInfo(dtype, tuple(shape), file, nbytes(dtype, tuple(shape)), (begin, end))
    if end - begin != info.nbytes:
        raise CheckpointError(f"{file}: tensor {name} {dtype}{list(shape)} needs {info.nbytes} bytes, "
                              f"its header gives it {end - begin}")
    if end > data_size:
        raise CheckpointError(f"{file}: truncated: tensor {name} ends at byte {end} of the data, but the file "
                              f"holds only {data_size} bytes of data")
    return info


def _check_coverage(file: Path, tensors: dict[str, TensorInfo], data_size: int) -> None:
    """The tensors, sorted by offset, must tile the data from byte 0 to the end of the file."""
    position = 0
    for name, info in sorted(tensors.items(), key=lambda item: item[1].offsets):
        begin, end = info.offsets
        if begin != position:
            where = "overlaps the tensor before it" if begin < position else f"leaves bytes {position}..{begin} unused"
            raise CheckpointError(f"{file}: tensor {name} (data bytes {begin}..{end}) {where}")
        position = end
    if position != data_size:
        raise CheckpointError(f"{file}: {data_size - position} bytes after the last tensor belong to no tensor")


@dataclass(frozen=True)
class _Entry:
    """One tensor to write: its name, safetensors dtype, shape, and a function that produces it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    produce: Callable[[], torch.Tensor] | None = None


def _write_safetensors(file: Path, entries: list[_Entry], with_data: bool = True) -> None:
    """Write one safetensors file atomically, producing one tensor at a time (memory: the largest tensor).

    With ``with_data=False`` only the header is written and the file is extended to its full size
    as a sparse file: a skeleton that ``read_header``/``verify`` accept, with no data behind it.
    """
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for entry in entries:
        size = nbytes(entry.dtype, entry.shape)
        header[entry.name] = {"dtype": entry.dtype, "shape": list(entry.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # pad like the reference implementation, so the data is 8-aligned
    with atomic_path(file) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        if with_data:
            for entry in entries:
                source = entry.produce().detach()
                tensor = source.to("cpu", DTYPES[entry.dtype]).contiguous()
                if entry.dtype in FLOATS and not torch.isfinite(tensor).all() and torch.isfinite(source).all():
                    raise CheckpointError(f"{entry.name}: values beyond the range of {entry.dtype} (largest "
                                          f"{torch.finfo(tensor.dtype).max:g}) would be stored as inf; choose a "
                                          "wider dtype (bf16 or fp32)")
                if tuple(tensor.shape) != entry.shape:
                    raise RuntimeError(f"{entry.name}: produced shape {tuple(tensor.shape)}, expected {entry.shape}")
                f.write(tensor.view(-1).view(torch.uint8).numpy().tobytes())
        else:
            f.truncate(8 + len(encoded) + offset)


def _write_sharded(directory: Path, entries: list[_Entry], shard_size: int, with_data: bool = True,
                   progress: bool = False) -> list[str]:
    """Write entries as ``model.safetensors`` or as shards + ``model.safetensors.index.json``; return file names."""
    shards: list[list[_Entry]] = [[]]
    size = total = 0
    for entry in entries:
        entry_size = nbytes(entry.dtype, entry.shape)
        if shards[-1] and size + entry_size > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry_size
        total += entry_size
    if len(shards) == 1:
        names = [HUB_SINGLE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in tqdm(list(zip(names, shards)), desc="writing", unit="file", disable=not progress):
        _write_safetensors(directory / name, shard, with_data)
    if len(shards) > 1:
        index = {"metadata": {"total_size": total},
                 "weight_map": {e.name: name for name, shard in zip(names, shards) for e in shard}}
        write_json(directory / HUB_INDEX, index, indent=2)
    return names + ([HUB_INDEX] if len(shards) > 1 else [])


def parse_size(size: int | str) -> int:
    """Bytes from ``5000000``, ``"5GB"``, ``"500MB"`` or ``"2GiB"``."""
    if is_integer(size) and size >= 0:
        return size
    if not isinstance(size, str):
        raise CheckpointError(f"a size must be a number of bytes >= 0 or a string like 5GB, got {size!r}")
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?)B?\s*", size, flags=re.IGNORECASE)
    if not match:
        raise CheckpointError(f"cannot read a size from {size!r}; write e.g. 5GB, 500MB or 2GiB")
    base = 1024 if match.group(3) else 1000
    return int(float(match.group(1)) * base ** " KMGT".index(match.group(2).upper() or " "))


# ============================================================================ finding the files
def _find_weight_files(path: Path) -> tuple[str, list[Path], dict[str, str] | None]:
    """(format, files in rank/shard order, hub index weight_map or None). Refuses pickle files."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    if (path / HUB_INDEX).exists():
        index = read_json(path / HUB_INDEX, error=CheckpointError)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{path / HUB_INDEX}: not a valid safetensors index ('weight_map' must map "
                                  "tensor names to file names)")
        # A shard is a file *in* the checkpoint folder: a path ("../../etc/passwd", "/x", "sub/x") could make
        # a downloaded index read any file on this machine.
        outside = sorted({v for v in weight_map.values() if Path(v).name != v or v in ("", ".", "..") or "\\" in v})
        if outside:
            raise CheckpointError(f"{path / HUB_INDEX} names shard files outside the checkpoint folder: "
                                  f"{_listing(outside, 3)}; a shard must be a plain file name")
        files = [path / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.exists()]
        if absent:
            raise CheckpointError(f"{path / HUB_INDEX} lists {len(absent)} shard file(s) that do not exist: "
                                  f"{_listing(absent)}")
        return "hf", files, weight_map
    if (path / HUB_SINGLE).exists():
        return "hf", [path / HUB_SINGLE], None
    official = sorted((int(m[1]), int(m[2]), p) for p in path.iterdir() if (m := OFFICIAL_FILE.fullmatch(p.name)))
    if official:
        worlds = {world for _, world, _ in official}
        if len(worlds) > 1:
            raise CheckpointError(f"{path}: official files of several model-parallel sizes {sorted(worlds)}")
        world = worlds.pop()
        ranks = [rank for rank, _, _ in official]
        if ranks != list(range(world)):
            absent = sorted(set(range(world)) - set(ranks))
            raise CheckpointError(f"{path}: official checkpoint for {world} ranks lacks "
                                  f"{', '.join(f'model{r}-mp{world}.safetensors' for r in absent)}")
        return "official", [p for _, _, p in official], None
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{path} holds only pickle-based weights ({_listing(pickles)}). minideepseek never "
                              "unpickles a checkpoint (loading a pickle can run arbitrary code); convert it to "
                              "safetensors with a tool you trust first")
    raise CheckpointError(f"{path}: no {HUB_SINGLE}, {HUB_INDEX} or model{{rank}}-mp{{world}}.safetensors files")


def _listing(names: list, limit: int = 20) -> str:
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# ============================================================================ checking
@dataclass
class CheckpointReport:
    """Everything ``verify`` found. ``ok`` when the checkpoint matches its config exactly."""

    path: Path
    format: str
    n_files: int
    n_tensors: int = 0
    n_expected: int = 0
    n_bytes: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # name, expected, found
    wrong_dtype: list[tuple[str, str, str]] = field(default_factory=list)  # name, expected, found
    problems: list[str] = field(default_factory=list)  # everything else, one sentence each

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape or self.wrong_dtype or self.problems)

    def summary(self, limit: int = 20) -> str:
        lines = [f"{self.path}: {self.format} checkpoint, {self.n_files} file(s), {self.n_tensors:,} tensors, "
                 f"{self.n_bytes / 1e9:,.2f} GB of tensor data; the config expects {self.n_expected:,} tensors"]
        if self.ok:
            lines.append("OK: every expected tensor is present with the right shape and dtype, nothing extra")
        if self.missing:
            lines.append(f"{len(self.missing)} missing: {_listing(self.missing, limit)}")
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} unexpected: {_listing(self.unexpected, limit)}")
        for kind, items in (("shape", self.wrong_shape), ("dtype", self.wrong_dtype)):
            if items:
                lines.append(f"{len(items)} with the wrong {kind} (expected vs found):")
                lines += [f"  {name}: {expected} vs {found}" for name, expected, found in items[:limit]]
                lines += [f"  ... ({len(items) - limit} more)"] if len(items) > limit else []
        lines += self.problems[:limit]
        return "\n".join(lines)


def _expected_dtypes(spec: TensorSpec, fp8: bool, strict: bool) -> set[str]:
    """What the release stores a tensor as. ``strict`` (verify) also insists on float32 scales and bias."""
    if spec.role == LINEAR:
        return {FP8} if fp8 else FLOATS
    if spec.role in (SCALE, FP32) and strict:
        return {"F32"}
    return FLOATS


# ============================================================================ reading a checkpoint
class Checkpoint:
    """A checkpoint directory opened for reading: its config, files and tensor headers.

    ``get(name)`` reads one of our parameters (merging official model-parallel slices) as
    (stored tensor, FP8 scale or None). Nothing is read before it is asked for.
    """

    def __init__(self, path: str | Path, config: ModelConfig | str | Path | None = None):
        self.path = Path(path)
        self.format, self.files, self.weight_map = _find_weight_files(self.path)
        self.config = _read_config(self.path, config)
        self.headers = {file: read_header(file) for file in self.files}
        found = [info for header in self.headers.values() for info in header.values()]
        self.fp8 = any(info.dtype == FP8 for info in found)  # what the files hold (the config may say otherwise)
        self.world_size = len(self.files) if self.format == "official" else 1
        self.holders: dict[str, list[Path]] = {}  # tensor name -> the files holding it, in rank order
        for file, header in self.headers.items():
            for name in header:
                self.holders.setdefault(name, []).append(file)
        self._handles: dict[Path, object] = {}
        self._layouts: dict[bool, list] = {}

    # ------------------------------------------------------------------ expected layout
    def layouts(self, fp8: bool) -> list[tuple[str, list[Path], dict[str, TensorSpec]]]:
        """(label, files, expected tensors): one group for a hub checkpoint, one per rank for official files."""
        if fp8 in self._layouts:
            return self._layouts[fp8]
        if self.format == "hf":
            groups = [("the checkpoint", self.files, hub_layout(self.config, fp8))]
        else:
            try:
                ranks = official_layout(self.config, self.world_size, fp8)
            except ValueError as error:
                raise CheckpointError(f"{self.path}: {error}") from None
            groups = [(file.name, [file], layout) for file, layout in zip(self.files, ranks)]
        self._layouts[fp8] = groups
        return groups

    def check(self, strict: bool = False) -> CheckpointReport:
        """Compare names, shapes and dtypes with the config. ``strict``: dtypes as the config's release (verify);
        otherwise whatever loads (FP8 or not, decided by the files)."""
        fp8 = self.config.dtype == "fp8" if strict else self.fp8
        report = CheckpointReport(self.path, self.format, len(self.files))
        for label, files, expected in self.layouts(fp8):
            found: dict[str, TensorInfo] = {}
            for file in files:
                for name, info in self.headers[file].items():
                    if name in found:
                        report.problems.append(f"{name} is stored twice, in {found[name].file.name} and {file.name}")
                    found[name] = info
            report.n_tensors += len(found)
            report.n_expected += len(expected)
            report.n_bytes += sum(info.nbytes for info in found.values())
            where = "" if self.format == "hf" else f"{label}: "
            report.missing += [where + n for n in expected if n not in found]
            report.unexpected += [where + n for n in found if n not in expected]
            for name, spec in expected.items():
                info = found.get(name)
                if info is None:
                    continue
                if info.shape != spec.shape:
                    report.wrong_shape.append((where + name, spec.shape, info.shape))
                allowed = _expected_dtypes(spec, fp8, strict)
                if info.dtype not in allowed:
                    report.wrong_dtype.append((where + name, "|".join(sorted(allowed)), info.dtype))
            report.problems += self._orphan_scales(found, where)
        if self.weight_map is not None:
            report.problems += self._index_problems()
        return report

    def _orphan_scales(self, found: dict[str, TensorInfo], where: str) -> list[str]:
        problems = []
        for name in found:
            for suffix, weight_of in (("weight_scale_inv", "weight"), (".scale", ".weight")):
                if name.endswith(suffix):
                    weight = name.removesuffix(suffix) + weight_of
                    if weight not in found:
                        problems.append(f"{where}scale tensor {name} has no weight {weight}")
                    elif found[weight].dtype != FP8:
                        problems.append(f"{where}scale tensor {name} belongs to {weight}, which is "
                                        f"{found[weight].dtype}, not FP8")
        return problems

    def _index_problems(self) -> list[str]:
        problems = []
        headers = {file.name: header for file, header in self.headers.items()}
        for name, file_name in self.weight_map.items():
            if name not in headers[file_name]:
                problems.append(f"{HUB_INDEX} places {name} in {file_name}, which does not hold it")
        for file, header in self.headers.items():
            unlisted = [n for n in header if self.weight_map.get(n) != file.name]
            if unlisted:
                problems.append(f"{file.name} holds {len(unlisted)} tensor(s) the index does not place there: "
                                f"{_listing(unlisted, 5)}")
        return problems

    # ------------------------------------------------------------------ reading data
    @functools.cached_property
    def sources(self) -> dict[str, tuple[str, str | None, int | None]]:
        """Our parameter name -> (stored name, stored FP8 scale name or None, model-parallel split dim)."""
        sources: dict[str, tuple[str, str | None, int | None]] = {}
        scale_name = hub_scale_name if self.format == "hf" else official_scale_name
        for _, _, expected in self.layouts(self.fp8):
            for name, spec in expected.items():
                if spec.role in (LINEAR, PLAIN, FP32):
                    scale = scale_name(name) if spec.role == LINEAR and self.fp8 else None
                    sources[spec.ours] = (name, scale, spec.split_dim)
        return sources

    def get(self, ours: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One of our parameters as stored: (tensor, FP8 scale or None), model-parallel slices merged."""
        name, scale, split_dim = self.sources[ours]
        return self._read(name, split_dim), (self._read(scale, split_dim) if scale else None)

    def _read(self, name: str, split_dim: int | None) -> torch.Tensor:
        holders = self.holders[name]
        if split_dim is None:  # whole in one rank (a routed expert) or repeated in every rank
            return self._handle(holders[0]).get_tensor(name)
        return torch.cat([self._handle(file).get_tensor(name) for file in holders], dim=split_dim)

    def _handle(self, file: Path):
        if file not in self._handles:
            self._handles[file] = safe_open(file, framework="pt", device="cpu")  # memory-mapped
        return self._handles[file]

    def mtp_copy_differences(self, rows_per_chunk: int = 4096) -> list[str]:
        """Compare each MTP layer's stored embedding/head copy with the main one, a few rows at a time.

        Our MTP modules share the main embedding and head (as the report's MTP does), so the copies
        are not loaded; a copy that differs from the main tensor is reported, never silently dropped.
        """
        if self.format != "hf":
            return []
        differences = []
        for name, spec in self.layouts(self.fp8)[0][2].items():
            if spec.role != COPY:
                continue
            main = self.sources[spec.ours][0]
            copy_slice, main_slice = self._slice(name), self._slice(main)
            worst = 0.0
            for start in range(0, spec.shape[0], rows_per_chunk):
                a = copy_slice[start:start + rows_per_chunk].float()
                b = main_slice[start:start + rows_per_chunk].float()
                if not torch.equal(a, b):
                    worst = max(worst, (a - b).abs().max().item())
            if worst:
                differences.append(f"{name} differs from {main} (max abs difference {worst:.3g}); the MTP module "
                                   f"uses the main tensor {main}")
        return differences

    def _slice(self, name: str):
        return self._handle(self.holders[name][0]).get_slice(name)

    def close(self) -> None:
        self._handles.clear()  # safe_open handles unmap when released

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_config(path: Path, config: ModelConfig | str | Path | None) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    file = Path(config) if config is not None else path / "config.json"
    if not file.exists():
        raise CheckpointError(f"{path}: no config.json; pass config= (a ModelConfig, or a hub or official JSON file)")
    return ModelConfig.from_json(file)


# ============================================================================ verify
def verify_checkpoint(path: str | Path, config: ModelConfig | str | Path | None = None) -> CheckpointReport:
    """Check a checkpoint's tensor names, shapes and dtypes against its config, from the headers only.

    Reads no tensor data, so the 685B checkpoint takes seconds. Also catches truncated files, a
    sharded index that disagrees with its shards, and FP8 scales without their weight.
    """
    with Checkpoint(path, config) as checkpoint:
        return checkpoint.check(strict=True)


# ============================================================================ load
# --8<-- [start:load_pretrained]
def load_pretrained(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                    config: ModelConfig | str | Path | None = None, progress: bool = True,
                    strict: bool = False) -> Transformer:
    """Build a ``Transformer`` from a checkpoint in the hub or the official format, in eval mode.

    path: a directory with ``config.json`` (or pass ``config``) and ``model.safetensors``,
    ``model.safetensors.index.json`` + shards, or ``model{rank}-mp{world}.safetensors``.
    FP8 weights are dequantised (W = Q * S per 128x128 block); every parameter ends up in ``dtype``
    except the router's correction bias, which stays float32. The model is built on the meta device
    (no memory) and each parameter is materialised when its tensor is read, so the peak is about
    the model's own size plus one tensor. Tensors that hold NaN or inf are named in a warning, or,
    with ``strict``, in a CheckpointError.
    """
    non_finite = []
    with Checkpoint(path, config) as checkpoint:
        report = checkpoint.check()
        if not report.ok:
            raise CheckpointError("the checkpoint does not match its config:\n" + report.summary())
        for difference in checkpoint.mtp_copy_differences():
            warnings.warn(difference, stacklevel=2)
        with torch.device("meta"), _SkipInitOnMeta():
            model = Transformer(checkpoint.config)
        specs = model_layout(checkpoint.config)
        for ours in tqdm(specs, desc="loading", unit="tensor", disable=not progress):
            stored, scale = checkpoint.get(ours)
            target = torch.float32 if specs[ours].role == FP32 else dtype
            value = _dequantized(stored, scale, device, target)
            if not torch.isfinite(value).all():
                non_finite.append(ours)
            _set_parameter(model, ours, value)
    if non_finite:
        message = f"{path}: {len(non_finite)} tensor(s) hold NaN or inf: {_listing(non_finite, 5)}"
        if strict:
            raise CheckpointError(message)
        warnings.warn(message, stacklevel=2)
    if checkpoint.config.tie_word_embeddings:
        model.head.weight = model.embed.weight
    _materialize_buffers(model, device)
    return model.eval()


def _dequantized(stored: torch.Tensor, scale: torch.Tensor | None, device, dtype: torch.dtype) -> torch.Tensor:
    stored = stored.to(device)
    if scale is None:
        return stored.to(dtype)
    return dequantize_blockwise(stored, scale.to(device), dtype=dtype)  # W[i, j] = Q[i, j] * S[i//128, j//128]


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace one meta parameter by real data (no copy of the rest of the model)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    old = module._parameters[attr]
    if tuple(old.shape) != tuple(tensor.shape):
        raise CheckpointError(f"{name}: the model expects shape {tuple(old.shape)}, the checkpoint gives "
                              f"{tuple(tensor.shape)}")
    module._parameters[attr] = nn.Parameter(tensor, requires_grad=old.requires_grad)
# --8<-- [end:load_pretrained]


class _SkipInitOnMeta(TorchFunctionMode):
    """Make ``torch.nn.init.*`` a no-op on meta tensors while a model is built there.

    Meta tensors hold no values to fill, yet each fill takes a slow dispatch path: building the
    671B model on meta drops from minutes to seconds without them.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            tensor = kwargs.get("tensor", args[0] if args else None)
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


_ZERO_BUFFERS = {"tokens_per_expert"}  # MoE load counters: start at zero, nothing to load


def _materialize_buffers(model: nn.Module, device) -> None:
    """Create the buffers no checkpoint holds, and check that no parameter was forgotten.

    Built on meta, a buffer has lost the value its constructor computed; only buffers known to start
    at zero are recreated, any other one is an error rather than a silent zero.
    """
    for module_name, module in model.named_modules():
        for name, buffer in module._buffers.items():
            if buffer is None or not buffer.is_meta:
                continue
            if name not in _ZERO_BUFFERS:
                raise RuntimeError(f"load_pretrained cannot recreate buffer {module_name}.{name} built on the meta "
                                   "device; add it to checkpoint._ZERO_BUFFERS if it starts at zero")
            module._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype, device=device)
    left = [name for name, p in model.named_parameters() if p.is_meta and p.numel()]
    if left:
        raise RuntimeError(f"parameters with no tensor in the checkpoint layout: {_listing(left)}")
    for module in model.modules():  # zero-size parameters (e.g. no shared experts) hold nothing to load
        for name, p in module._parameters.items():
            if p is not None and p.is_meta:
                module._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=device),
                                                        requires_grad=p.requires_grad)


# ============================================================================ save and convert
class _ModelTensors:
    """A model as a source of (tensor, scale=None) by our names, like ``Checkpoint.get``."""

    def __init__(self, model: Transformer):
        self.config = model.config
        self.parameters = dict(model.named_parameters(remove_duplicate=False))
        self.fp8 = False

    def get(self, ours: str) -> tuple[torch.Tensor, None]:
        return self.parameters[ours].detach(), None


def save_pretrained(model: Transformer, path: str | Path, format: str = "hf", shard_size: int | str = "5GB",
                    fp8: bool = False, world_size: int = 1, dtype: torch.dtype | None = None,
                    progress: bool = True, overwrite: bool = False) -> list[str]:
    """Write a model as a checkpoint that ``load_pretrained`` and the reference implementations read.

    format "hf": ``config.json`` (hub form) and ``model.safetensors``, or shards of at most
    ``shard_size`` bytes plus ``model.safetensors.index.json``; the MTP modules become layer
    ``n_layers + k`` with the embedding/head copies, as published. transformers'
    ``DeepseekV3ForCausalLM.from_pretrained`` loads it. format "official": ``config.json``
    (official form) and ``model{rank}-mp{world_size}.safetensors``, as ``inference/convert.py``
    writes them (MTP dropped, as there). ``fp8`` quantises every attention/FFN projection to
    float8_e4m3fn with 128x128 block scales, like the release; ``dtype`` is the storage dtype of
    the other float tensors (default: the model's). Returns the names of the files written.

    The folder is written complete-or-absent: built beside ``path`` and moved into place at the end.
    A ``path`` that already holds files is refused unless ``overwrite``, which replaces it whole.
    """
    return _write_checkpoint(_ModelTensors(model), Path(path), format, parse_size(shard_size), fp8, world_size,
                             dtype or model.embed.weight.dtype, progress, overwrite)


def convert_checkpoint(source: str | Path, destination: str | Path, to: str = "hf", dequantize: bool = False,
                       shard_size: int | str = "5GB", world_size: int = 1, dtype: torch.dtype | None = None,
                       config: ModelConfig | str | Path | None = None, progress: bool = True,
                       overwrite: bool = False) -> list[str]:
    """Rewrite a checkpoint in the other format, tensor by tensor, without building a model.

    FP8 weights and their scales are copied byte for byte unless ``dequantize`` (then they become
    ``dtype``, default the checkpoint's float dtype, e.g. BF16). The source is checked first. The
    destination is written as ``save_pretrained`` writes: complete-or-absent, and a folder that holds
    files is refused unless ``overwrite`` (which replaces it whole).
    """
    source, destination = Path(source), Path(destination)
    if destination.resolve() == source.resolve():
        raise CheckpointError(f"convert into a different directory than the source ({source})")
    check_destination(destination, overwrite=overwrite)  # before minutes of reading
    with Checkpoint(source, config) as checkpoint:
        report = checkpoint.check()
        if not report.ok:
            raise CheckpointError("the source checkpoint does not match its config:\n" + report.summary())
        for difference in checkpoint.mtp_copy_differences():
            warnings.warn(difference + "; the converted checkpoint stores the main tensor in both places", stacklevel=2)
        float_dtype = dtype or _stored_float_dtype(checkpoint)
        return _write_checkpoint(checkpoint, destination, to, parse_size(shard_size),
                                 checkpoint.fp8 and not dequantize, world_size, float_dtype, progress, overwrite)


def _stored_float_dtype(checkpoint: Checkpoint) -> torch.dtype:
    embedding = checkpoint.sources["embed.weight"][0]
    return next(DTYPES[h[embedding].dtype] for h in checkpoint.headers.values() if embedding in h)


def _write_checkpoint(source, path: Path, format: str, shard_size: int, fp8: bool, world_size: int,
                      float_dtype: torch.dtype, progress: bool, overwrite: bool = False) -> list[str]:
    if format not in ("hf", "official"):
        raise CheckpointError(f"format must be 'hf' or 'official', got {format!r}")
    if not is_integer(world_size) or world_size < 1:
        raise CheckpointError(f"world_size (--model-parallel) must be a positive integer, got {world_size!r}")
    if format == "hf" and world_size != 1:
        raise CheckpointError("world_size applies to the official format only (the hub format shards by size)")
    config = dataclasses.replace(source.config, dtype="fp8" if fp8 else "bf16")
    if format == "official":
        if config.tie_word_embeddings:
            raise CheckpointError("the official format has no tied embeddings (its code always loads head.weight)")
        if config.n_mtp_layers:
            warnings.warn(f"the official format has no MTP modules: the {config.n_mtp_layers} MTP module(s) are "
                          "not written (inference/convert.py drops them too)", stacklevel=3)
        config = dataclasses.replace(config, n_mtp_layers=0)
        try:
            ranks = official_layout(config, world_size, fp8)
        except ValueError as error:
            raise CheckpointError(f"cannot write official files for {world_size} rank(s): {error}") from None
    path = path.resolve()  # a symlink to a folder: write beside its target, not in place of the link
    check_destination(path, overwrite=overwrite)
    convert = _Converter(source, fp8, float_dtype)
    # Built in a temporary folder beside `path` and swapped in at the end: a crash or a kill leaves the
    # previous folder or the new one, never a mix of shards from two models.
    with atomic_path(path, directory=True) as staging:
        if format == "hf":
            entries = [convert.entry(name, spec, hub_scale_name) for name, spec in hub_layout(config, fp8).items()]
            written = _write_sharded(staging, entries, shard_size, progress=progress)
            write_json(staging / "config.json", {**config.to_hf_dict(), "torch_dtype": _torch_dtype_name(float_dtype)},
                       indent=2)
        else:
            written = []
            for rank, layout in enumerate(tqdm(ranks, desc="writing", unit="rank", disable=not progress)):
                entries = [convert.entry(name, spec, official_scale_name, rank, world_size)
                           for name, spec in layout.items()]
                written.append(f"model{rank}-mp{world_size}.safetensors")
                _write_safetensors(staging / written[-1], entries)
            write_json(staging / "config.json", _official_config(config), indent=2)
    return written + ["config.json"]


class _Converter:
    """Produces each stored tensor in the output representation, one at a time.

    FP8 output: a stored FP8 tensor and its scale are passed through unchanged; a float one is
    quantised (the scale is kept until its entry is written, right after the weight). Float output:
    FP8 is dequantised. Official model-parallel slices are cut last (FP8: slice, then quantise,
    which equals slicing the full quantisation because slices are whole blocks).
    """

    def __init__(self, source, fp8: bool, float_dtype: torch.dtype):
        self.source, self.fp8, self.float_dtype = source, fp8, float_dtype
        self.scale_fmt = source.config.scale_fmt  # "ue8m0" (V3.1): power-of-two scales
        self._pending_scale: dict[str, torch.Tensor] = {}

    def entry(self, name: str, spec: TensorSpec, scale_name: Callable[[str], str], rank: int = 0,
              world_size: int = 1) -> _Entry:
        if spec.role == SCALE:
            return _Entry(name, "F32", spec.shape, lambda: self._pending_scale.pop(spec.ours))
        dtype = FP8 if (spec.role == LINEAR and self.fp8) else "F32" if spec.role == FP32 \
            else DTYPE_NAMES[self.float_dtype]
        return _Entry(name, dtype, spec.shape, lambda: self._produce(spec, rank, world_size))

    def _produce(self, spec: TensorSpec, rank: int, world_size: int) -> torch.Tensor:
        tensor, scale = self.source.get(spec.ours)
        cut = _slicer(spec.split_dim, rank, world_size)
        if spec.role == LINEAR and self.fp8:
            if scale is None:
                tensor, scale = quantize_blockwise(cut(tensor), scale_fmt=self.scale_fmt)
            else:
                tensor, scale = cut(tensor), cut(scale)
            self._pending_scale[spec.ours] = scale
            return tensor
        if scale is not None:
            tensor = dequantize_blockwise(tensor, scale)
        return cut(tensor)


def _slicer(split_dim: int | None, rank: int, world_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    if split_dim is None:
        return lambda t: t
    return lambda t: t.chunk(world_size, dim=split_dim)[rank]


def _torch_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _official_config(config: ModelConfig) -> dict:
    """The official inference JSON: ModelArgs fields only (its code rejects others), plus what it cannot infer."""
    data = config.to_dict()
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    official = {name: data[name] for name in names[:names.index("gate_bias")]
                if config.has_indexer or not name.startswith("index_")}  # V3's ModelArgs has no index_* fields
    if config.gate_bias != (config.score_func == "sigmoid"):  # from_dict's default for official JSON
        official["gate_bias"] = config.gate_bias
    if config.norm_eps != 1e-6:  # fixed in the official code
        official["norm_eps"] = config.norm_eps
    return official


# ============================================================================ skeletons
def release_dtype(spec: TensorSpec, fp8: bool = True) -> str:
    """The safetensors dtype the published checkpoint stores a tensor as."""
    if spec.role == LINEAR and fp8:
        return FP8
    return "F32" if spec.role in (SCALE, FP32) else "BF16"


def write_skeleton(path: str | Path, config: ModelConfig,
                   tensors: dict[str, tuple[str, tuple[int, ...]]] | None = None,
                   shard_size: int | str = "4.25GB") -> list[str]:
    """A hub checkpoint with real headers and no data: every file is sparse (it takes no disk space).

    ``tensors`` maps hub names to (safetensors dtype, shape); the default is the release's layout
    for ``config``, so ``verify`` can be tried on the 671B layout (91,991 tensors) without 685 GB.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if tensors is None:
        fp8 = config.dtype == "fp8"
        tensors = {name: (release_dtype(spec, fp8), spec.shape) for name, spec in hub_layout(config, fp8).items()}
    entries = [_Entry(name, dtype, tuple(shape)) for name, (dtype, shape) in tensors.items()]
    written = _write_sharded(path, entries, parse_size(shard_size), with_data=False)
    write_json(path / "config.json", {**config.to_hf_dict(), "torch_dtype": "bfloat16"}, indent=2)
    return written + ["config.json"]
