"""The serving regression guard compares ratios to echo, not raw timings."""

from __future__ import annotations

import json

from benchmarks import serving_check


def _report(echo: float, miss: float) -> dict:
    return {"rows": [{"scenario": "echo", "concurrency": 8, "rps": echo},
                     {"scenario": "miss user", "concurrency": 8, "rps": miss}]}


def test_a_drop_relative_to_echo_is_reported_and_machine_speed_is_not(tmp_path) -> None:
    old = _report(2000, 500)
    assert serving_check.compare(_report(1000, 250), old, 0.2) == []   # slower box, same ratio
    drops = serving_check.compare(_report(2000, 350), old, 0.2)
    assert drops == ["miss user at 8 in flight: 17.5% of echo, was 25.0% (-30%)"]
    new, base = tmp_path / "new.json", tmp_path / "base.json"
    new.write_text(json.dumps(_report(2000, 350)))
    base.write_text(json.dumps(old))
    assert serving_check.main([str(new), "--baseline", str(base)]) == 0
    assert serving_check.main([str(new), "--baseline", str(base), "--strict"]) == 1
