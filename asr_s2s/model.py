"""A complete recognizer (or translator): frontend + normalisation + seq2seq core + tokenizer(s),
saved as one self-contained checkpoint and rebuilt by :func:`load_model`.

The model file holds only plain types and tensors, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .features import FeatureConfig, GlobalCMVN, LogMel, SpecAugment, UtteranceCMVN
from .seq2seq import ModelConfig, SearchResult, Seq2Seq
from .text import UNK, tokenizer_from_state_dict
from .transcribe import Segment, Transcript, transcribe_inputs  # noqa: F401  (Segment: re-exported)

if TYPE_CHECKING:
    from .decoding import DecodeOptions
    from .transcribe import VADConfig

FORMAT = "asr-s2s/1"
BUNDLED = Path(__file__).resolve().parent / "assets"


class ASRModel(nn.Module):
    """Speech (``cfg.input == 'audio'``) or text (``'text'``) in, tokens out.

    Audio path: waveform -> LogMel -> CMVN (global statistics saved with the model, or per
    utterance) -> SpecAugment (training only) -> Seq2Seq. Text path: source token ids -> Seq2Seq.
    """

    def __init__(self, cfg: ModelConfig, tokenizer: Any, features: FeatureConfig | None = None,
                 cmvn: str = "global", spec_augment: dict | None = None, src_tokenizer: Any = None):
        super().__init__()
        self.cfg, self.tokenizer, self.src_tokenizer = cfg, tokenizer, src_tokenizer
        self.is_audio = cfg.input == "audio"
        self.features = (features or FeatureConfig()) if self.is_audio else None
        self.cmvn_kind = cmvn
        if self.is_audio:
            self.logmel = LogMel(self.features)
            self.cmvn = GlobalCMVN(self.features.n_mels) if cmvn == "global" else UtteranceCMVN() if cmvn == "utterance" else None
            self.spec_augment = SpecAugment(**spec_augment) if spec_augment else None
        else:
            self.logmel = self.cmvn = self.spec_augment = None
        self.seq2seq = Seq2Seq(cfg)

    # ---- feature side -------------------------------------------------------------------------
    @property
    def cmvn_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Global CMVN's statistics, (mean (F,), std (F,)) as detached CPU copies; None for a model that
        normalises per utterance or not at all (nothing to carry)."""
        if not isinstance(self.cmvn, GlobalCMVN):
            return None
        return self.cmvn.mean.detach().cpu().clone(), self.cmvn.std.detach().cpu().clone()

    @torch.no_grad()
    def set_cmvn_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set global CMVN's statistics, mean (F,) and std (F,) (fitted on training features, or read from a model
        file or checkpoint); the one place they enter a model. A model without global CMVN refuses them."""
        if not isinstance(self.cmvn, GlobalCMVN):
            raise ValueError(f"this model normalises with cmvn {self.cmvn_kind!r}: it has no global statistics to set")
        self.cmvn.mean.copy_(mean)
        self.cmvn.std.copy_(std)

    def normalize(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw log-mel ``(B,T,F)`` -> normalised (and, in training, augmented) features."""
        if self.cmvn is not None:
            feats = self.cmvn(feats, lengths)
        if self.spec_augment is not None and self.training:
            feats = self.spec_augment(feats, lengths)
        return feats

    def prepare_source(self, src: torch.Tensor, src_lens: torch.Tensor) -> torch.Tensor:
        return self.normalize(src, src_lens) if self.is_audio else src

    def loss(self, src: torch.Tensor, src_lens: torch.Tensor, tgt: torch.Tensor, tgt_lens: torch.Tensor,
             teacher_forcing: float = 1.0) -> dict:
        return self.seq2seq.loss(self.prepare_source(src, src_lens), src_lens, tgt, tgt_lens, teacher_forcing=teacher_forcing)

    forward = loss  # so DistributedDataParallel can wrap the model

    @torch.inference_mode()
    def decode(self, src: torch.Tensor, src_lens: torch.Tensor, beam: int = 1, options: "DecodeOptions | None" = None,
               max_len: int | torch.Tensor = 200, **opts):
        """Batched search on prepared inputs; returns the core's SearchResult. `options` (a DecodeOptions) says
        how; without it, `beam` and `opts` (precision, length_norm, alpha, max_len_ratio) build one."""
        from .decoding import DecodeOptions, decode_batch

        if options is None:
            options = DecodeOptions(beam=max(1, beam), **opts)
        src = self.prepare_source(src, src_lens)
        return decode_batch(self.seq2seq, src, src_lens, options, lm=self.language_model(options),
                            vocabulary=self.vocabulary_constraint(options), max_len=max_len)

    # ---- decoding resources ---------------------------------------------------------------------
    @property
    def recommended_decoding(self) -> "DecodeOptions":
        """The decoding this model was tuned with (saved in its file), else greedy attention decoding."""
        from .decoding import DecodeOptions

        d = getattr(self, "_recommended", None)
        return DecodeOptions.from_dict(d) if d else DecodeOptions()

    def set_recommended_decoding(self, options: "DecodeOptions | None") -> None:
        self._recommended = None if options is None else {k: v for k, v in options.to_dict().items()
                                                          if k not in ("precision", "vocabulary")}

    def attach_lm(self, lm_payload: dict | None) -> None:
        """Carry a language model inside this model's file (a payload of lm.save_lm's format), used when
        decoding asks for an LM weight without naming a file."""
        self._lm_payload = lm_payload
        getattr(self, "_lm_cache", {}).pop(None, None)

    def language_model(self, options: "DecodeOptions"):
        """The LSTMLM that `options` asks for (loaded once per file), or None."""
        if options.lm_weight <= 0.0:
            return None
        cache = self.__dict__.setdefault("_lm_cache", {})
        key = options.lm
        if key not in cache:
            from .lm import LM_FORMAT, LMConfig, LSTMLM, load_lm

            if key is None:
                payload = getattr(self, "_lm_payload", None)
                if payload is None:
                    raise ValueError("an LM weight needs a language model: pass --lm FILE (this model carries none)")
                lm = LSTMLM(LMConfig.from_dict(payload["config"]))
                lm.load_state_dict(payload["model"])
                tok_state, source = payload["tokenizer"], "the model's own language model"
            else:
                lm, tok, _ = load_lm(key)
                tok_state, source = tok.state_dict(), str(key)
            if tok_state != self.tokenizer.state_dict():
                raise ValueError(f"{source}: the language model was trained with another tokenizer than this "
                                 "model's; train it with `asr-s2s train-lm ... --tokenizer MODEL`")
            cache[key] = lm.eval().to(self.device)
        return cache[key]

    def vocabulary_constraint(self, options: "DecodeOptions"):
        """The trie scorer for `options.vocabulary` (built once per vocabulary), or None."""
        if options.vocabulary is None:
            return None
        from .decoding import vocabulary_constraint

        cache = self.__dict__.setdefault("_vocab_cache", {})
        key = (options.vocabulary, options.vocabulary_mode)
        if key not in cache:
            cache.clear()
            cache[key] = vocabulary_constraint(self.tokenizer, options.vocabulary, options.vocabulary_mode).to(self.device)
        return cache[key]

    # ---- user API -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def features_of(self, waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(w) for w in waves])
        batch = nn.utils.rnn.pad_sequence(list(waves), batch_first=True).to(self.device)
        return self.logmel(batch, lengths.to(self.device))

    def decode_waves(self, waves: Sequence[torch.Tensor], options: "DecodeOptions",
                     max_len: int | torch.Tensor = 200) -> SearchResult:
        """One batch of waveforms (each (N_i,) at the model's sample rate) -> the core's SearchResult (row i for
        waves[i]): log-mel, normalisation, search with `options`. `max_len`: one limit or a (B,) tensor."""
        feats, lens = self.features_of(waves)
        return self.decode(feats, lens, options=options, max_len=max_len)

    def transcribe(self, inputs: Union[str, os.PathLike, np.ndarray, torch.Tensor, Iterable], sample_rate: int | None = None,
                   beam: int | None = None, batch_size: int = 16, long_form: bool = True, precision: str = "auto",
                   options: "DecodeOptions | None" = None, vad: "VADConfig | str | None" = None, **decoding: Any
                   ) -> Union[Transcript, list[Transcript]]:
        """Transcribe files or arrays (arrays need ``sample_rate``). One input gives one Transcript,
        a list gives a list. Recordings longer than the model's training utterances are split at
        silences (see :mod:`asr_s2s.transcribe`).

        Decoding follows ``options`` (a DecodeOptions), else the model's recommended decoding, with ``beam``,
        ``precision`` and any DecodeOptions field given as a keyword on top; a keyword that describes the search
        (beam, ctc_weight, lm, lm_weight, length_bonus, length_norm) replaces the recommended setting with plain
        defaults plus what was given (see decoding.choose_options), e.g.
        ``model.transcribe("a.wav", vocabulary=["yes", "no"])``, ``lm="lm.pt", lm_weight=0.3``,
        ``ctc_weight=0.5``. ``precision="bf16"`` runs the encoder (and the LSTM/location decoder's gate
        product) in bfloat16 (see :mod:`asr_s2s.accel`); "auto" (the default) does so where the CPU
        has native bf16 and stays fp32 elsewhere; "fp32" never does; "int8" is bf16 plus int8 weights in that
        decoder's batch-1 steps. Long recordings decode at most 1.5 tokens per encoder frame unless
        ``max_len_ratio`` says otherwise. ``vad``: how long recordings are split, "silero", "energy" or a
        :class:`asr_s2s.transcribe.VADConfig` (default: silero when silero-vad is installed, else energy)."""
        from .decoding import choose_options

        decoding.setdefault("max_len_ratio", 1.5)
        given = dict(beam=beam, precision=precision, **decoding)
        opts = options.replace(**given) if options is not None else choose_options(self.recommended_decoding, **given)
        single = isinstance(inputs, (str, os.PathLike, np.ndarray, torch.Tensor))
        items = [inputs] if single else list(inputs)
        results = transcribe_inputs(self, items, sample_rate=sample_rate, batch_size=batch_size,
                                    long_form=long_form, options=opts, vad=vad)
        return results[0] if single else results

    def translate(self, sentences: Sequence[str], beam: int | None = None, batch_size: int = 64,
                  options: "DecodeOptions | None" = None, **decoding: Any) -> list[str]:
        """Text models: translate sentences (batched).

        Decoding follows ``options`` (a DecodeOptions), else the model's recommended decoding (the one its
        recipe tuned on dev, saved in the model file; greedy for a model that carries none), with ``beam`` and any
        DecodeOptions field given as a keyword on top. As in :meth:`transcribe`, a keyword that describes the
        search (beam, length_norm, alpha, length_bonus, ...) replaces the recommended setting with plain defaults
        plus what was given: ``beam=1`` is greedy decoding whatever the model recommends, ``beam=8,
        length_norm="gnmt", alpha=0.6`` a beam search with the GNMT length penalty ((5+|y|)/6)^alpha."""
        from .decoding import choose_options

        if self.is_audio:
            raise TypeError("translate() is for text models; use transcribe() for audio")
        given = dict(beam=beam, **decoding)
        opts = options.replace(**given) if options is not None else choose_options(self.recommended_decoding, **given)
        self.eval()
        out: list[str] = []
        for i in range(0, len(sentences), batch_size):
            # An empty source still needs one position for the encoder: feed <unk>.
            ids = [torch.tensor(self.src_tokenizer.encode(s) or [UNK]) for s in sentences[i : i + batch_size]]
            lens = torch.tensor([len(x) for x in ids])
            src = nn.utils.rnn.pad_sequence(ids, batch_first=True).to(self.device)
            res = self.decode(src, lens.to(self.device), options=opts)
            out.extend(self.tokenizer.decode(t) for t in res.tokens)
        return out

    # ---- persistence --------------------------------------------------------------------------
    def payload(self, meta: dict | None = None, half: bool = False) -> dict:
        """Plain-types checkpoint dict. ``half`` stores float weights as fp16 (half the file size;
        they are loaded back into fp32 parameters)."""
        stats = self.cmvn_stats
        return {
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "tokenizer": self.tokenizer.state_dict(),
            "src_tokenizer": self.src_tokenizer.state_dict() if self.src_tokenizer is not None else None,
            "features": self.features.to_dict() if self.features is not None else None,
            "cmvn_kind": self.cmvn_kind,
            "cmvn": None if stats is None else {"mean": stats[0], "std": stats[1]},
            "model": {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
                      for k, v in self.seq2seq.state_dict().items()},
            "meta": dict(meta or {}),
            "decoding": getattr(self, "_recommended", None),
            "lm": _half_lm(getattr(self, "_lm_payload", None)) if half else getattr(self, "_lm_payload", None),
        }

    def save(self, path: Union[str, os.PathLike], meta: dict | None = None, half: bool = False) -> None:
        save_checkpoint(path, self.payload(meta, half=half))

    @classmethod
    def from_payload(cls, payload: dict, source: str = "<payload>") -> "ASRModel":
        if payload.get("format") != FORMAT:
            from .checkpoint import CheckpointError

            raise CheckpointError(f"{source}: not an asr-s2s model file (format {payload.get('format')!r})")
        cfg = ModelConfig.from_dict(payload["config"])
        feats = FeatureConfig.from_dict(payload["features"]) if payload.get("features") else None
        src_tok = tokenizer_from_state_dict(payload["src_tokenizer"]) if payload.get("src_tokenizer") else None
        model = cls(cfg, tokenizer_from_state_dict(payload["tokenizer"]), feats, cmvn=payload.get("cmvn_kind", "global"),
                    src_tokenizer=src_tok)
        model.seq2seq.load_state_dict(payload["model"])
        if payload.get("cmvn") and isinstance(model.cmvn, GlobalCMVN):  # save writes none for other kinds
            model.set_cmvn_stats(payload["cmvn"]["mean"], payload["cmvn"]["std"])
        model.meta = payload.get("meta", {})
        if payload.get("decoding"):
            from .decoding import DecodeOptions

            model.set_recommended_decoding(DecodeOptions.from_dict(payload["decoding"]))
        model.attach_lm(payload.get("lm"))
        return model.eval()


def _half_lm(payload: dict | None) -> dict | None:
    if payload is None:
        return None
    return {**payload, "model": {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}}


def default_model_path() -> Path:
    return BUNDLED / "default.pt"


def load_model(path: Union[str, os.PathLike, None] = None, device: str | torch.device = "cpu") -> ASRModel:
    """Load a model file (``None`` or ``"default"``: the bundled default recognizer)."""
    if path is None or str(path) == "default":
        path = default_model_path()
    payload = load_checkpoint(path)
    try:
        model = ASRModel.from_payload(payload, str(path))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        # A file of plain types that is not (or no longer) a valid model: missing keys, wrong shapes...
        raise CheckpointError(f"{path}: not a valid asr-s2s model file ({type(e).__name__}: {str(e)[:300]})") from e
    return model.to(device)


__all__ = ["ASRModel", "Transcript", "Segment", "load_model", "default_model_path"]
