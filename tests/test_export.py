"""Export parity: the TorchScript and ONNX exports, run by ExportedModel (numpy features + greedy
loop over the decoder-step graph), give the same transcripts as the Python model on real FSDD audio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from small_model import long_recording

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="session")
def model(model_path):
    import torch

    from asr_s2s import load_model

    torch.set_num_threads(1)
    return load_model(model_path)


@pytest.fixture(scope="session")
def files(fsdd_files) -> list[Path]:
    return fsdd_files[::2][:12]


def _check_parity(exported, model, files, fsdd_dir):
    from asr_s2s.decoding import DecodeOptions

    greedy = DecodeOptions()  # what an exported model runs, whatever the model file recommends
    # fp32 on both sides: transcribe's default precision is bf16 on CPUs that have it, a different kernel path whose
    # scores may differ by more than the tolerance below (by 0.006 on one clip for the bundled model).
    ref = model.transcribe(files, options=greedy, precision="fp32")
    got = exported.transcribe(files)
    assert [t.text for t in got] == [t.text for t in ref]
    assert np.allclose([t.score for t in got], [t.score for t in ref], atol=1e-3)
    wave, _, _, _ = long_recording(fsdd_dir, 5, seed=2)  # long-form: same VAD, same segments
    a, b = model.transcribe(wave, sample_rate=8000, options=greedy, precision="fp32"), exported.transcribe(wave, sample_rate=8000)
    assert a.text == b.text and [(s.start, s.end) for s in a.segments] == [(s.start, s.end) for s in b.segments]


def test_torchscript_parity(model, files, fsdd_dir, tmp_path):
    from asr_s2s.export import ExportedModel, export_model

    out = export_model(model, "torchscript", tmp_path / "ts")
    assert {p.name for p in out.iterdir()} == {"encoder.pt", "decoder_step.pt", "model.json"}
    _check_parity(ExportedModel(out), model, files, fsdd_dir)


def test_onnx_parity_via_cli(model, model_path, files, fsdd_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from asr_s2s.audio import load_audio
    from asr_s2s.export import ExportedModel

    out = tmp_path / "onnx"
    res = subprocess.run([sys.executable, "-m", "asr_s2s.cli", "export", str(model_path), "--format", "onnx", "--out", str(out)],
                         capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    spec = json.loads((out / "model.json").read_text())
    assert spec["backend"] == "onnx" and spec["tokenizer"]["vocab"][:4] == ["<pad>", "<sos>", "<eos>", "<unk>"]
    exported = ExportedModel(out)
    # the numpy frontend reproduces LogMel + CMVN
    wave = load_audio(files[0], exported.sample_rate)
    feats, lens = model.features_of([wave])
    np.testing.assert_allclose(exported.features(wave.numpy()), model.normalize(feats, lens)[0].numpy(), atol=1e-3)
    _check_parity(exported, model, files, fsdd_dir)


def test_fp16_model_file_halves_size_and_keeps_transcripts(model, files, tmp_path):
    """The default model ships with fp16 weights: half the bytes, loaded back into fp32, same text."""
    import subprocess
    import sys

    from asr_s2s.model import load_model

    full, out = tmp_path / "full.pt", tmp_path / "half.pt"
    model.save(full, meta=model.meta)  # fp32 weights (the bundled model, the test model without a corpus, is fp16)
    r = subprocess.run([sys.executable, "-m", "asr_s2s.cli", "export", str(full), "--format", "fp16", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.stat().st_size < 0.6 * full.stat().st_size
    half = load_model(out)
    assert next(half.parameters()).dtype == torch.float32
    same = sum(a.text == b.text for a, b in zip(model.transcribe(files), half.transcribe(files)))
    assert same >= len(files) - 1
