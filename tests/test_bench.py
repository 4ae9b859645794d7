"""`asr-s2s bench --quick` end to end on real AN4 audio: the JSON has every figure, with sane values
(no timing thresholds: the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A small model keeps the smoke run to seconds; the full run uses the reference configuration.
TINY = ["model.encoder.hidden=32", "model.encoder.layers=1", "model.encoder.conv_channels=4", "model.decoder.hidden=32",
        "model.decoder.embed_dim=16", "model.decoder.attention_dim=16"]


def test_bench_quick_json(an4_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    sets = [a for s in TINY for a in ("--set", s)]
    r = subprocess.run([sys.executable, "-m", "asr_s2s.cli", "bench", "--quick", "--threads", "1", "--json", str(out),
                        "--data-dir", str(an4_corpus.parents[1]), *sets],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training, audio-s per s" in r.stdout and "decode RTF greedy_bs16" in r.stdout
    res = json.loads(out.read_text())
    m = res["machine"]
    assert m["cpu"] and m["torch"] == __import__("torch").__version__ and m["torch_threads"] == 1
    assert m["bf16_lstm_kernel"].startswith(("on", "off: "))
    p = res["peak"]
    assert p["peak_gflops"] > 0.1 and set(p["mm"]) and set(p["onednn_linear"])
    t = res["train"]
    assert res["params"] == t["params"] > 1000
    assert len(t["epochs"]) == res["repeats"] == 2
    for e in t["epochs"]:
        assert e["audio_s"] > 1 and e["wall_s"] > 0 and e["batches"] >= 1
        assert e["fwd_flop_counted"] > 0 and e["fwd_flop_encoder_rnn_analytic"] > 0
        assert e["train_flop"] == 3 * (e["fwd_flop_counted"] + e["fwd_flop_encoder_rnn_analytic"])
    assert 0 < t["audio_s_per_s"]["min"] <= t["audio_s_per_s"]["median"] <= t["audio_s_per_s"]["max"]
    assert t["gflops"]["median"] > 0 and 0 < t["fraction_of_peak"] < 1.5
    assert 0.005 < t["train_gflop_per_audio_s"] < 100
    assert 50 < t["peak_rss_mb_sampled"] < 64000 and t["ru_maxrss_mb_after_training"] >= 50
    d = res["decode"]
    assert d["utterances"] >= 1 and d["audio_s"] > 0 and d["mean_reference_tokens"] > 1
    for name in ("greedy_bs1", "greedy_bs16", "beam4_bs16"):
        assert 0 < d[name]["rtf"]["median"] < 100 and 0 < d[name]["rtf_reference_length"]["median"] < 100
        assert d[name]["mean_hyp_tokens"] >= 0
        assert len(d[name]["rtf_reference_length"]["values"]) == d["rounds"] == res["repeats"]
    assert res["features"]["audio_s_per_s"]["median"] > 1
    assert res["load1_start"] >= 0 and res["wall_s"] > 0
