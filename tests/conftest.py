"""Test tiers: the default run is CPU-only and fast; ``gpu``/``fp8`` tests skip with a reason.

Exercise grading: ``pytest tests/exercises --student`` grades the student files
(``chapters/NN_name/exercise.py``) instead of the reference solutions;
``--student-dir DIR`` grades files elsewhere (``DIR/NN_name/exercise.py`` or ``DIR/NN_name.py``).
"""

import pytest
import torch

# The suite's models and matrices are tiny: more intra-op threads only add OpenMP contention (each
# `pytest -n 2` worker already has a core), and one thread makes a seeded run give the same numbers
# on every machine with the same torch.
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
