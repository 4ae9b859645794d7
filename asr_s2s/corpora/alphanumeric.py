"""Alphanumeric audio dataset: 70 speakers spelling a name, reading a phone number, reciting an address.

Source: https://github.com/Sakshee5/alphanumeric-audio-dataset (MIT). Mostly phone recordings, many
Indian-English accents. Layout (``data_dir/alphanumeric/``, or the extracted archive one level below)::

    metadata.csv                        Response_ID, file_name, ..., Name, Number, Address, ...
    audio_data/{Names,Numbers,Addresses}/<Response_ID>.flac   (.wav in the original repository)

**The transcripts are prompts**: what each speaker was asked to say, not what was said. Each prompt
is expanded into the ways it can be spoken (:mod:`asr_s2s.spoken`: a name letter by letter, a phone
number digit by digit with "zero"/"oh" and "double"/"triple", address numbers as cardinals, digits
or pairs), and a recognizer's CTC head (``check_model``, default the bundled model) picks the form
that fits the audio best (:mod:`asr_s2s.ctc_check`). A recording is kept only when that form also
fits it better than the prompts of **every other speaker** for the same kind of item: a file whose
audio does not match its prompt (a wrong number in the metadata, a different text read, a broken
recording) fails that test however weak the recognizer is on the accent. ``verify=False`` keeps
every prompt unchecked, in its first spoken form. ``out_dir/verification.tsv`` lists every
recording with its chosen text, its loss per token, the best other prompt's loss, and the verdict.

Splits are by speaker: ``dev_fraction`` and ``test_fraction`` (10% each) of the speakers, smallest
SHA-1 of the speaker id first, form dev and test; the rest train.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

from .. import spoken
from .common import _atomic_write, check_fractions, durations, is_prepared, mark_prepared, write_manifest
from .download import Source, find_or_download

log = logging.getLogger(__name__)

NAME = "alphanumeric"
#: folder -> (metadata column, spoken forms of its prompt, kind written to the manifest)
KINDS = {
    "Names": ("Name", spoken.name_forms, "name"),
    "Numbers": ("Number", spoken.phone_forms, "number"),
    "Addresses": ("Address", spoken.address_forms, "address"),
}


def read_prompts(metadata: Path) -> dict[tuple[str, str], list[str]]:
    """``{(folder, speaker): spoken forms}`` from ``metadata.csv`` (one row per recording)."""
    out: dict[tuple[str, str], list[str]] = {}
    with open(metadata, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            folder = Path(row.get("file_name") or "").parent.name
            if folder not in KINDS or not row.get("Response_ID"):
                log.warning("alphanumeric: %s:%d names no known folder (%r); skipped", metadata, n, row.get("file_name"))
                continue
            column, forms, _ = KINDS[folder]
            out[(folder, row["Response_ID"].strip())] = forms(row.get(column) or "")
    return out


def split_speakers(speakers: set[str], dev_fraction: float, test_fraction: float) -> dict[str, str]:
    """``{speaker: split}``: the smallest SHA-1 first, test then dev, the rest train."""
    order = sorted(speakers, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    n_test, n_dev = round(test_fraction * len(order)), round(dev_fraction * len(order))
    return {s: "test" if i < n_test else "dev" if i < n_test + n_dev else "train" for i, s in enumerate(order)}


def prepare(
    data_dir: Path,
    out_dir: Path,
    *,
    verify: bool = True,
    check_model: Path | None = None,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    download: bool = True,
    source: Source | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/{train,dev,test}.jsonl`` of the recordings whose prompt the audio confirms."""
    check_fractions(NAME, dev_fraction, test_fraction)
    root = find_or_download(NAME, data_dir, download_missing=download, source=source)
    out_dir = Path(out_dir)
    model_id = None
    if verify:
        from ..model import default_model_path

        m = Path(check_model) if check_model is not None else default_model_path()
        model_id = {"path": str(m.resolve()), "size": m.stat().st_size if m.is_file() else None}
    key = {"corpus": NAME, "root": str(root.resolve()), "verify": model_id, "dev_fraction": dev_fraction,
           "test_fraction": test_fraction}
    if not force and (done := is_prepared(out_dir, key)):
        return done

    prompts = read_prompts(root / "metadata.csv")
    recordings: list[tuple[str, str, Path]] = []
    for (folder, speaker) in sorted(prompts):
        found = [p for ext in (".flac", ".wav") if (p := root / "audio_data" / folder / f"{speaker}{ext}").is_file()]
        if found:
            recordings.append((folder, speaker, found[0]))
        else:
            log.warning("alphanumeric: no audio for %s/%s (listed in metadata.csv); skipped", folder, speaker)
    if not recordings:
        raise FileNotFoundError(f"alphanumeric: no recordings under {root / 'audio_data'}")

    model = None
    if verify:
        from ..ctc_check import fit
        from ..model import load_model

        model = load_model(check_model).eval()
    rows: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    report = ["file\tkind\ttext\tloss_per_token\tbest_other_prompt_loss\tverdict"]
    splits = split_speakers({s for _, s, _ in recordings}, dev_fraction, test_fraction)
    rejected: dict[str, int] = {}
    for (folder, speaker, path), dur in zip(recordings, durations([p for _, _, p in recordings])):
        forms, kind = prompts[(folder, speaker)], KINDS[folder][2]
        verdict, text, own, other = "kept", forms[0] if forms else "", float("nan"), float("nan")
        if not forms:
            verdict = "empty prompt"
        elif model is not None:
            others = list(dict.fromkeys(f[0] for (fo, s), f in prompts.items() if fo == folder and s != speaker and f and f[0] not in forms))
            try:
                result = fit(model, path, forms + others)
            except Exception as exc:  # an unreadable file is a counted skip, not a crash in the middle of a run
                verdict = f"unreadable: {exc}"
            else:
                best = min(range(len(forms)), key=result.losses.__getitem__)
                text, own = forms[best], result.losses[best]
                other = min(result.losses[len(forms):], default=float("inf"))
                if not own < other:
                    verdict = "another speaker's prompt fits better"
        report.append(f"{path}\t{kind}\t{text}\t{own:.3f}\t{other:.3f}\t{verdict}")
        if verdict != "kept":
            rejected[verdict.split(":")[0]] = rejected.get(verdict.split(":")[0], 0) + 1
            continue
        rows[splits[speaker]].append({"audio_filepath": str(path.resolve()), "duration": round(dur, 4), "text": text,
                                      "id": f"{speaker}-{kind}", "speaker": speaker, "kind": kind})
    if rejected:
        log.warning("alphanumeric: %d of %d recordings not used (%s); see %s", sum(rejected.values()), len(recordings),
                    ", ".join(f"{n} {why}" for why, n in sorted(rejected.items())), out_dir / "verification.tsv")
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / "verification.tsv", report)
    out = {name: write_manifest(out_dir / f"{name}.jsonl", r) for name, r in rows.items()}
    mark_prepared(out_dir, key, out)
    return out
