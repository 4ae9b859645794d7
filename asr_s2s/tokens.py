"""The special token ids every tokenizer, model and exported graph shares (docs/interfaces.md).

A module of its own, importing nothing, so that the tokenizers (text.py), the seq2seq core and the exported
runtime (export.py, which loads without torch) all read them from one place."""

PAD, SOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")  # their pieces, in id order
CTC_BLANK = PAD  # <pad> never occurs inside a target, so it doubles as the CTC blank
