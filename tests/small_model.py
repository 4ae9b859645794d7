"""A small FSDD recognizer trained with the real trainer, shared by test_transcribe.py and test_export.py.

It is trained once (400 steps, about a minute on one free CPU core, plus feature extraction) and
kept in pytest's cache folder (``.pytest_cache/d/asr_s2s_small_model/<key>``), keyed by the recipe
config and the overrides below, so later runs reuse it; ``pytest --cache-clear`` retrains. Set
``ASR_S2S_TEST_MODEL=/path/model.pt`` to use another model file instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "asr_s2s" / "recipe_configs" / "fsdd.yaml"
OVERRIDES = ["max_minutes=null", "max_steps=400", "epochs=100", "data.max_frames=3000", "model.encoder.hidden=64",
             "model.decoder.hidden=64", "model.decoder.embed_dim=32", "data.max_dev=60", "threads=1",
             "checkpoint_every=0"]


def small_fsdd_model(data_root: Path, cache_dir: Path | None) -> Path:
    env = os.environ.get("ASR_S2S_TEST_MODEL")
    if env:
        return Path(env)
    key = hashlib.sha1((CONFIG.read_text() + "\n".join(OVERRIDES)).encode()).hexdigest()[:12]
    cached = cache_dir / key / "model.pt" if cache_dir is not None else None
    if cached is not None and cached.exists():
        return cached
    from asr_s2s.config import load_config
    from asr_s2s.corpora import prepare_corpus
    from asr_s2s.train import train

    out = Path(tempfile.mkdtemp(prefix="asr_s2s_test_model_"))
    manifests = prepare_corpus("fsdd", Path(data_root), out / "data", download=False)
    cfg = load_config(CONFIG, OVERRIDES + [f"data.train={manifests['train']}", f"data.dev={manifests['dev']}"])
    model = train(cfg, out / "exp", quiet=True)
    if cached is None:
        return model
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, cached)
    shutil.rmtree(out, ignore_errors=True)
    return cached


def long_recording(fsdd_dir: Path, n: int, seed: int = 0, gaps: tuple[float, float] = (0.5, 1.0), noise: float = 1e-3):
    """n real FSDD utterances (every digit, all six speakers, held-out indices 10+) trimmed to their
    speech (frames above -50 dBFS, an absolute threshold independent of the VAD under test) and
    joined with ``gaps`` seconds of Gaussian noise at ``noise`` RMS (-60 dBFS, about the corpus's own
    floor). Returns (wave float32 at 8 kHz, [(start_s, end_s)] of each utterance, [clip arrays],
    [digit words])."""
    import librosa
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    speakers = ("jackson", "theo", "george", "nicolas", "lucas", "yweweler")
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    sr = 8000

    def gap():
        return rng.normal(0, noise, int(rng.uniform(*gaps) * sr)).astype(np.float32)

    parts = [gap()]
    t = parts[0].size / sr
    truth, clips, labels = [], [], []
    for i in range(n):
        digit = int(rng.integers(10)) if i >= 10 else i
        path = fsdd_dir / f"{digit}_{speakers[i % 6]}_{10 + (i // 6) % 40}.wav"
        if not path.exists():  # the clips in tests/data (no corpus): that digit's clips in turn
            same = sorted(fsdd_dir.glob(f"{digit}_*.wav"))
            if not same:
                raise FileNotFoundError(f"{fsdd_dir}: no FSDD clip of the digit {digit} ({digit}_*.wav)")
            path = same[i % len(same)]
        x, _ = sf.read(str(path), dtype="float32")
        y, _ = librosa.effects.trim(x, top_db=50, ref=1.0, frame_length=160, hop_length=40)
        clips.append(y)
        labels.append(words[digit])
        truth.append((t, t + y.size / sr))
        g = gap()
        parts += [y, g]
        t += (y.size + g.size) / sr
    return np.concatenate(parts), truth, clips, labels
