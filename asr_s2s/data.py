"""Datasets, length-bucketed batch sampler and collate functions (manifests live in :mod:`asr_s2s.manifest`).

Typical audio pipeline::

    from asr_s2s.data import AudioDataset, LengthBucketSampler, collate_audio
    from asr_s2s.manifest import read_manifest

    entries, report = read_manifest("train.jsonl", tokenizer=tok, max_duration=20, on_error="skip")
    ds = AudioDataset(entries, tok, FeatureConfig(), cache_dir="cache/feats", speed_perturb=(0.9, 1.0, 1.1),
                      on_error="skip")
    sampler = LengthBucketSampler(ds.lengths, max_frames=20000, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_audio, num_workers=2)
    for epoch in range(n):
        sampler.set_epoch(epoch)
        for batch in loader:
            if batch is None: continue          # every item of the batch was unreadable (on_error="skip")
            batch["feats"], batch["feat_lens"], batch["tokens"], batch["token_lens"], batch["num_skipped"]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .audio import AudioError, load_audio
from .atomic import atomic_open
from .augment import AugmentConfig, Augmenter
from .features import FeatureConfig, LogMel, feature_frames
from .manifest import (  # noqa: F401  (re-exported: data.py is the documented home of the data API)
    ManifestEntry,
    ManifestError,
    ManifestReport,
    export_kaldi_dir,
    import_kaldi_dir,
    read_manifest,
    read_tsv_pairs,
    write_manifest,
)
from .text import PAD

log = logging.getLogger(__name__)

CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------------------ sampler
class LengthBucketSampler(Sampler[list[int]]):
    """Batch sampler: batches of similar length whose padded size ``batch_size * max_len`` stays within
    ``max_frames``.

    Each epoch: sort by length (ties broken at random per epoch), cut the sorted list greedily into batches,
    shuffle the batch order (deterministic in ``seed`` and the epoch).  An utterance longer than ``max_frames``
    forms a batch of its own (it is never dropped).

    :meth:`batches` gives an epoch's batches without iterating: the trainer takes its DDP share of each batch
    and resumes in mid-epoch by position in that list (:mod:`asr_s2s.distributed`), so this class knows nothing
    of ranks or resume points.
    """

    def __init__(self, lengths: Sequence[float], max_frames: float, shuffle: bool = True, seed: int = 0,
                 max_batch_size: int | None = None):
        self.lengths = np.asarray(lengths, dtype=np.float64).reshape(-1)
        if self.lengths.size and (not np.all(np.isfinite(self.lengths)) or self.lengths.min() < 0):
            raise ValueError("lengths must be finite and non-negative")
        if max_frames <= 0:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.max_frames = float(max_frames)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.max_batch_size = max_batch_size
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def _build(self, epoch: int) -> list[list[int]]:
        n = self.lengths.size
        if n == 0:
            return []
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            order = np.lexsort((rng.random(n), self.lengths))
        else:
            rng = None
            order = np.argsort(self.lengths, kind="stable")
        lens = self.lengths[order].tolist()
        order = order.tolist()
        cap, max_bs = self.max_frames, self.max_batch_size or n
        batches: list[list[int]] = []
        cur: list[int] = []
        cur_max = 0.0
        for idx, ln in zip(order, lens):
            new_max = ln if ln > cur_max else cur_max
            if cur and ((len(cur) + 1) * new_max > cap or len(cur) >= max_bs):
                batches.append(cur)
                cur, new_max = [], ln
            cur.append(idx)
            cur_max = new_max
        if cur:
            batches.append(cur)
        if rng is not None:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches

    def _cached(self, epoch: int) -> list[list[int]]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._build(epoch))
        return self._cache[1]

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every batch of an epoch (default: the current one), in epoch order."""
        return [list(b) for b in self._cached(self.epoch if epoch is None else epoch)]

    def __iter__(self):
        for b in self._cached(self.epoch):
            yield list(b)

    def __len__(self) -> int:
        return len(self._cached(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that iteration yields (a different shuffle each)."""
        self.epoch = int(epoch)


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[float]) -> float:
    """Share of padded frames: ``1 - sum(real) / sum(batch_size * max_len)`` over ``batches``."""
    lens = np.asarray(lengths, dtype=np.float64)
    real = padded = 0.0
    for b in batches:
        bl = lens[list(b)]
        real += bl.sum()
        padded += len(b) * bl.max()
    return 0.0 if padded == 0 else 1.0 - real / padded


# ------------------------------------------------------------------------------------------------ audio dataset
def _pad_stack(seqs: Sequence[torch.Tensor], value: float = 0) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=value)


class AudioDataset(Dataset):
    """Manifest entries -> ``{"id", "feats" (T, F) float32, "tokens" (U,) long, "duration"}``.

    Audio is loaded with :func:`asr_s2s.audio.load_audio` (honouring ``offset``/``duration``) at
    ``feature_cfg.sample_rate``, optionally speed-perturbed (resampling, pitch changes with tempo, the Kaldi
    recipe: a factor drawn uniformly from ``speed_perturb`` per item with torch's RNG, so DataLoader workers
    differ), optionally augmented (``augment``: an :class:`asr_s2s.augment.AugmentConfig`; each item's draws
    come from ``(augment_seed, epoch, index)`` — call :meth:`set_epoch` before each epoch — so workers, their
    order and a resume never change them), then turned into log-mel with :class:`asr_s2s.features.LogMel`.

    ``cache_dir``: unperturbed features are stored as ``.npy`` keyed by (file path, mtime, size, offset,
    duration, feature config) — edited audio or a changed config never hits a stale entry — and written
    atomically (temp file + rename) so concurrent workers and killed runs leave no torn files; an unreadable
    cache file is recomputed.  Perturbed copies bypass the cache: features of clean audio cannot carry a
    waveform augmentation, so an item whose draw applies any augmentation part (or a speed other than 1) is
    computed from its waveform, and one whose draw applies none still comes from the cache.

    ``on_error``: ``"raise"`` (default) lets the :class:`~asr_s2s.audio.AudioError` naming the file
    propagate; ``"skip"`` logs it and returns ``None``, which :func:`collate_audio` drops and counts in
    ``batch["num_skipped"]``.
    """

    def __init__(
        self,
        entries: Sequence[ManifestEntry],
        tokenizer: Any,
        feature_cfg: FeatureConfig | None = None,
        cache_dir: str | os.PathLike | None = None,
        speed_perturb: Sequence[float] | None = None,
        sample_rate: int | None = None,
        on_error: str = "raise",
        augment: AugmentConfig | None = None,
        augment_seed: int = 0,
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.entries = list(entries)
        self.tokenizer = tokenizer
        self.feature_cfg = feature_cfg or FeatureConfig()
        self.sample_rate = int(sample_rate or self.feature_cfg.sample_rate)
        if self.sample_rate != self.feature_cfg.sample_rate:
            raise ValueError(
                f"sample_rate {self.sample_rate} differs from feature_cfg.sample_rate {self.feature_cfg.sample_rate}"
            )
        self.speed_perturb = tuple(float(s) for s in speed_perturb) if speed_perturb else None
        if self.speed_perturb and any(not 0.5 <= s <= 2.0 for s in self.speed_perturb):
            raise ValueError(f"speed factors must be in [0.5, 2], got {self.speed_perturb}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.on_error = on_error
        self._frontend: LogMel | None = None
        cfg_json = json.dumps(self.feature_cfg.to_dict(), sort_keys=True)
        self._cfg_hash = hashlib.sha1(f"{CACHE_VERSION}|{cfg_json}".encode()).hexdigest()[:16]
        self.cache_hits = 0
        self.cache_misses = 0
        self.epoch = 0
        self.augmenter: Augmenter | None = None
        if augment is not None and augment.active:
            self.augmenter = Augmenter(augment, self.sample_rate, augment_seed, other_wave=self._other_wave,
                                       num_items=len(self.entries))

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentation draws the next items get (set before a DataLoader starts its workers)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def lengths(self) -> list[int]:
        """Feature frames per entry from the manifest durations (for :class:`LengthBucketSampler`)."""
        return [feature_frames(e.duration, self.feature_cfg) for e in self.entries]

    @property
    def frontend(self) -> LogMel:
        if self._frontend is None:  # built lazily: cheap to pickle into workers
            self._frontend = LogMel(self.feature_cfg)
        return self._frontend

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["_frontend"] = None
        return d

    # -- cache ---------------------------------------------------------------------------------------------------
    def cache_path(self, index: int) -> Path | None:
        """Where entry ``index``'s features are cached (None without ``cache_dir``; stats the audio file)."""
        if self.cache_dir is None:
            return None
        e = self.entries[index]
        path = os.path.abspath(e.audio_filepath)
        st = os.stat(path)
        key = json.dumps(
            [path, st.st_mtime_ns, st.st_size, round(float(e.offset), 6), round(float(e.duration), 6), self._cfg_hash]
        )
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.npy"

    def _load_cached(self, path: Path) -> torch.Tensor | None:
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception as exc:  # torn/corrupt file: recompute and overwrite
            log.warning("feature cache %s unreadable (%s); recomputing", path, exc)
            return None
        if arr.ndim != 2 or arr.shape[1] != self.feature_cfg.n_mels or arr.dtype != np.float32:
            log.warning("feature cache %s has shape %s dtype %s; recomputing", path, arr.shape, arr.dtype)
            return None
        return torch.from_numpy(arr)

    @staticmethod
    def _store(path: Path, feats: torch.Tensor) -> None:
        with atomic_open(path, "wb") as f:
            np.save(f, feats.numpy(), allow_pickle=False)

    # -- items ---------------------------------------------------------------------------------------------------
    def _pick_speed(self) -> float:
        if not self.speed_perturb:
            return 1.0
        return self.speed_perturb[int(torch.randint(len(self.speed_perturb), ()))]

    def load_wave(self, index: int, speed: float = 1.0) -> torch.Tensor:
        """The entry's waveform at ``sample_rate``, speed-perturbed by ``speed`` (1.0: untouched)."""
        e = self.entries[index]
        wave = load_audio(e.audio_filepath, self.sample_rate, offset=e.offset, duration=e.duration)
        if speed != 1.0:
            import soxr

            # Resample sr -> sr/speed and play back at sr: `speed` times faster, pitch shifted (Kaldi's speed perturb).
            wave = torch.from_numpy(
                np.ascontiguousarray(soxr.resample(wave.numpy(), self.sample_rate, self.sample_rate / speed), dtype=np.float32)
            )
        return wave

    def _other_wave(self, index: int) -> np.ndarray:
        """Another utterance's clean waveform ``(M,)`` for babble / non-speech noise (empty if unreadable: no noise)."""
        try:
            return self.load_wave(index).numpy()
        except (AudioError, OSError) as exc:
            log.warning("noise source %s unreadable: %s", self.entries[index].audio_filepath, exc)
            return np.zeros(0, np.float32)

    def compute_features(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats, _ = self.frontend(wave[None], torch.tensor([wave.shape[0]]))
        return feats[0].contiguous()

    def features(self, index: int, speed: float = 1.0) -> torch.Tensor:
        """Log-mel ``(T, n_mels)`` of entry ``index`` (through the cache when ``speed == 1``)."""
        cpath = self.cache_path(index) if speed == 1.0 else None
        if cpath is not None:
            cached = self._load_cached(cpath)
            if cached is not None:
                self.cache_hits += 1
                return cached
            self.cache_misses += 1
        feats = self.compute_features(self.load_wave(index, speed))
        if cpath is not None:
            try:
                self._store(cpath, feats)
            except OSError as exc:  # full or read-only cache: train on, uncached
                log.warning("cannot write feature cache %s: %s", cpath, exc)
        return feats

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        e = self.entries[index]
        speed = self._pick_speed()
        plan = self.augmenter.plan(self.epoch, index) if self.augmenter is not None else {}
        try:
            if plan:
                wave = self.augmenter.apply(self.load_wave(index, speed).numpy(), plan)
                feats = self.compute_features(torch.from_numpy(wave))
            else:
                feats = self.features(index, speed)
        except (AudioError, OSError) as exc:
            if not isinstance(exc, AudioError):  # e.g. file vanished between manifest check and now
                exc = AudioError(e.audio_filepath, f"{type(exc).__name__}: {exc}")
            if self.on_error == "raise":
                raise exc
            log.warning("skipping utterance %s: %s", e.id, exc)
            return None
        tokens = torch.tensor(self.tokenizer.encode(e.text), dtype=torch.long)
        return {"id": e.id, "feats": feats, "tokens": tokens, "duration": e.duration / speed}


def collate_audio(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """List of :class:`AudioDataset` items -> ``feats (B, T, F)`` zero-padded, ``feat_lens (B,)``,
    ``tokens (B, U)`` padded with ``<pad>``=0, ``token_lens (B,)``, ``ids``, ``durations``, ``num_skipped``.
    ``None`` items (skipped bad audio) are dropped and counted; returns ``None`` if nothing is left."""
    items = [b for b in batch if b is not None]
    skipped = len(batch) - len(items)
    if not items:
        return None
    feats = [b["feats"] for b in items]
    tokens = [b["tokens"] for b in items]
    return {
        "feats": _pad_stack(feats, 0.0),
        "feat_lens": torch.tensor([f.shape[0] for f in feats], dtype=torch.long),
        "tokens": _pad_stack(tokens, PAD) if tokens else torch.zeros(0, 0, dtype=torch.long),
        "token_lens": torch.tensor([t.shape[0] for t in tokens], dtype=torch.long),
        "ids": [b["id"] for b in items],
        "durations": torch.tensor([float(b["duration"]) for b in items]),
        "num_skipped": skipped,
    }


# ------------------------------------------------------------------------------------------------- text dataset
class TextPairDataset(Dataset):
    """``[(source, target)]`` -> ``{"id", "src" (S,) long, "tokens" (U,) long}`` (no ``<sos>``/``<eos>``).

    With ``subword_alpha`` > 0 (subword regularisation; sentencepiece unigram tokenizers), each side is one of its
    ``subword_nbest`` best segmentations, drawn from a generator keyed by ``(seed, epoch, index)``: call
    :meth:`set_epoch` before each epoch. The draw is then the same in any worker, order or resumed run.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], src_tokenizer: Any, tgt_tokenizer: Any, ids: Sequence[str] | None = None,
                 subword_alpha: float = 0.0, subword_nbest: int = 16, seed: int = 0):
        self.pairs = list(pairs)
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(self.pairs))]
        if len(self.ids) != len(self.pairs):
            raise ValueError("ids and pairs differ in length")
        if subword_alpha > 0:
            for side, tok in (("source", src_tokenizer), ("target", tgt_tokenizer)):
                if getattr(tok, "model_type", None) != "unigram":
                    raise ValueError(f"subword regularisation needs sentencepiece unigram tokenizers; the {side} side's is "
                                     f"{getattr(tok, 'model_type', type(tok).__name__)}")
        self.subword_alpha, self.subword_nbest, self.seed = float(subword_alpha), int(subword_nbest), int(seed)
        self.epoch = 0
        self._lengths: list[int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose segmentations ``__getitem__`` draws (subword regularisation)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def lengths(self) -> list[int]:
        """max(source, target) token counts (encodes everything once; for :class:`LengthBucketSampler`)."""
        if self._lengths is None:
            self._lengths = [
                max(len(self.src_tokenizer.encode(s)), len(self.tgt_tokenizer.encode(t)), 1) for s, t in self.pairs
            ]
        return self._lengths

    def __getitem__(self, index: int) -> dict[str, Any]:
        src, tgt = self.pairs[index]
        if self.subword_alpha > 0:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            src_ids = self.src_tokenizer.sample_encode(src, self.subword_alpha, self.subword_nbest, rng)
            tgt_ids = self.tgt_tokenizer.sample_encode(tgt, self.subword_alpha, self.subword_nbest, rng)
        else:
            src_ids, tgt_ids = self.src_tokenizer.encode(src), self.tgt_tokenizer.encode(tgt)
        return {
            "id": self.ids[index],
            "src": torch.tensor(src_ids, dtype=torch.long),
            "tokens": torch.tensor(tgt_ids, dtype=torch.long),
        }


def collate_text(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """-> ``src (B, S)``, ``src_lens``, ``tokens (B, U)``, ``token_lens`` (padded with 0), ``ids``."""
    src = [b["src"] for b in batch]
    tgt = [b["tokens"] for b in batch]
    return {
        "src": _pad_stack(src, PAD),
        "src_lens": torch.tensor([s.shape[0] for s in src], dtype=torch.long),
        "tokens": _pad_stack(tgt, PAD),
        "token_lens": torch.tensor([t.shape[0] for t in tgt], dtype=torch.long),
        "ids": [b["id"] for b in batch],
    }


__all__ = [
    "AudioDataset",
    "LengthBucketSampler",
    "TextPairDataset",
    "collate_audio",
    "collate_text",
    "padding_fraction",
    "ManifestEntry",
    "ManifestError",
    "ManifestReport",
    "export_kaldi_dir",
    "import_kaldi_dir",
    "read_manifest",
    "read_tsv_pairs",
    "write_manifest",
]
