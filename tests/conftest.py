"""Test tiers: the default run is CPU-only and fast; ``gpu``/``fp8`` tests skip with a reason.

Exercise grading: ``pytest tests/exercises --student`` grades the student files
(``chapters/NN_name/exercise.py``) instead of the reference solutions;
``--student-dir DIR`` grades files elsewhere (``DIR/NN_name/exercise.py`` or ``DIR/NN_name.py``).
"""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n 2` each worker already has a core; more OpenMP threads per worker thrash.
    torch.set_num_threads(1)


def pytest_addoption(parser):
    group = parser.getgroup("minideepseek exercises")
    group.addoption("--student", action="store_true", help="grade chapters/*/exercise.py instead of solution.py")
    group.addoption("--student-dir", default=None, help="grade a student's files in this folder")


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    has_fp8 = has_cuda and torch.cuda.get_device_capability() >= (8, 9)
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "fp8" in item.keywords and not has_fp8:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU with compute capability 8.9+ (FP8)"))
