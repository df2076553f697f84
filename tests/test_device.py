"""The device policy (minideepseek/device.py) and the "auto" fast paths (speed.auto_paths), on the CPU:
CUDA and MPS are simulated by monkeypatching what torch reports."""

import pytest
import torch

from minideepseek import device as dev
from minideepseek.speed import auto_paths, configure_speed


@pytest.fixture
def machine(monkeypatch):
    def set_machine(cuda=False, mps=False, macos14=True, bf16=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: macos14)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    return set_machine


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"),
                                                 (True, False, "cuda")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert dev.resolve_device("auto").type == expected


def test_missing_devices_are_errors(machine):
    machine(cuda=False, mps=False)
    for name in ("cuda", "cuda:1", "mps"):
        with pytest.raises(dev.DeviceError, match="--device cpu"):
            dev.resolve_device(name)
    with pytest.raises(dev.DeviceError, match="unknown device"):
        dev.resolve_device("tpu")
    assert dev.resolve_device("cpu") == torch.device("cpu")
    machine(cuda=False, mps=True)
    assert dev.resolve_device("mps").type == "mps"
    assert set(dev.DEVICES) == {"auto", "cpu", "cuda", "mps"}


def test_precision_policy(machine, monkeypatch):
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert dev.autocast_dtype(cpu) is None and dev.inference_dtype(cpu) == torch.float32
    machine(cuda=True, bf16=True)
    assert dev.autocast_dtype(cuda) == torch.bfloat16 and dev.inference_dtype(cuda) == torch.bfloat16
    machine(cuda=True, bf16=False)  # e.g. a V100: fp32
    assert dev.autocast_dtype(cuda) is None and dev.inference_dtype(cuda) == torch.float32
    machine(mps=True, macos14=True)
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    assert dev.autocast_dtype(mps) == torch.bfloat16
    machine(mps=True, macos14=False)  # macOS 13: no bf16 on MPS
    assert dev.autocast_dtype(mps) is None
    machine(mps=True, macos14=True)
    monkeypatch.setattr(torch, "__version__", "2.5.1")  # older torch: fp32 on MPS
    assert dev.autocast_dtype(mps) is None and dev.inference_dtype(mps) == torch.float32


def test_cpu_calls_are_guarded():
    cpu = torch.device("cpu")
    dev.synchronize(cpu)
    dev.reset_peak_memory(cpu)
    assert dev.peak_memory(cpu) > 10 * 2**20  # the resident set: at least the interpreter with torch
    with dev.autocast(cpu):
        assert not torch.is_autocast_enabled("cpu")


def test_auto_fast_paths(monkeypatch):
    assert auto_paths("cuda") == ("sdpa", "grouped")
    assert auto_paths("mps") == ("sdpa", "loop")
    monkeypatch.setattr(torch, "__version__", "2.8.0")
    assert auto_paths("cpu") == ("sdpa", "loop")  # no CPU grouped kernel before torch 2.9
    monkeypatch.setattr(torch, "__version__", "2.13.0")
    assert auto_paths("cpu") == ("sdpa", "grouped")
    from minideepseek import ModelConfig, Transformer
    model = configure_speed(Transformer(ModelConfig.from_preset("tiny")), "auto", device="mps")
    assert {m.experts_impl for m in model.modules() if hasattr(m, "experts_impl")} == {"loop"}
    assert {m.backend for m in model.modules() if hasattr(m, "backend") and hasattr(m, "wkv_b")} == {"sdpa"}
