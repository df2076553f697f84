"""`minideepseek info` prints the published numbers."""

import json
import subprocess
import sys

import pytest

from minideepseek.cli import main


def test_info_prints_the_671b_budget(capsys):
    main(["info", "--preset", "v3-671b"])
    out = capsys.readouterr().out
    for number in ["671,026,419,200", "37,552,297,472", "36,625,618,432", "11,610,068,224", "40,960", "576"]:
        assert number in out


def test_info_reads_a_config_file(tmp_path, capsys):
    from tests.test_config import HUB_671B

    path = tmp_path / "config.json"
    path.write_text(json.dumps(HUB_671B))
    main(["info", "--config", str(path)])
    assert "671,026,419,200" in capsys.readouterr().out


def test_bad_config_exits_with_the_field_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"dim": 64, "n_routed_experts": 10, "n_expert_groups": 4}))
    with pytest.raises(SystemExit, match="n_routed_experts.*not divisible by n_expert_groups"):
        main(["info", "--config", str(path)])


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "minideepseek", "info", "--preset", "tiny"],
                            capture_output=True, text=True, check=True)
    assert "total parameters" in result.stdout
