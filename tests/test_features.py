"""Log-mel parity with librosa (and torchaudio when importable), padding invariance, CMVN, SpecAugment."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from asr_s2s.audio import load_audio
from asr_s2s.features import FeatureConfig, GlobalCMVN, LogMel, SpecAugment, UtteranceCMVN, feature_frames


def batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : len(w)] = w
    return out, lengths


@pytest.fixture(scope="module")
def waves(fsdd_files: list[Path]) -> list[torch.Tensor]:
    return [load_audio(f) for f in fsdd_files[:12]]


@pytest.mark.parametrize("cfg", [FeatureConfig(), FeatureConfig(n_mels=40, win_ms=32, hop_ms=16, f_min=20, f_max=7600)])
def test_matches_librosa(waves: list[torch.Tensor], cfg: FeatureConfig) -> None:
    """Tolerance: log-mel within 0.01 absolute (in nats) wherever the mel power is above 1e-8 of the
    utterance's peak; below that, float32 vs librosa's float64 rounding dominates."""
    ours, frames = LogMel(cfg)(waves[0][None])
    ref = librosa.feature.melspectrogram(
        y=waves[0].numpy().astype(np.float64), sr=cfg.sample_rate, n_fft=cfg.fft_size, hop_length=cfg.hop_length,
        win_length=cfg.win_length, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.f_max, power=2.0,
    ).T
    assert ours.shape[1:] == ref.shape and int(frames[0]) == ref.shape[0]
    live = ref > ref.max() * 1e-8
    diff = np.abs(ours[0].numpy() - np.log(np.maximum(ref, cfg.log_floor)))
    assert diff[live].max() < 0.01


def test_matches_torchaudio(waves: list[torch.Tensor]) -> None:
    torchaudio = pytest.importorskip("torchaudio")
    cfg = FeatureConfig()
    ta = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=cfg.fft_size, win_length=cfg.win_length, hop_length=cfg.hop_length, n_mels=80,
        norm="slaney", mel_scale="slaney", pad_mode="constant", power=2.0,
    )
    ref = torch.log(torch.clamp(ta(waves[0]), min=cfg.log_floor)).T
    ours, _ = LogMel(cfg)(waves[0][None])
    assert torch.allclose(ours[0], ref, atol=1e-3)


def test_batched_equals_single(waves: list[torch.Tensor]) -> None:
    lm = LogMel()
    x, lengths = batch(waves)
    feats, frames = lm(x, lengths)
    assert torch.equal(frames, lm.num_frames(lengths))
    for i, w in enumerate(waves):
        alone, n = lm(w[None])
        assert int(n[0]) == int(frames[i])
        torch.testing.assert_close(feats[i, : frames[i]], alone[0], atol=1e-5, rtol=0)
        assert (feats[i, frames[i]:] == 0).all()
    # Garbage in the padding region must not matter either.
    noisy = x + (torch.arange(x.shape[1])[None] >= lengths[:, None]) * torch.randn_like(x)
    torch.testing.assert_close(lm(noisy, lengths)[0], feats)


def test_feature_frames_agrees_with_logmel() -> None:
    cfg = FeatureConfig()
    lm = LogMel(cfg)
    for n in (1, 159, 160, 161, 16000, 23999):
        assert feature_frames(n / 16000, cfg) == int(lm.num_frames(torch.tensor([n]))[0])


def test_utterance_cmvn_ignores_padding(waves: list[torch.Tensor]) -> None:
    lm, cmvn = LogMel(), UtteranceCMVN()
    x, lengths = batch(waves[:4])
    feats, frames = lm(x, lengths)
    normed = cmvn(feats, frames)
    for i in range(4):
        valid = normed[i, : frames[i]]
        assert valid.mean(0).abs().max() < 1e-4
        # 8 kHz recordings upsampled to 16 kHz have constant (floored) bins above 4 kHz: no variance.
        live = feats[i, : frames[i]].std(0) > 1e-3
        assert (valid[:, live].std(0, unbiased=False) - 1).abs().max() < 1e-2
        torch.testing.assert_close(valid, cmvn(feats[i : i + 1, : frames[i]], frames[i : i + 1])[0], atol=1e-5, rtol=0)
        assert (normed[i, frames[i]:] == 0).all()


def test_global_cmvn_fit_and_state(waves: list[torch.Tensor]) -> None:
    lm = LogMel()
    mats = [lm(w[None])[0][0] for w in waves]
    cmvn = GlobalCMVN(80).fit(mats)
    allf = torch.cat(mats)
    torch.testing.assert_close(cmvn.mean, allf.mean(0), atol=1e-4, rtol=1e-4)
    x, lengths = batch(waves)
    feats, frames = lm(x, lengths)
    out = cmvn(feats, frames)
    valid = torch.cat([out[i, : frames[i]] for i in range(len(waves))])
    assert valid.mean(0).abs().max() < 1e-3
    restored = GlobalCMVN(80)
    restored.load_state_dict(cmvn.state_dict())
    assert torch.equal(restored.mean, cmvn.mean) and torch.equal(restored.std, cmvn.std)


def test_specaugment_only_in_training(waves: list[torch.Tensor]) -> None:
    torch.manual_seed(0)
    lm, aug = LogMel(), SpecAugment(freq_masks=2, freq_width=10, time_masks=2, time_width=0.1)
    x, lengths = batch(waves[:4])
    feats, frames = lm(x, lengths)
    aug.eval()
    assert torch.equal(aug(feats, frames), feats)
    aug.train()
    masked = aug(feats, frames)
    changed = (masked != feats)
    assert changed.any()
    assert (masked[changed] == 0).all()
    for i in range(4):  # time masks stay within each utterance's bound
        width = (changed[i].all(dim=1)).sum()
        assert width <= 2 * int(frames[i] * 0.1) + 1


def test_config_round_trip() -> None:
    cfg = FeatureConfig(n_mels=40, f_max=4000.0)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        FeatureConfig.from_dict({"n_mel": 3})


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax, htk, norm", [
    (8000, 256, 40, 0.0, None, False, "slaney"), (16000, 512, 80, 20.0, 7600.0, False, "slaney"),
    (16000, 400, 64, 0.0, None, True, None), (22050, 1024, 128, 0.0, 8000.0, True, "slaney"),
])
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    import librosa

    from asr_s2s.features import mel_filterbank

    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk=htk, norm=norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_level_norm_makes_features_gain_invariant(waves: list[torch.Tensor]) -> None:
    """A recording 26 dB quieter or 12 dB louder gives the same level-normalised log-mel (FSDD's quietest speaker
    is ~20 dB below the others); without level_norm every value moves by 2 ln(gain)."""
    cfg = FeatureConfig(sample_rate=8000, n_mels=40)
    plain, normed = LogMel(cfg), LogMel(FeatureConfig(**{**cfg.to_dict(), "level_norm": True}))
    rng = torch.Generator().manual_seed(0)
    for w in waves[:4]:
        w = w / w.abs().max() * 0.2 + 1e-3 * torch.randn(w.shape, generator=rng)  # a microphone's noise floor
        ref = normed(w[None])[0][0]
        for gain in (0.05, 4.0):
            torch.testing.assert_close(normed((w * gain)[None])[0][0], ref, atol=1e-4, rtol=0)
            assert (plain((w * gain)[None])[0][0] - plain(w[None])[0][0]).mean() == pytest.approx(2 * np.log(gain), abs=1e-3)
        energy = torch.logsumexp(ref, -1) - np.log(ref.shape[-1])  # the loud frames sit at 0 and nothing is below the range
        assert float(torch.quantile(energy, 0.95)) == pytest.approx(0.0, abs=0.5)
        assert float(ref.min()) >= -80 * np.log(10) / 10 - 1e-5


def test_level_norm_ignores_padding_and_matches_the_exported_frontend(waves: list[torch.Tensor]) -> None:
    from asr_s2s.export import ExportedModel
    from asr_s2s.features import normalize_level

    lm = LogMel(FeatureConfig(level_norm=True))
    x, lengths = batch(waves)
    noisy = x + (torch.arange(x.shape[1])[None] >= lengths[:, None]) * torch.randn_like(x)  # loud garbage past the ends
    feats, frames = lm(noisy, lengths)
    raw, _ = LogMel()(x, lengths)
    for i, w in enumerate(waves):
        alone, _ = lm(w[None])
        torch.testing.assert_close(feats[i, : frames[i]], alone[0], atol=1e-5, rtol=0)
        assert (feats[i, frames[i]:] == 0).all()
        numpy_side = ExportedModel._normalize_level(raw[i, : frames[i]].double().numpy())
        np.testing.assert_allclose(numpy_side, normalize_level(raw[i : i + 1, : frames[i]], frames[i : i + 1])[0].numpy(),
                                   atol=1e-4)


def test_level_norm_is_off_for_configs_and_model_files_without_it() -> None:
    """Model files written before the option existed carry no ``level_norm`` key and keep their features."""
    d = FeatureConfig().to_dict()
    assert d.pop("level_norm") is False and FeatureConfig.from_dict(d).level_norm is False
