"""Written prompts -> the ways people say them: numbers, digit strings, spelled letters.

A prompt such as ``48 Ridge Road 407`` or ``8885112931`` can be read aloud several ways ("forty
eight" or "four eight", "four oh seven" or "four hundred seven", "double eight"). These functions
list the plausible spoken forms, lowercase words over a-z and space, so that a recognizer's CTC head
can pick the one the speaker said (:mod:`asr_s2s.ctc_check`).
"""

from __future__ import annotations

import itertools
import re

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
            "twelve": "twelfth"}
#: How many spoken forms one prompt may expand to (the product over its tokens is capped here).
MAX_FORMS = 256


def below_hundred(n: int) -> str:
    if n < 10:
        return ONES[n]
    if n < 20:
        return TEENS[n - 10]
    return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])


def cardinal(n: int, *, and_: bool = False) -> str:
    """``407`` -> ``four hundred seven`` (``and_``: ``four hundred and seven``); up to 999,999."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"cardinal: {n} is out of range")
    if n < 100:
        return below_hundred(n)
    if n < 1000:
        rest = n % 100
        head = f"{ONES[n // 100]} hundred"
        return head if rest == 0 else f"{head} {'and ' if and_ else ''}{below_hundred(rest)}"
    rest = n % 1000
    head = f"{cardinal(n // 1000, and_=and_)} thousand"
    if rest == 0:
        return head
    return f"{head} {'and ' if and_ and rest < 100 else ''}{cardinal(rest, and_=and_)}"


def digit_by_digit(digits: str, *, zero: str = "zero", groups: bool = False) -> str:
    """``"8885"`` -> ``eight eight eight five``; ``groups``: runs said as ``triple eight five``."""
    words = []
    for d, run in itertools.groupby(digits):
        n = len(list(run))
        w = zero if d == "0" else ONES[int(d)]
        while groups and n >= 2:
            k = 3 if n == 3 or n > 4 else 2
            words.append(f"{'double' if k == 2 else 'triple'} {w}")
            n -= k
        words += [w] * n
    return " ".join(words)


def in_pairs(digits: str) -> str | None:
    """``"7204"`` -> ``seventy two oh four``, ``"407"`` -> ``four oh seven``; None when it does not apply."""
    if len(digits) not in (3, 4) or digits[0] == "0":
        return None
    head, tail = digits[:-2], digits[-2:]
    if tail == "00":
        return f"{below_hundred(int(head))} hundred"
    second = f"oh {ONES[int(tail[1])]}" if tail[0] == "0" else below_hundred(int(tail))
    return f"{below_hundred(int(head))} {second}"


def number_forms(digits: str) -> list[str]:
    """Every plausible reading of a written number (address numbers, house numbers, PIN codes)."""
    forms = [digit_by_digit(digits), digit_by_digit(digits, zero="oh"), digit_by_digit(digits, groups=True)]
    if len(digits) <= 6 and not (len(digits) > 1 and digits[0] == "0"):
        n = int(digits)
        forms += [cardinal(n), cardinal(n, and_=True)]
    if (pairs := in_pairs(digits)) is not None:
        forms.append(pairs)
    return list(dict.fromkeys(forms))


def ordinal_forms(digits: str) -> list[str]:
    """``"184"`` (from ``184th``) -> ``one hundred eighty fourth``, ``one eighty fourth``, ..."""
    def ordinalize(words: str) -> str:
        head, _, last = words.rpartition(" ")
        last = _ORDINAL.get(last, last[:-1] + "ieth" if last.endswith("y") else last + "th")
        return f"{head} {last}".strip()

    return list(dict.fromkeys(ordinalize(f) for f in number_forms(digits) if "double" not in f and "triple" not in f))


def spelled(word: str, *, doubles: bool = False) -> str:
    """``"Saffron"`` -> ``s a f f r o n``; ``doubles``: ``s a double f r o n``."""
    letters = [c for c in word.lower() if "a" <= c <= "z"]
    if not doubles:
        return " ".join(letters)
    out = []
    for c, run in itertools.groupby(letters):
        n = len(list(run))
        out += [f"double {c}"] * (n // 2) + [c] * (n % 2)
    return " ".join(out)


def name_forms(name: str) -> list[str]:
    """A name spelled letter by letter, as the prompt asked, and the usual variants (saying the word
    first, "double" for repeated letters)."""
    words = [w for w in re.split(r"[^A-Za-z]+", name) if w]
    if not words:
        return []
    plain = " ".join(spelled(w) for w in words)
    forms = [plain, " ".join(spelled(w, doubles=True) for w in words),
             " ".join(f"{w.lower()} {spelled(w)}" for w in words),
             f"{' '.join(w.lower() for w in words)} {plain}"]
    return list(dict.fromkeys(forms))


def phone_forms(number: str) -> list[str]:
    """A phone number read digit by digit: zero or "oh", with or without "double"/"triple"."""
    digits = re.sub(r"\D", "", number)
    if not digits:
        return []
    return list(dict.fromkeys(digit_by_digit(digits, zero=z, groups=g) for z in ("zero", "oh") for g in (False, True)))


_TOKEN = re.compile(r"(\d+)(st|nd|rd|th)?|[A-Za-z]+")


def address_forms(address: str) -> list[str]:
    """An address as it may be said: numbers every way :func:`number_forms` knows, ordinals (``184th``),
    two-letter capitals (``SE``, ``WA``) as letters or a word, ``no`` as "number"; punctuation dropped."""
    upper = address.upper() == address
    choices: list[list[str]] = []
    for m in _TOKEN.finditer(address):
        tok = m.group(0)
        if m.group(1) is not None:
            choices.append(ordinal_forms(m.group(1)) if m.group(2) else number_forms(m.group(1)))
        elif tok.lower() == "no":
            choices.append(["number", "no", "n o"])
        elif len(tok) <= 2 and tok.isupper() and not upper:
            choices.append([spelled(tok), tok.lower()])
        else:
            choices.append([tok.lower()])
    if not choices:
        return []
    forms = []
    for combo in itertools.product(*choices):
        forms.append(" ".join(combo))
        if len(forms) >= MAX_FORMS:
            break
    return forms
