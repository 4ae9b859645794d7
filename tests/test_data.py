"""Length-bucketed sampler, audio/text datasets and collate functions."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from asr_s2s.audio import AudioError
from asr_s2s.data import (
    AudioDataset,
    LengthBucketSampler,
    TextPairDataset,
    collate_audio,
    collate_text,
    padding_fraction,
)
from asr_s2s.features import FeatureConfig, LogMel
from asr_s2s.manifest import ManifestEntry
from asr_s2s.text import PAD, CharTokenizer

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def fsdd_like_lengths(n=3000, seed=0):
    """Frame counts shaped like FSDD (0.15-2.3 s at 100 frames/s, log-normal around 0.45 s)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(45), 0.35, n), 15, 230).astype(int).tolist()


# ------------------------------------------------------------------------------------------------------ sampler
def test_every_item_once_and_budget():
    lengths = fsdd_like_lengths()
    s = LengthBucketSampler(lengths, max_frames=2000, seed=3)
    for epoch in range(2):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(len(lengths)))
        assert all(len(b) * max(lengths[i] for i in b) <= 2000 for b in batches)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    assert list(s) != e0  # batch order reshuffled per epoch
    s.set_epoch(0)
    assert list(s) == e0  # ... deterministically
    assert list(LengthBucketSampler(lengths, max_frames=2000, seed=3)) == e0


def test_padding_small_vs_random():
    lengths = fsdd_like_lengths()
    s = LengthBucketSampler(lengths, max_frames=3000, seed=0)
    bucketed = padding_fraction(list(s), lengths)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(lengths)).tolist()
    bs = int(np.mean([len(b) for b in s]))
    random_batches = [perm[i : i + bs] for i in range(0, len(perm), bs)]
    rand = padding_fraction(random_batches, lengths)
    assert bucketed < 0.10 and bucketed < rand / 3, (bucketed, rand)


def test_long_item_own_batch_and_max_batch_size():
    lengths = [10] * 20 + [500]
    s = LengthBucketSampler(lengths, max_frames=100, max_batch_size=4, shuffle=False)
    batches = list(s)
    assert [20] in batches and max(len(b) for b in batches) == 4
    assert sorted(i for b in batches for i in b) == list(range(21))


def test_no_shuffle_is_sorted_and_empty_ok():
    lengths = [5, 1, 3, 2, 4]
    assert list(LengthBucketSampler(lengths, max_frames=4, shuffle=False)) == [[1, 3], [2], [4], [0]]
    assert list(LengthBucketSampler([], max_frames=10)) == []
    with pytest.raises(ValueError):
        LengthBucketSampler([1, -1], max_frames=10)


def test_batches_is_what_iteration_yields():
    lengths = fsdd_like_lengths(500)
    s = LengthBucketSampler(lengths, max_frames=1500, seed=7)
    s.set_epoch(2)
    assert s.batches(2) == list(s) and s.batches() == list(s)
    assert s.batches(3) != s.batches(2)
    assert s.batches(2) == LengthBucketSampler(lengths, max_frames=1500, seed=7).batches(2)  # a resumed run's too


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ddp_shard_splits_every_batch_across_ranks(world):
    """The trainer's one DDP design (asr_s2s.distributed.shard): each rank takes its share of every global
    batch; a batch too small for every rank is dropped on all of them."""
    from asr_s2s.distributed import Dist, shard

    batches = LengthBucketSampler(fsdd_like_lengths(997), max_frames=1800, seed=1).batches(4) + [[0], [1, 2][: world - 1]]
    ranks = [shard(batches, Dist(r, world, torch.device("cpu"))) for r in range(world)]
    kept = [b for b in batches if len(b) >= world]
    assert len(kept) < len(batches) and all(len(r) == len(kept) for r in ranks)
    for i, b in enumerate(kept):
        parts = [r[i] for r in ranks]
        assert all(parts) and sorted(j for p in parts for j in p) == sorted(b)
    assert shard(batches, Dist(0, 1, torch.device("cpu"))) == batches


# ------------------------------------------------------------------------------------------------------ datasets
@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.build(DIGITS)


@pytest.fixture()
def fsdd_entries(fsdd_files):
    out = []
    for f in fsdd_files[:16]:
        info = sf.info(str(f))
        out.append(ManifestEntry(str(f), info.frames / info.samplerate, DIGITS[int(f.stem[0])], f.stem))
    return out


