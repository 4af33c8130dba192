"""`benchmarks/device_check.py --smoke` runs here, so that the script is known to work before a device is lent."""

from __future__ import annotations

import json

from tests.helpers import requires_torch


@requires_torch
def test_smoke_run_writes_json_and_markdown(tmp_path):
    from benchmarks.device_check import main

    out = tmp_path / "reports" / "check.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["smoke"] is True
    parity = results["parity"]
    # On CPU every precision is float32: the highest-precision figure must meet the parity bound of the suite.
    assert parity["float32_highest"]["max_abs_diff"] <= 1e-5
    assert parity["float32_highest"]["within_1e-5"] is True
    assert 0 < parity["bfloat16"]["max_abs_diff"] < 0.1  # bfloat16 differs, by a bfloat16-sized amount
    rows = results["forward"]["rows"]
    assert [(r["batch"], r["length"]) for r in rows] == [(2, 32), (4, 16)]
    for row in rows:
        assert row["xlm_flax_tokens_per_s"] > 0 and row["torch_sdpa_tokens_per_s"] > 0
        assert row["compile_s"] > 0
        assert row["fused_attention"] is None  # no fused kernel exists on CPU
        assert row["torch_sdpa_vs_eager_max_abs_diff"] < 0.1  # the SDPA baseline computes the same encoder
    assert results["encode"]["sentences_per_s"] > 0
    markdown = (tmp_path / "reports" / "check.md").read_text()
    assert "| float32_highest |" in markdown and "| 2 x 32 |" in markdown
