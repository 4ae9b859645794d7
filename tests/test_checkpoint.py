"""Checkpoints: atomic save, safe load (pickled code refused), clear errors, and identical decoding."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from asr_s2s.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from asr_s2s.seq2seq import ModelConfig, Seq2Seq
from s2s_helpers import single_thread, tiny_config  # noqa: F401


class _Evil:
    """Unpickling this runs a shell command (the classic malicious-checkpoint payload)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _payload(model: Seq2Seq) -> dict:
    return {"format": FORMAT, "config": model.cfg.to_dict(), "tokenizer": {"kind": "char", "chars": list("abc")},
            "src_tokenizer": None, "features": {"n_mels": 40}, "cmvn": {"mean": torch.zeros(40), "std": torch.ones(40)},
            "model": model.state_dict(), "meta": {"step": 7, "note": "test"}}


@pytest.mark.parametrize("attention", ["none", "location"])
def test_save_load_decode_identical(tmp_path, attention):
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("lstm", attention, vocab_size=14, hidden=24)).eval()
    path = save_checkpoint(tmp_path / "sub" / "model.pt", _payload(m))
    assert sorted(os.listdir(path.parent)) == ["model.pt"]  # no temp files left behind
    ck = load_checkpoint(path)
    assert ck["meta"] == {"step": 7, "note": "test"} and ck["format"] == FORMAT
    m2 = Seq2Seq(ModelConfig.from_dict(ck["config"])).eval()
    m2.load_state_dict(ck["model"])
    x, xl = torch.randn(3, 50, 40), torch.tensor([50, 31, 9])
    for a, b in ((m.greedy(x, xl), m2.greedy(x, xl)), (m.beam_search(x, xl, beam=3), m2.beam_search(x, xl, beam=3))):
        assert a.tokens == b.tokens and torch.equal(a.scores, b.scores)


def test_overwrite_is_atomic_and_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"meta": {"v": 1}, "w": torch.ones(3)})
    save_checkpoint(path, {"meta": {"v": 2}, "w": torch.ones(3)})
    assert load_checkpoint(path)["meta"] == {"v": 2}
    with pytest.raises(CheckpointError, match="ck.pt"):
        save_checkpoint(path, {"bad": lambda: 0})  # cannot be pickled
    assert load_checkpoint(path)["meta"] == {"v": 2}
    assert sorted(os.listdir(tmp_path)) == ["ck.pt"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "model": {}, "meta": _Evil(str(marker))}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*refused") as err:
        load_checkpoint(path)
    assert "pickled code" in str(err.value) and "system" in str(err.value)
    assert not marker.exists(), "the payload's command ran"


