"""Helpers shared by the seq2seq tests: real FSDD log-mel batches, char vocabularies, overfitting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from asr_s2s.audio import load_audio
from asr_s2s.features import FeatureConfig, LogMel, UtteranceCMVN
from asr_s2s.seq2seq import DecoderConfig, EncoderConfig, ModelConfig, Seq2Seq

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
N_MELS = 40
_LOGMEL = LogMel(FeatureConfig(sample_rate=8000, n_mels=N_MELS))
_CMVN = UtteranceCMVN()

# Under bf16 autocast torch hands an LSTM with fp32 weights to oneDNN's bf16 LSTM, which needs AVX-512: on a CPU
# without it (or ONEDNN_MAX_CPU_ISA=AVX2) torch raises "could not create a primitive descriptor". Training with
# amp: bf16 is for CPUs with native bf16 (config.py); decoding in bf16 runs a bf16 copy and is not affected.
needs_onednn_bf16 = pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                                       reason="bf16 autocast of an LSTM needs oneDNN's bf16 (AVX-512) in torch")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run fastest on one thread, and on a shared, loaded CPU two OpenMP threads that
    spin-wait for each other are 10-50x slower. Imported by the test modules (autouse); restored after."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


# Made-up char-level "translation" pairs (input=text).
TEXT_PAIRS = [
    ("the cat", "le chat"),
    ("a dog", "un chien"),
    ("red car", "auto rosso"),
    ("good day", "bon jour"),
    ("my house", "ma maison"),
    ("big tree", "grand arbre"),
    ("hot tea", "the chaud"),
    ("no time", "pas le temps"),
]


class CharVocab:
    """pad=0, sos=1, eos=2, unk=3, then the characters seen."""

    def __init__(self, texts: list[str]) -> None:
        self.chars = sorted({c for t in texts for c in t})
        self.index = {c: i + 4 for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars) + 4

    def encode(self, s: str) -> list[int]:
        return [self.index.get(c, 3) for c in s]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i - 4] if i >= 4 else "?" for i in ids)


def pad_ids(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(s) for s in seqs])
    out = torch.zeros(len(seqs), int(lens.max()), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out, lens


def logmel(path: Path) -> torch.Tensor:
    """(T, N_MELS) per-utterance-normalised log-mel of an 8 kHz FSDD wav (25 ms window, 10 ms hop),
    through the package's own frontend."""
    wave = load_audio(path, sample_rate=8000)
    feats, lens = _LOGMEL(wave[None], torch.tensor([wave.numel()]))
    return _CMVN(feats, lens)[0, : int(lens[0])].contiguous()


def pad_feats(feats: list[torch.Tensor], fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([f.size(0) for f in feats])
    out = torch.full((len(feats), int(lens.max()), feats[0].size(1)), fill)
    for i, f in enumerate(feats):
        out[i, : f.size(0)] = f
    return out, lens


def pick_eight(files: list[Path]) -> list[Path]:
    """8 utterances of 8 different digits, alternating speakers."""
    by = {(int(f.stem.split("_")[0]), f.stem.split("_")[1]): f for f in files if f.stem.endswith("_0")}
    speakers = sorted({s for _, s in by})
    return [by[(d, speakers[d % len(speakers)])] for d in range(8)]


def audio_batch(files: list[Path]):
    """-> feats (8,T,F), lens, targets (8,U), target lens, vocab."""
    chosen = pick_eight(files)
    texts = [WORDS[int(f.stem.split("_")[0])] for f in chosen]
    vocab = CharVocab(WORDS)
    x, xl = pad_feats([logmel(f) for f in chosen])
    y, yl = pad_ids([vocab.encode(t) for t in texts])
    return x, xl, y, yl, vocab


def text_batch():
    src_v = CharVocab([s for s, _ in TEXT_PAIRS])
    tgt_v = CharVocab([t for _, t in TEXT_PAIRS])
    x, xl = pad_ids([src_v.encode(s) for s, _ in TEXT_PAIRS])
    y, yl = pad_ids([tgt_v.encode(t) for _, t in TEXT_PAIRS])
    return x, xl, y, yl, src_v, tgt_v


def tiny_config(cell: str, attention: str, vocab_size: int, *, text_vocab: int | None = None,
                hidden: int = 64) -> ModelConfig:
    text = text_vocab is not None
    enc = EncoderConfig(cell=cell, input_dim=32 if text else N_MELS, hidden=hidden, layers=1, bidirectional=True,
                        dropout=0.0, subsampling="none" if text else "conv", subsample_factor=4, conv_channels=8)
    dec = DecoderConfig(cell=cell, embed_dim=32, hidden=hidden, layers=1, attention=attention,
                        attention_dim=hidden, location_channels=8, location_kernel=15, dropout=0.0)
    return ModelConfig(input="text" if text else "audio", vocab_size=vocab_size, src_vocab_size=text_vocab,
                       encoder=enc, decoder=dec, label_smoothing=0.1)


def overfit(model: Seq2Seq, x, xl, y, yl, *, max_steps: int = 600, lr: float = 3e-3, check_every: int = 10,
            seed: int = 0) -> tuple[int | None, float]:
    """Adam on one batch until greedy decoding reproduces every reference.
    -> (steps needed or None, seconds)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    refs = [y[i, : yl[i]].tolist() for i in range(len(yl))]
    t0 = time.perf_counter()
    for step in range(1, max_steps + 1):
        model.train()
        loss = model.loss(x, xl, y, yl)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if step % check_every == 0 and model.greedy(x, xl, max_len=20, max_len_ratio=3.0).tokens == refs:
            return step, time.perf_counter() - t0
    return None, time.perf_counter() - t0
