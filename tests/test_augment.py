"""Waveform augmentation (asr_s2s.augment): contracts of every part, seeding, resume, config refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from asr_s2s.audio import load_audio
from asr_s2s.augment import PARTS, AugmentConfig, Augmenter
from asr_s2s.config import load_config
from asr_s2s.data import AudioDataset, LengthBucketSampler, collate_audio
from asr_s2s.features import FeatureConfig
from asr_s2s.manifest import read_manifest
from asr_s2s.text import CharTokenizer

SR = 8000
DIGITS = "zero one two three four five six seven eight nine".split()
# One setting per part; the noise and codec sources are cycled through by the per-part tests below.
ALWAYS = {"vtlp": {"p": 1.0}, "pitch": {"p": 1.0}, "reverb": {"p": 1.0, "rooms": 4}, "noise": {"p": 1.0},
          "gain": {"p": 1.0}, "telephone": {"p": 1.0}, "codec": {"p": 1.0}}
VARIANTS = [(part, ALWAYS[part]) for part in PARTS if part not in ("noise", "codec")] + [
    ("noise", {"p": 1.0, "sources": [s]}) for s in ("colored", "babble", "nonspeech")] + [
    ("codec", {"p": 1.0, "formats": [f]}) for f in ("mp3", "ogg")] + [("telephone", {"p": 1.0, "mulaw": 1.0})]


@pytest.fixture(scope="module")
def waves(fsdd_files: list[Path]) -> list[np.ndarray]:
    return [load_audio(str(f), SR).numpy() for f in fsdd_files[:8]]


def augmenter(cfg: dict, waves: list[np.ndarray], seed: int = 0) -> Augmenter:
    return Augmenter(AugmentConfig.from_dict(cfg), SR, seed, other_wave=lambda j: waves[j], num_items=len(waves))


@pytest.mark.parametrize("part,sec", VARIANTS, ids=[f"{p}-{json.dumps(s, sort_keys=True)}" for p, s in VARIANTS])
def test_each_part_keeps_length_and_changes_the_audio(part: str, sec: dict, waves: list[np.ndarray]) -> None:
    aug = augmenter({part: sec}, waves)
    for i, w in enumerate(waves[:3]):
        plan = aug.plan(epoch=0, index=i)
        assert list(plan) == [part]
        y = aug.apply(w, plan)
        assert y.dtype == np.float32 and y.shape == w.shape and np.all(np.isfinite(y))
        assert not np.allclose(y, w, atol=1e-4), f"{part} left utterance {i} unchanged"
        # The rate contract: the same content rate, so no part may move the utterance in time or pitch it
        # beyond its range. A cross-correlation peak near lag 0 says the speech stayed where it was.
        if part in ("gain", "noise", "codec", "telephone"):
            xc = np.correlate(y[: 2 * SR], w[: min(w.size, SR)], "full")
            lag = int(np.argmax(np.abs(xc))) - (min(w.size, SR) - 1)
            assert abs(lag) <= SR // 100, f"{part} shifted the audio by {lag} samples"


def test_room_impulse_responses_start_at_the_direct_path(waves: list[np.ndarray]) -> None:
    """Reverberation adds the room after the speech, never a delay before it (the peak of a cross-correlation
    says little here: the reflections pile up), so every impulse response peaks at its first sample."""
    aug = augmenter({"reverb": {"p": 1.0, "rooms": 6, "rt60": [0.3, 0.9]}}, waves)
    assert len(aug.rirs) == 6
    for h in aug.rirs:
        assert h[0] == np.max(np.abs(h)) == 1.0 and h.size > 0.1 * SR  # a tail of at least 100 ms
    again = augmenter({"reverb": {"p": 1.0, "rooms": 6, "rt60": [0.3, 0.9]}}, waves)
    assert all(np.array_equal(a, b) for a, b in zip(aug.rirs, again.rirs))


@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
@pytest.mark.parametrize("quality", [0.0, 0.99994, 1.0])
def test_codec_takes_every_quality_of_its_range(fmt: str, quality: float, waves: list[np.ndarray]) -> None:
    """libsndfile refuses an MP3 compression level of 1 (and 0.99994, drawn in a real run): the whole range works."""
    aug = augmenter({"codec": {"p": 1.0, "formats": [fmt], "quality": [quality, quality]}}, waves)
    y = aug(waves[0], 0, 0)
    assert y.shape == waves[0].shape and np.all(np.isfinite(y))


def test_noise_is_mixed_at_the_drawn_snr(waves: list[np.ndarray]) -> None:
    aug = augmenter({"noise": {"p": 1.0, "snr_db": [10, 10], "sources": ["colored"]}}, waves)
    w = waves[0]
    y = aug(w, 0, 0)
    snr = 10 * np.log10(np.sum(w.astype(np.float64) ** 2) / np.sum((y - w).astype(np.float64) ** 2))
    assert abs(snr - 10) < 0.01


def test_probability_zero_is_a_no_op(waves: list[np.ndarray], fsdd_files: list[Path], tmp_path: Path) -> None:
    off = augmenter({part: {**sec, "p": 0.0} for part, sec in ALWAYS.items()}, waves)
    assert not off.cfg.active
    for i, w in enumerate(waves):
        assert off.plan(0, i) == {}
        assert np.array_equal(off(w, 0, i), w)
    # Through the dataset: the same features, from the same cache, as without augmentation.
    entries = _entries(fsdd_files[:4], tmp_path)
    tok = CharTokenizer.build(DIGITS)
    plain = AudioDataset(entries, tok, FeatureConfig(sample_rate=SR), cache_dir=tmp_path / "c")
    zero = AudioDataset(entries, tok, FeatureConfig(sample_rate=SR), cache_dir=tmp_path / "c",
                        augment=off.cfg, augment_seed=0)
    assert zero.augmenter is None
    for i in range(len(entries)):
        assert torch.equal(plain[i]["feats"], zero[i]["feats"])
    assert zero.cache_hits == len(entries)


@pytest.mark.parametrize("part,sec", VARIANTS, ids=[f"{p}-{json.dumps(s, sort_keys=True)}" for p, s in VARIANTS])
def test_deterministic_per_seed_and_different_across_seeds(part: str, sec: dict, waves: list[np.ndarray]) -> None:
    half = {part: {**sec, "p": 0.5}}
    a, b, c = augmenter(half, waves, seed=7), augmenter(half, waves, seed=7), augmenter(half, waves, seed=8)
    # Items drawn in a different order (another worker count) get the same augmentation.
    out_a = {i: a(waves[i], 3, i) for i in range(len(waves))}
    out_b = {i: b(waves[i], 3, i) for i in reversed(range(len(waves)))}
    out_c = {i: c(waves[i], 3, i) for i in range(len(waves))}
    assert all(np.array_equal(out_a[i], out_b[i]) for i in out_a)
    assert any(not np.array_equal(out_a[i], out_c[i]) for i in out_a), f"seeds 7 and 8 drew the same {part}"
    # ... and another epoch draws anew.
    assert any(not np.array_equal(out_a[i], a(waves[i], 4, i)) for i in out_a)


def test_the_global_random_streams_are_left_alone(waves: list[np.ndarray]) -> None:
    """Dropout, SpecAugment and speed perturbation draw from the global RNGs: augmentation must not move them,
    or turning it on would change those draws too (and a resume would have to replay it)."""
    import random

    aug = augmenter(ALWAYS, waves)  # the room bank is simulated inside the loop below, on first use
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    for i, w in enumerate(waves):
        aug(w, 0, i)
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1]) and before[2] == random.getstate()


def test_one_part_probability_leaves_the_others_draws_alone(waves: list[np.ndarray]) -> None:
    a = augmenter({"gain": {"p": 0.5}, "noise": {"p": 0.5}}, waves)
    b = augmenter({"gain": {"p": 0.5}, "noise": {"p": 0.9}}, waves)
    for i in range(len(waves)):
        assert a.plan(0, i).get("gain") == b.plan(0, i).get("gain")


def _entries(files: list[Path], tmp_path: Path):
    import soundfile as sf

    man = tmp_path / "m.jsonl"
    with open(man, "w") as f:
        for w in files:
            info = sf.info(str(w))
            f.write(json.dumps({"audio_filepath": str(w), "duration": info.frames / info.samplerate,
                                "text": DIGITS[int(w.name[0])]}) + "\n")
    return read_manifest(man)[0]


def _epoch_feats(ds: AudioDataset, batches: list[list[int]], workers: int) -> dict[int, torch.Tensor]:
    out = {}
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=lambda b: b, num_workers=workers)
    for idx, items in zip(batches, loader):
        for j, item in zip(idx, items):
            out[j] = item["feats"]
    return out


def test_a_resumed_run_draws_what_an_uninterrupted_one_does(fsdd_files: list[Path], tmp_path: Path) -> None:
    """Epochs 0-1 in one go (no workers) against a fresh process's dataset resumed in mid epoch 1 behind a
    DataLoader worker: the remaining items get exactly the same augmented features."""
    entries = _entries(fsdd_files[:12], tmp_path)
    tok = CharTokenizer.build(DIGITS)
    cfg = AugmentConfig.from_dict({"noise": {"p": 0.3}, "gain": {"p": 0.3}, "reverb": {"p": 0.2, "rooms": 4},
                                   "vtlp": {"p": 0.2}, "codec": {"p": 0.1}, "telephone": {"p": 0.1}})
    fc = FeatureConfig(sample_rate=SR)

    def dataset() -> AudioDataset:
        return AudioDataset(entries, tok, fc, cache_dir=tmp_path / "c", augment=cfg, augment_seed=5)

    full = dataset()
    sampler = LengthBucketSampler(full.lengths, max_frames=300, seed=5)
    whole = []
    for epoch in (0, 1):
        full.set_epoch(epoch)
        whole.append(_epoch_feats(full, sampler.batches(epoch), workers=0))
    assert any(not torch.equal(whole[0][i], whole[1][i]) for i in whole[0])  # epochs differ
    batches = sampler.batches(1)
    k = len(batches) // 2
    resumed = dataset()
    resumed.set_epoch(1)
    rest = _epoch_feats(resumed, batches[k:], workers=1)
    assert rest and all(torch.equal(rest[i], whole[1][i]) for i in rest)
    # Both kinds were resumed: items with augmentation (computed from the waveform) and items without (which
    # come from the clean-feature cache, identical to a dataset without augmentation).
    plans = {i: resumed.augmenter.plan(1, i) for i in rest}
    assert any(plans.values()) and not all(plans.values())
    plain = AudioDataset(entries, tok, fc, cache_dir=tmp_path / "c")
    assert all(torch.equal(rest[i], plain[i]["feats"]) == (not plans[i]) for i in rest)


def test_training_set_only(tmp_path: Path, fsdd_files: list[Path]) -> None:
    from asr_s2s.pipeline import build_data

    man = tmp_path / "m.jsonl"
    _entries(fsdd_files[:6], tmp_path)
    cfg = load_config(None, [f"data.train={man}", f"data.dev={man}", "features.sample_rate=8000",
                             "data.augment.gain.p=0.5", "data.cmvn=none"])
    data = build_data(cfg, tmp_path / "exp")
    assert data.train_set.augmenter is not None and data.train_set.augmenter.cfg.gain.p == 0.5
    assert cfg.data.augment == {"gain": {"p": 0.5}}


@pytest.mark.parametrize("override,message", [
    ("data.augment.nois.p=0.5", "data.augment.nois"),
    ("data.augment.noise.p=1.5", "data.augment.noise.p"),
    ("data.augment.noise.snr=[1,2]", "data.augment.noise.snr"),
    ("data.augment.noise.snr_db=[30,5]", "data.augment.noise.snr_db"),
    ("data.augment.noise.sources=[pink]", "data.augment.noise.sources"),
    ("data.augment.codec.formats=[wav]", "data.augment.codec.formats"),
    ("data.augment.reverb.rooms=0", "data.augment.reverb.rooms"),
    ("data.augment.gain=0.5", "data.augment.gain"),
    ("data.augment.pitch.p=yes", "data.augment.pitch.p"),
])
def test_bad_values_are_refused_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        load_config(None, [override])
