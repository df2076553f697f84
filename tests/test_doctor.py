"""``minideepseek doctor``: one OK/FAIL line per check, exit status 1 only for a too-old Python or torch."""

import re

import pytest
import torch

from minideepseek import doctor
from minideepseek.cli import main

LINE = re.compile(r"^(OK  |FAIL)  \S")


def test_doctor_prints_one_ok_or_fail_line_per_check(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["doctor", "--skip-compile"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines
    names = [line[6:28].strip() for line in lines]
    for expected in ["Python", "PyTorch", "CUDA GPU", "bfloat16", "FP8 weights", "FP8 matmul", "torch.compile",
                     "extra [dev]", "extra [docs]"]:
        assert expected in names
    by_name = dict(zip(names, lines))
    assert by_name["Python"].startswith("OK") and by_name["PyTorch"].startswith("OK")
    assert torch.__version__ in by_name["PyTorch"]
    assert by_name["CUDA GPU"].startswith("OK" if torch.cuda.is_available() else "FAIL")
    assert by_name["FP8 weights"].startswith("OK")  # casts to float8_e4m3fn work on any torch >= 2.1


def test_a_failing_probe_is_a_fail_line_with_the_reason(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    check = doctor.compile_check()
    assert not check.ok
    assert check.line().startswith("FAIL") and "RuntimeError: no C++ compiler found" in check.line()


def test_required_checks_set_the_exit_status(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "MIN_TORCH", doctor.Version("99.0"))
    assert doctor.doctor(skip_compile=True) == 1
    assert "FAIL  PyTorch" in capsys.readouterr().out


def test_missing_extra_is_named(monkeypatch):
    real_version = doctor.importlib.metadata.version

    def version(name):
        if name == "mkdocs":
            raise doctor.importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(doctor.importlib.metadata, "version", version)
    docs = {c.name: c for c in doctor.extras_checks()}["extra [docs]"]
    assert not docs.ok and "mkdocs (not installed)" in docs.detail and '".[docs]"' in docs.detail
