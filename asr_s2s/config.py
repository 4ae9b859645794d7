"""Training configuration: plain dataclasses, YAML through ``safe_load``, ``key.sub=value`` overrides.

No config framework: a YAML file is a nested mapping of the dataclass fields below, and
``--set optim.lr=3e-4`` changes one field (the value is parsed as YAML, so numbers, booleans,
lists and null work).
"""

from __future__ import annotations

import dataclasses
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
    average_last: int = 0  # average the weights of the last N epoch snapshots at the end (0: off)
    early_stop_patience: int = 0  # epochs without dev improvement before stopping (0: off)
    eval_beam: int = 1
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


def load_config(path: Optional[Path], overrides: list[str] = ()) -> TrainConfig:
    """YAML file (or defaults when ``path`` is None) + overrides -> validated TrainConfig."""
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
    return TrainConfig.from_dict(apply_overrides(merged, list(overrides)))


def _first_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