def test_dataset_and_collate_on_fsdd(fsdd_entries, tok):
    cfg = FeatureConfig(sample_rate=16000, n_mels=40)
    ds = AudioDataset(fsdd_entries, tok, cfg)
    item = ds[0]
    assert item["feats"].shape[1] == 40 and item["feats"].dtype == torch.float32
    assert tok.decode(item["tokens"]) == fsdd_entries[0].text
    assert item["feats"].shape[0] == ds.lengths[0]
    sampler = LengthBucketSampler(ds.lengths, max_frames=400, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_audio)
    seen = []
    for batch in loader:
        B = len(batch["ids"])
        assert batch["feats"].shape[0] == B and batch["feats"].shape[1] == int(batch["feat_lens"].max())
        assert batch["tokens"].shape == (B, int(batch["token_lens"].max())) and batch["num_skipped"] == 0
        for b in range(B):
            t = int(batch["token_lens"][b])
            assert (batch["tokens"][b, t:] == PAD).all()
            assert (batch["feats"][b, int(batch["feat_lens"][b]) :] == 0).all()
        seen += batch["ids"]
    assert sorted(seen) == sorted(e.id for e in fsdd_entries)
    # the per-utterance features are what the batched frontend gives
    ref, _ = LogMel(cfg)(ds.load_wave(0)[None])
    assert torch.allclose(ref[0], item["feats"], atol=1e-5)


def test_offset_duration_honoured(tmp_path, tok):
    sr = 16000
    wave = np.zeros(3 * sr, dtype=np.float32)
    wave[sr : 2 * sr] = 0.5 * np.sin(2 * np.pi * 300 * np.arange(sr) / sr)
    sf.write(str(tmp_path / "x.wav"), wave, sr)
    e = ManifestEntry(str(tmp_path / "x.wav"), 1.0, "one", "seg", None, 1.0)
    ds = AudioDataset([e], tok, FeatureConfig())
    w = ds.load_wave(0)
    assert w.shape[0] == sr and float(w.abs().min()) < 0.6 and float(w.abs().mean()) > 0.2
    assert ds[0]["feats"].shape[0] == sr // 160 + 1


def test_feature_cache_reused(tmp_path, fsdd_entries, tok):
    cache = tmp_path / "cache"
    cfg = FeatureConfig(n_mels=40)
    ds = AudioDataset(fsdd_entries[:3], tok, cfg, cache_dir=cache)
    first = [ds[i]["feats"] for i in range(3)]
    paths = [ds.cache_path(i) for i in range(3)]
    assert all(p.is_file() for p in paths) and ds.cache_misses == 3 and ds.cache_hits == 0
    assert not list(cache.rglob("*.tmp"))
    mtimes = [p.stat().st_mtime_ns for p in paths]

    ds2 = AudioDataset(fsdd_entries[:3], tok, cfg, cache_dir=cache)
    ds2.load_wave = None  # a cache hit must not touch the audio
    again = [ds2[i]["feats"] for i in range(3)]
    assert ds2.cache_hits == 3 and ds2.cache_misses == 0
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert [p.stat().st_mtime_ns for p in paths] == mtimes

    # a different feature config or an edited file gives another key
    assert AudioDataset(fsdd_entries[:1], tok, FeatureConfig(n_mels=41), cache_dir=cache).cache_path(0) != paths[0]
    # a corrupt cache file is recomputed, not trusted
    paths[1].write_bytes(b"garbage")
    ds3 = AudioDataset(fsdd_entries[:3], tok, cfg, cache_dir=cache)
    assert torch.equal(ds3[1]["feats"], first[1]) and ds3.cache_misses == 1


def test_cache_key_tracks_file_changes(tmp_path, tok):
    sr = 16000
    p = tmp_path / "a.wav"
    sf.write(str(p), np.zeros(sr, dtype=np.float32), sr)
    e = ManifestEntry(str(p), 1.0, "one", "a")
    ds = AudioDataset([e], tok, FeatureConfig(), cache_dir=tmp_path / "c")
    k1 = ds.cache_path(0)
    sf.write(str(p), 0.1 * np.ones(sr + 160, dtype=np.float32), sr)
    os.utime(p, ns=(1, 1))
    assert ds.cache_path(0) != k1


