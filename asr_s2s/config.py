"""Training configuration: plain dataclasses, YAML through ``safe_load``, ``key.sub=value`` overrides.

No config framework: a YAML file is a nested mapping of the dataclass fields below, and
``--set optim.lr=3e-4`` changes one field (the value is parsed as YAML, so numbers, booleans,
lists and null work).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .features import FeatureConfig
from .seq2seq import ModelConfig


@dataclass
class DataConfig:
    task: str = "asr"  # asr | translation
    train: str = ""  # manifest (asr, JSON lines) or TSV pairs (translation)
    dev: str = ""
    tokenizer: str = "char"  # char | bpe | unigram
    vocab_size: int = 256  # sentencepiece only
    src_tokenizer: str = "unigram"  # translation source side
    src_vocab_size: int = 4000
    character_coverage: float = 1.0  # sentencepiece; ~0.9995 for scripts with thousands of characters
    lowercase: bool = True
    strip_punctuation: bool = False
    max_frames: int = 20000  # padded feature frames (audio) or tokens (text) per batch
    num_workers: int = 0
    cache_dir: Optional[str] = None  # feature cache; default EXPDIR/feats
    speed_perturb: bool = False
    # Waveform augmentation of the training split (asr_s2s.augment): {part: {p: ..., ...}}; empty = off.
    augment: dict = field(default_factory=dict)
    spec_augment: bool = True
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width: float = 0.05
    cmvn: str = "global"  # global | utterance | none
    cmvn_utterances: int = 1000  # training utterances used to fit global CMVN
    min_duration: float = 0.05
    max_duration: float = 30.0
    max_dev: Optional[int] = None  # cap dev utterances evaluated each epoch
    # Translation training: subword regularisation. Each training pair is re-segmented every epoch, drawn from its
    # subword_nbest best unigram segmentations with P ∝ P(seg)^subword_alpha (both sides; 0: off, always the best).
    subword_alpha: float = 0.0
    subword_nbest: int = 16


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 1e-6
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int = 500
    schedule: str = "cosine"  # cosine | noam | constant
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 30
    max_steps: Optional[int] = None  # updates; the run (and its learning-rate schedule) ends at min(this, epochs)
    max_minutes: Optional[float] = None  # opt-in safety cap: stops early, marked cut_short; never shapes the schedule
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 (GPU, or a CPU with native bf16: AVX512-BF16 / AMX) | fp16 (GPU only)
    threads: Optional[int] = None
    teacher_forcing: float = 1.0  # ratio at the start ...
    teacher_forcing_final: float = 1.0  # ... and after teacher_forcing_steps (scheduled sampling)
    teacher_forcing_steps: int = 0
    checkpoint_every: int = 200  # steps
    keep_epochs: int = 5  # epoch snapshots kept for averaging
    average_last: int = 0  # average the weights of the last N snapshots at the end (0: off)
    # Snapshot every N updates ("step-NNNNNNN.pt") instead of every epoch: a run of a few long epochs can then
    # average its last updates rather than weights whole epochs apart (0: epoch snapshots).
    snapshot_every: int = 0
    early_stop_patience: int = 0  # epochs without dev improvement before stopping (0: off)
    eval_beam: int = 1
    # The CTC head's share of the per-epoch dev score's search (0: attention alone). The dev score picks the kept
    # epoch and judges the weight average, so it should decode the way the model will be used: a joint CTC/attention
    # model's greedy attention output can rank epochs differently from its joint beam search.
    eval_ctc_weight: float = 0.0
    log_every: int = 20

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        d["optim"]["betas"] = list(self.optim.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        _reject_unknown(cls, d, "")
        model = ModelConfig.from_dict(d.pop("model")) if "model" in d else ModelConfig()
        feats = FeatureConfig.from_dict(d.pop("features")) if "features" in d else FeatureConfig()
        data = _build(DataConfig, d.pop("data", {}), "data.")
        optim = d.pop("optim", {})
        if "betas" in optim:
            optim = {**optim, "betas": tuple(optim["betas"])}
        return cls(model=model, features=feats, data=data, optim=_build(OptimConfig, optim, "optim."), **_coerce_floats(cls, d))

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _reject_unknown(cls, d: dict, prefix: str) -> None:
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(prefix + k for k in unknown)}")


def _build(cls, d: dict, prefix: str):
    _reject_unknown(cls, d, prefix)
    return cls(**_coerce_floats(cls, d))


def _coerce_floats(cls, d: dict) -> dict:
    """YAML 1.1 reads ``3e-4`` as a string: turn such strings into floats for float fields."""
    out = dict(d)
    for f in dataclasses.fields(cls):
        if f.name in out and isinstance(out[f.name], str) and "float" in str(f.type):
            try:
                out[f.name] = float(out[f.name])
            except ValueError:
                raise ValueError(f"config {f.name}: {out[f.name]!r} is not a number") from None
    return out


def parse_value(text: str) -> Any:
    """An override's value: YAML, except that numbers like ``3e-4`` are numbers."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return yaml.safe_load(text)


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """``["optim.lr=3e-4", "model.encoder.layers=2"]`` applied to a nested dict (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        node = d
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p} is not a section")
        try:
            node[parts[-1]] = parse_value(value)
        except yaml.YAMLError as e:  # includes python/* tags, which safe_load refuses to construct
            raise ValueError(f"override {item!r}: not a plain YAML value ({_first_line(e)})") from None
    return d


# Value rules checked by load_config, so that `--set epochs=-1` or `eval_beam: 0` is refused before any work,
# naming the key, instead of failing (or silently misbehaving) minutes into a run. (kind, bound): "int" >= bound,
# "int?" None or >= bound, "float>" > bound, "float>=" >= bound, "float?>" None or > bound, "unit" in [0, 1],
# "unit)" in [0, 1), "(unit" in (0, 1], "bool" true or false, a tuple: one of its values.
_RULES: dict[str, tuple[str, Any]] = {
    **{k: ("int", 1) for k in (
        "epochs", "eval_beam", "log_every", "data.max_frames", "data.vocab_size", "data.src_vocab_size",
        "data.cmvn_utterances", "features.sample_rate", "features.n_mels", "model.encoder.input_dim",
        "model.encoder.hidden", "model.encoder.layers", "model.encoder.conv_channels", "model.decoder.embed_dim",
        "model.decoder.hidden", "model.decoder.layers", "model.decoder.attention_dim", "model.decoder.location_channels",
        "model.decoder.location_kernel", "data.subword_nbest")},
    **{k: ("int", 0) for k in (
        "checkpoint_every", "keep_epochs", "average_last", "snapshot_every", "early_stop_patience", "teacher_forcing_steps", "seed",
        "data.num_workers", "data.freq_masks", "data.freq_width", "data.time_masks", "optim.warmup_steps")},
    **{k: ("int?", 1) for k in ("max_steps", "threads", "data.max_dev")},
    **{k: ("float>", 0.0) for k in ("optim.lr", "optim.eps", "data.max_duration", "features.win_ms", "features.hop_ms")},
    **{k: ("float>=", 0.0) for k in ("optim.weight_decay", "optim.grad_clip", "data.min_duration", "data.subword_alpha")},
    "max_minutes": ("float?>", 0.0),
    **{k: ("unit", None) for k in ("teacher_forcing", "teacher_forcing_final", "data.time_width", "optim.min_lr_ratio",
                                   "eval_ctc_weight")},
    **{k: ("unit)", None) for k in ("model.encoder.dropout", "model.decoder.dropout", "model.label_smoothing")},
    "data.character_coverage": ("(unit", None),
    "data.task": (("asr", "translation"), None),
    "data.tokenizer": (("char", "bpe", "unigram"), None),
    "data.src_tokenizer": (("char", "bpe", "unigram"), None),
    "data.cmvn": (("global", "utterance", "none"), None),
    **{k: ("bool", None) for k in ("features.level_norm", "data.spec_augment", "data.speed_perturb")},
    "optim.optimizer": (("adam", "adamw"), None),
    "optim.schedule": (("cosine", "noam", "constant"), None),
    "amp": (("none", "bf16", "fp16"), None),
}


def check_values(cfg: TrainConfig) -> TrainConfig:
    """Refuse out-of-range or ill-typed values (``_RULES``) with a ValueError naming the key and the range."""
    flat: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[prefix + k] = v

    walk(cfg.to_dict(), "")
    for key, (kind, bound) in _RULES.items():
        v = flat.get(key)
        if isinstance(kind, tuple):
            ok, want = v in kind, "one of " + ", ".join(kind)
        elif kind == "bool":
            ok, want = isinstance(v, bool), "true or false"
        elif kind.startswith("int"):
            ok = (v is None and kind == "int?") or (isinstance(v, int) and not isinstance(v, bool) and v >= bound)
            want = f"an integer >= {bound}" + (" or null" if kind == "int?" else "")
        else:
            num = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            low, high, low_open, high_open, want = {
                "float>": (bound, math.inf, True, False, f"a number > {bound}"),
                "float?>": (bound, math.inf, True, False, f"a number > {bound} or null"),
                "float>=": (bound, math.inf, False, False, f"a number >= {bound}"),
                "unit": (0, 1, False, False, "a number in [0, 1]"),
                "unit)": (0, 1, False, True, "a number in [0, 1)"),
                "(unit": (0, 1, True, False, "a number in (0, 1]")}[kind]
            ok = (v is None and kind == "float?>") or (num and (v > low if low_open else v >= low)
                                                        and (v < high if high_open else v <= high))
        if not ok:
            raise ValueError(f"config {key} must be {want}, got {v!r}")
    from .augment import AugmentConfig  # numpy only: the parts' libraries load when a part first runs

    AugmentConfig.from_dict(cfg.data.augment)  # ValueError naming the key, e.g. data.augment.noise.p
    if cfg.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(cfg.device)):
        raise ValueError(f"config device: {cfg.device!r} must be auto, cpu, cuda, cuda:N or mps")
    if cfg.eval_ctc_weight > 0 and (cfg.model.ctc_weight == 0 or cfg.data.task != "asr"):
        raise ValueError(f"config eval_ctc_weight {cfg.eval_ctc_weight} needs a CTC head: a speech model "
                         f"(data.task asr) with model.ctc_weight > 0")
    return cfg


def load_config(path: Optional[Path], overrides: list[str] = ()) -> TrainConfig:
    """YAML file (or defaults when ``path`` is None) + overrides -> validated TrainConfig (see check_values)."""
    d: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                d = yaml.safe_load(f) or {}
        except OSError as e:
            raise ValueError(f"{path}: cannot read config ({e.strerror or e})") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:  # python/* tags are refused by safe_load, never run
            raise ValueError(f"{path}: not a valid YAML config: {_first_line(e)}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a config must be a mapping")
    base = TrainConfig().to_dict()
    merged = _merge(base, d)
    return check_values(TrainConfig.from_dict(apply_overrides(merged, list(overrides))))


def _first_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
