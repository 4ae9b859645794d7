"""Ratios of an `asr-s2s bench --json` result to the SpeechBrain peer harness's JSON (../shared/peers).

Usage: python bench/compare.py PEER.json OURS.json [PEAK.json]   (PEAK: the peer's peak.py --json, optional)
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    peer = json.load(open(sys.argv[1]))
    ours = json.load(open(sys.argv[2]))
    peak = json.load(open(sys.argv[3])) if len(sys.argv) > 3 else None
    t, d = ours["train"], ours["decode"]
    sb_rtf = peer["decode_rtf"]
    rows = [
        ("parameters", peer["params_total"], ours["params"], None),
        ("training audio-s per s (median epoch)", peer["train_audio_s_per_wall_s_median"], t["audio_s_per_s"]["median"], "higher"),
        ("training GFLOP/s (3x fwd, median epoch)", (peer.get("flops") or {}).get("achieved_gflops_median_epoch"),
         t["gflops"]["median"], "higher"),
        ("training GFLOP per audio-s", None if not peer.get("flops") else
         peer["flops"]["train_flop_per_epoch_est_3x_fwd"] / peer["data"]["train_audio_s"] / 1e9, t["train_gflop_per_audio_s"], None),
        ("greedy RTF batch 1 (as emitted)", sb_rtf["bs1"]["rtf_median"], d["greedy_bs1"]["rtf"]["median"], "lower"),
        ("greedy RTF batch 16 (as emitted)", sb_rtf["bs16"]["rtf_median"], d["greedy_bs16"]["rtf"]["median"], "lower"),
        ("greedy RTF batch 1 (reference length)", sb_rtf["bs1"]["rtf_median"], d["greedy_bs1"]["rtf_reference_length"]["median"], "lower"),
        ("greedy RTF batch 16 (reference length)", sb_rtf["bs16"]["rtf_median"], d["greedy_bs16"]["rtf_reference_length"]["median"], "lower"),
        ("peak RSS (ru_maxrss) by the end of training, MiB", peer["peak_rss_mb"], t["ru_maxrss_mb_after_training"], "lower"),
    ]
    print(f"{'':42s} {'SpeechBrain':>12s} {'asr-s2s':>12s} {'advantage':>10s}")
    for name, p, o, better in rows:
        if p is None or o is None:
            print(f"{name:42s} {'-' if p is None else f'{p:.4g}':>12s} {'-' if o is None else f'{o:.4g}':>12s}")
            continue
        adv = "" if better is None else f"{(o / p if better == 'higher' else p / o):.2f}x"
        print(f"{name:42s} {p:12.4g} {o:12.4g} {adv:>10s}")
    pk = ours["peak"]["peak_gflops"]
    print(f"\nfp32 matmul peak measured by asr-s2s bench: {pk:.0f} GFLOP/s; "
          f"asr-s2s at {100 * t['gflops']['median'] / pk:.1f}%, SpeechBrain at "
          f"{100 * (peer.get('flops') or {}).get('achieved_gflops_median_epoch', float('nan')) / pk:.1f}%")
    if peak:
        od = max(v["best"] for v in peak.get("onednn_linear", {}).values()) if peak.get("onednn_linear") else float("nan")
        mm = max(v["best"] for v in peak["matmul"].values())
        print(f"peak.py: oneDNN {od:.0f} / torch.mm {mm:.0f} GFLOP/s; nn.LSTM f+b {peak['lstm']['fwdbwd_gflops_best']:.0f}")


if __name__ == "__main__":
    main()