def test_truncated_empty_and_missing_files(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(1000)}, "meta": {}})
    data = path.read_bytes()
    for name, blob in (("half.pt", data[: len(data) // 2]), ("empty.pt", b""), ("junk.pt", b"not a checkpoint")):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as err:
            load_checkpoint(tmp_path / name)
        assert "truncated or corrupt" in str(err.value)
    with pytest.raises(CheckpointError, match=r"nope\.pt.*no such"):
        load_checkpoint(tmp_path / "nope.pt")


def test_non_dict_and_foreign_format_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="dict"):
        load_checkpoint(tmp_path / "list.pt")
    save_checkpoint(tmp_path / "other.pt", {"format": "something-else/3"})
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(tmp_path / "other.pt")


def documented_model_file_keys() -> set[str]:
    """The top-level keys of the model-file schema in docs/interfaces.md (its "## Model file" section's first
    `{...}`), read from the doc itself."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "interfaces.md").read_text()
    section = doc.split("## Model file", 1)[1].split("\n## ", 1)[0]
    schema = section[section.index("`{") + 1:]
    keys, depth = set(), 0
    for m in re.finditer(r'[{}]|"(\w+)":', schema):
        if m.group(0) == "{":
            depth += 1
        elif m.group(0) == "}":
            depth -= 1
            if depth == 0:
                break
        elif depth == 1:
            keys.add(m.group(1))
    return keys


@pytest.mark.parametrize("cmvn", ["global", "utterance", "none"])
def test_model_file_has_the_documented_keys(tmp_path, cmvn):
    """docs/interfaces.md's model-file schema lists the keys ASRModel.save writes, no more and no fewer, and the
    file loads with weights_only=True (plain types and tensors)."""
    from asr_s2s.features import FeatureConfig
    from asr_s2s.model import FORMAT as MODEL_FORMAT
    from asr_s2s.model import ASRModel, load_model
    from asr_s2s.text import CharTokenizer

    documented = documented_model_file_keys()
    assert {"format", "config", "model", "meta"} <= documented  # the doc was parsed
    tok = CharTokenizer.build(["one two three"])
    cfg = ModelConfig.from_dict({"input": "audio", "vocab_size": tok.vocab_size,
                                 "encoder": {"cell": "gru", "input_dim": 20, "hidden": 8, "layers": 1},
                                 "decoder": {"cell": "gru", "embed_dim": 4, "hidden": 8, "layers": 1}})
    model = ASRModel(cfg, tok, FeatureConfig(sample_rate=8000, n_mels=20), cmvn=cmvn)
    path = tmp_path / "model.pt"
    model.save(path, meta={"step": 1})
    written = torch.load(path, weights_only=True)
    assert set(written) == documented
    assert written["format"] == MODEL_FORMAT and written["cmvn_kind"] == cmvn
    assert (written["cmvn"] is None) == (cmvn != "global")
    assert load_model(path).cmvn_kind == cmvn
    assert set(written["config"]["encoder"]) == documented_encoder_keys()
    assert written["config"]["encoder"]["type"] == "recurrent"


@pytest.mark.parametrize("cmvn", ["global", "utterance", "none"])
def test_the_model_owns_its_cmvn_statistics(tmp_path, cmvn):
    """set_cmvn_stats is how statistics enter a model, cmvn_stats how they leave; they travel through the file,
    and a model without global CMVN has none and refuses them."""
    from asr_s2s.features import FeatureConfig
    from asr_s2s.model import ASRModel, load_model
    from asr_s2s.text import CharTokenizer

    tok = CharTokenizer.build(["one two"])
    cfg = ModelConfig.from_dict({"input": "audio", "vocab_size": tok.vocab_size,
                                 "encoder": {"cell": "gru", "input_dim": 6, "hidden": 4, "layers": 1},
                                 "decoder": {"cell": "gru", "embed_dim": 4, "hidden": 4, "layers": 1}})
    model = ASRModel(cfg, tok, FeatureConfig(sample_rate=8000, n_mels=6), cmvn=cmvn)
    mean, std = torch.arange(6.0), torch.linspace(0.5, 2.0, 6)
    if cmvn != "global":
        assert model.cmvn_stats is None
        with pytest.raises(ValueError, match=cmvn):
            model.set_cmvn_stats(mean, std)
        return
    model.set_cmvn_stats(mean, std)
    got = model.cmvn_stats
    assert torch.equal(got[0], mean) and torch.equal(got[1], std)
    got[0].add_(1.0)  # a copy: the model's statistics stay
    assert torch.equal(model.cmvn_stats[0], mean)
    feats = torch.randn(1, 3, 6)
    torch.testing.assert_close(model.normalize(feats, torch.tensor([3])), (feats - mean) / std)
    model.save(tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert all(torch.equal(a, b) for a, b in zip(again.cmvn_stats, (mean, std)))


def documented_encoder_keys() -> set[str]:
    """The `encoder` keys the model-file section of docs/interfaces.md lists (its `config` bullet)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "interfaces.md").read_text()
    section = doc.split("## Model file", 1)[1].split("\n## ", 1)[0]
    bullet = section.split("- `config`:", 1)[1].split("\n- ", 1)[0]
    inner = bullet.split("`encoder` (", 1)[1].split(")", 1)[0]
    return set(re.findall(r"`(\w+)`", inner)) - {"EncoderConfig"}


def test_model_files_without_an_encoder_type_load_as_the_recurrent_encoder(tmp_path):
    """The bundled model, and a file written before the encoder registry (no `type` in its encoder config), load
    with the recurrent encoder and decode as before."""
    from asr_s2s.model import load_model
    from asr_s2s.seq2seq import RecurrentEncoder

    bundled = load_model()
    assert isinstance(bundled.seq2seq.encoder, RecurrentEncoder)
    payload = bundled.payload()
    del payload["config"]["encoder"]["type"]
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert isinstance(old.seq2seq.encoder, RecurrentEncoder) and old.cfg == bundled.cfg
    wave = torch.randn(8000) * 0.1
    assert old.transcribe(wave.numpy(), sample_rate=8000).text == bundled.transcribe(wave.numpy(), sample_rate=8000).text
