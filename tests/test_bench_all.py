"""``minideepseek bench all``: one call runs every benchmark and writes one markdown report."""

import importlib
import time

import pytest

from minideepseek.bench import all as bench_all
from minideepseek.cli import main


def test_report_layout_and_a_failing_benchmark(tmp_path, monkeypatch, capsys):
    calls = []
    for name in bench_all.BENCHMARKS:
        module = importlib.import_module(f"minideepseek.bench.{name}")

        def fake(device="auto", *, quick=False, _name=name, **options):
            calls.append((_name, device, quick, options))
            if _name == "load":
                raise RuntimeError("disk full")
            return f"table of {_name}"
        monkeypatch.setattr(module, "run", fake)
    monkeypatch.setattr(bench_all, "plan_vs_measured", lambda device, quick: "plan table")
    main(["bench", "all", "--device", "cpu", "--quick", "--out", str(tmp_path / "out")])
    assert "report.md written" in capsys.readouterr().out
    report = (tmp_path / "out" / "report.md").read_text()
    assert [c[0] for c in calls] == list(bench_all.BENCHMARKS)
    assert all(c[1] == "cpu" and c[2] for c in calls)
    assert calls[0][3] == bench_all.QUICK_CPU_OPTIONS["moe"]
    assert report.startswith("# minideepseek benchmark report")
    assert "device: CPU" in report and "torch " in report and "wall time" in report
    for name in bench_all.BENCHMARKS:
        assert f"## bench {name}" in report
    assert "table of moe" in report and "FAILED: RuntimeError: disk full" in report
    assert "## plan vs measured memory" in report and "plan table" in report


@pytest.mark.slow
def test_quick_cpu_report_under_three_minutes(tmp_path):
    pytest.importorskip("transformers")
    started = time.perf_counter()
    bench_all.run("cpu", quick=True, out=tmp_path)
    seconds = time.perf_counter() - started
    report = (tmp_path / "report.md").read_text()
    assert "FAILED" not in report, report
    assert seconds < 180, f"bench all --device cpu --quick took {seconds:.0f} s"