def test_speed_perturb_bypasses_cache(tmp_path, fsdd_entries, tok):
    cache = tmp_path / "cache"
    ds = AudioDataset(fsdd_entries[:1], tok, FeatureConfig(n_mels=40), cache_dir=cache, speed_perturb=(0.9,))
    base = AudioDataset(fsdd_entries[:1], tok, FeatureConfig(n_mels=40))
    item, ref = ds[0], base[0]
    n = ds.load_wave(0).shape[0]
    assert abs(ds.load_wave(0, 0.9).shape[0] - n / 0.9) <= 2
    assert item["feats"].shape[0] == pytest.approx(ref["feats"].shape[0] / 0.9, abs=2)
    assert item["duration"] == pytest.approx(fsdd_entries[0].duration / 0.9)
    assert not cache.exists() or not list(cache.rglob("*.npy"))
    torch.manual_seed(0)
    ds3 = AudioDataset(fsdd_entries[:1], tok, FeatureConfig(n_mels=40), speed_perturb=(0.9, 1.0, 1.1))
    lens = {ds3[0]["feats"].shape[0] for _ in range(12)}
    assert len(lens) == 3


def test_bad_audio_raise_and_skip(tmp_path, fsdd_entries, tok):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEjunk")
    entries = fsdd_entries[:2] + [ManifestEntry(str(junk), 1.0, "one", "junk"), ManifestEntry(str(tmp_path / "gone.wav"), 1.0, "two", "gone")]
    ds = AudioDataset(entries, tok, FeatureConfig(n_mels=40))
    with pytest.raises(AudioError, match="junk.wav"):
        ds[2]
    with pytest.raises(AudioError, match="gone.wav"):
        ds[3]
    ds = AudioDataset(entries, tok, FeatureConfig(n_mels=40), on_error="skip")
    batch = collate_audio([ds[i] for i in range(4)])
    assert batch["ids"] == [e.id for e in fsdd_entries[:2]] and batch["num_skipped"] == 2
    assert collate_audio([ds[2], ds[3]]) is None


def test_dataset_pickles_for_workers(fsdd_entries, tok):
    import pickle

    ds = AudioDataset(fsdd_entries[:2], tok, FeatureConfig(n_mels=40))
    ds[0]
    ds2 = pickle.loads(pickle.dumps(ds))
    assert torch.equal(ds2[1]["feats"], ds[1]["feats"])


def test_text_pairs_dataset():
    pairs = [("hello there", "안녕"), ("hi", "안녕하세요 여러분"), ("a", "가")]
    src = CharTokenizer.build(p[0] for p in pairs)
    tgt = CharTokenizer.build(p[1] for p in pairs)
    ds = TextPairDataset(pairs, src, tgt)
    assert ds.lengths == [11, 9, 1]
    batch = collate_text([ds[i] for i in range(3)])
    assert batch["src"].shape == (3, 11) and batch["tokens"].shape == (3, 9)
    assert batch["src_lens"].tolist() == [11, 2, 1] and batch["token_lens"].tolist() == [2, 9, 1]
    assert src.decode(batch["src"][1]) == "hi" and tgt.decode(batch["tokens"][0]) == "안녕"
    assert (batch["src"][2, 1:] == PAD).all()
    sampler = LengthBucketSampler(ds.lengths, max_frames=20, shuffle=False)
    assert sorted(i for b in sampler for i in b) == [0, 1, 2]


def test_padding_on_real_fsdd_durations(fsdd_corpus):
    cfg = FeatureConfig()
    from asr_s2s.features import feature_frames

    lengths = [feature_frames(sf.info(str(f)).duration, cfg) for f in sorted(fsdd_corpus.glob("*.wav"))]
    s = LengthBucketSampler(lengths, max_frames=4000, seed=0)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert padding_fraction(batches, lengths) < 0.10


def test_an4_sphere_through_dataset(an4_dir, tok, tmp_path):
    sph = sorted((an4_dir / "wav").rglob("*.sph"))[:2]
    if not sph:
        pytest.skip("no AN4 .sph files")
    entries = [ManifestEntry(str(p), sf.info(str(p)).duration, "one two", p.stem) for p in sph]
    ds = AudioDataset(entries, tok, FeatureConfig(), cache_dir=tmp_path / "c")
    batch = collate_audio([ds[0], ds[1]])
    assert batch["feats"].shape[2] == 80 and batch["feat_lens"].tolist() == ds.lengths


def test_unwritable_cache_is_not_bad_audio(tmp_path, fsdd_entries, tok, monkeypatch):
    ds = AudioDataset(fsdd_entries[:1], tok, FeatureConfig(n_mels=40), cache_dir=tmp_path / "c")

    def boom(path, feats):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ds, "_store", boom)
    assert ds[0]["feats"].shape[1] == 40
