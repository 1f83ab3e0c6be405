"""benchmarks.stores runs and reports exactly-once consume (small sizes; the server backends
are measured in the README's figures and tested in test_stores.py)."""

from __future__ import annotations

import json

from benchmarks import stores


def test_store_benchmark_prints_one_json_line(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    stores.main(
        ["--url", "memory://", "--url", url, "--ops", "20", "--procs", "2", "--no-progress"]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mem, lite = out["backends"]
    assert mem["purge_removed"] == lite["purge_removed"] == 3 * 20
    assert lite["race"]["exactly_once"] and lite["race"]["consumed"] == 20
    assert lite["consume"]["p50_ms"] > 0
