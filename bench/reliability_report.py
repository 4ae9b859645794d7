"""Run the bad-input cases of tests/bad_inputs.py and the bad command lines of tests/bad_usage.py through the
real entry points and print the summary tables.

    ASR_S2S_DATA=/work/shared/data python bench/reliability_report.py [--no-train] [--no-usage] [--json out.json]

Rows: one per (input, entry point). Outcomes: ``ok`` (usable input loaded correctly), ``error`` (clear error
naming file/line and cause; for a command line: exit status 2 - 1 for a per-file audio failure -, one
``error:`` line naming the argument or file, no traceback, nothing written), ``skip`` (counted, reported
skip), ``crash`` (anything else). Exit status 1 if any outcome differs from the expected one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import bad_inputs as B  # noqa: E402


def fsdd_files() -> list[Path]:
    root = Path(os.environ.get("ASR_S2S_DATA", REPO / "data")) / "fsdd" / "recordings"
    files = sorted(root.glob("*.wav"))
    if not files:
        sys.exit(f"FSDD not found under {root} (set ASR_S2S_DATA)")
    return [f for f in files if f.stem.split("_")[1] in ("jackson", "theo") and int(f.stem.split("_")[2]) < 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-train", action="store_true", help="skip the (≈15 s) training run on the mixed manifest")
    ap.add_argument("--no-usage", action="store_true", help="skip the command-line usage cases (about 20 s)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each row's detail")
    args = ap.parse_args()
    logging.getLogger("asr_s2s").addHandler(logging.NullHandler())  # per-file skip warnings: checked, not shown
    files = fsdd_files()
    rows: list[B.Result] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        n = 0

        def fresh() -> Path:
            nonlocal n
            n += 1
            d = Path(tmp) / f"c{n}"
            d.mkdir()
            return d

        for case in B.AUDIO_CASES:
            rows.append(B.run_load_audio(case, fresh()))
            rows.append(B.run_dataset_skip(case, fresh()))
        for case in B.MANIFEST_CASES:
            for mode in ("raise", "skip"):
                rows.append(B.run_manifest(case, fresh(), files[0], mode))
        usage_rows: list[B.Result] = []
        if not args.no_usage:
            usage_rows = run_usage_cases(fresh(), files[0])
        train_info = None
        if not args.no_train:
            with contextlib.redirect_stdout(io.StringIO()):  # the trainer's own skip summary
                res, train_info = B.run_training(fresh(), files)
            rows.extend(res)
    elapsed = time.perf_counter() - t0

    print(f"{'input':32s} {'entry point':22s} {'expected':8s} {'outcome':8s}  detail")
    for r in rows + usage_rows:
        flag = "" if r.passed else "  <-- UNEXPECTED"
        detail = r.detail.splitlines()[0] if r.detail else ""
        print(f"{r.case:32s} {r.entry:22s} {r.expect:8s} {r.outcome:8s}  {detail[:100] if not args.verbose else detail}{flag}")
    counts = Counter(r.outcome for r in rows)
    unexpected = [r for r in rows if not r.passed]
    distinct = len(B.AUDIO_CASES) + len(B.MANIFEST_CASES)
    print()
    per_entry = Counter(r.entry for r in rows)
    print(f"inputs tried: {len(rows)} ({distinct} distinct broken/unusual inputs x entry points: "
          + ", ".join(f"{k} {v}" for k, v in per_entry.items()) + ")")
    print(f"clear errors: {counts['error']}   skips (counted, reported): {counts['skip']}   "
          f"loaded fine: {counts['ok']}   crashes: {counts['crash']}   unexpected outcomes: {len(unexpected)}")
    if train_info and "state" in train_info:
        s = train_info["state"]
        print(f"training run: finished at step {s['step']} after {s['epoch']} epochs; skipped_utterances="
              f"{s['skipped_utterances']}, manifest_skipped={s['manifest_skipped']}")
    if usage_rows:
        u = Counter(r.outcome for r in usage_rows)
        tracebacks = sum(1 for r in usage_rows if "traceback on stderr" in r.detail or "escaped main" in r.detail)
        verbs = Counter(r.entry for r in usage_rows)
        print(f"command lines tried: {len(usage_rows)} (" + ", ".join(f"{k} {v}" for k, v in sorted(verbs.items())) + ")")
        print(f"clear errors: {u['error']}   other expected outcomes: {u['ok']}   tracebacks: {tracebacks}   "
              f"unexpected outcomes: {sum(1 for r in usage_rows if not r.passed)}")
        unexpected += [r for r in usage_rows if not r.passed]
    print(f"({elapsed:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"rows": [r.__dict__ for r in rows + usage_rows], "counts": dict(counts),
                                         "unexpected": len(unexpected)}, indent=1))
    return 1 if unexpected else 0


def run_usage_cases(d: Path, wav: Path) -> list[B.Result]:
    """tests/bad_usage.py's named cases, every option x its fixed bad values, and the held-folder cases."""
    import bad_usage as U

    root = Path(os.environ.get("ASR_S2S_DATA", REPO / "data"))
    ws = U.make_workspace(d, wav)
    base = U.baseline(ws, root)
    with contextlib.redirect_stdout(io.StringIO()):
        rows = [U.run_named_case(c, ws) for c in U.named_cases(ws, root)]
        for verb, action, kind in U.targets():
            rows += [U.run_option_case(base, ws, verb, action, v, status) for v, status in U.fixed_bad_values(kind, action, ws)]
        rows += U.run_lock_cases(d, ws.config, root)
    return rows


if __name__ == "__main__":
    sys.exit(main())
