"""The files on the path audio -> text outside asr_s2s/accel hold no precision or kernel code: no bf16 or int8
dtypes, no oneDNN-specific ops, no autocast, no packed or reordered weights, no compiled kernels. What makes
decoding fast lives in asr_s2s/accel, behind the search interface (seq2seq/inference.py); this test keeps it
there. Read with `ast` (identifiers, imported names and non-docstring string constants), so comments and
docstrings may still explain the design."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "asr_s2s"

# The recognizer's path from audio to text: the core, and the modules that feed it and read its output.
PATH_FILES = sorted(PACKAGE.glob("seq2seq/*.py")) + [
    PACKAGE / name for name in ("audio.py", "features.py", "model.py", "decoding.py", "transcribe.py", "text.py",
                                "tokens.py", "vad.py", "export.py", "batching.py")]

FORBIDDEN = re.compile(r"bfloat16|bf16|int8|cpu_kernel|mkldnn|onednn|autocast|^packed$|packed_?linear|reorder",
                       re.IGNORECASE)

# (file, name): uses that are not acceleration. Keep it short.
ALLOWED = {
    ("transcribe.py", "int8"),  # numpy: the VAD's speech mask as small integers for np.diff
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def names(path: Path) -> list[tuple[int, str]]:
    """(line, identifier or string) for every name, attribute, imported name or module, argument, definition
    and non-docstring string constant of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _docstrings(tree)
    out = []
    for node in ast.walk(tree):
        found: list[str] = []
        if isinstance(node, ast.Name):
            found = [node.id]
        elif isinstance(node, ast.Attribute):
            found = [node.attr]
        elif isinstance(node, ast.alias):
            found = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            found = [node.module or ""]
        elif isinstance(node, ast.arg):
            found = [node.arg]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found = [node.name]
        elif isinstance(node, ast.keyword):
            found = [node.arg or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            found = [node.value]
        for name in found:
            for part in re.split(r"[.\s]+", name):
                out.append((getattr(node, "lineno", 0), part))
    return out


def offences(path: Path) -> list[str]:
    return [f"{path.relative_to(PACKAGE)}:{line}: {name}" for line, name in names(path)
            if FORBIDDEN.search(name) and (path.name, name) not in ALLOWED]


def test_the_audio_to_text_path_outside_accel_holds_no_precision_or_kernel_code():
    assert all(p.exists() for p in PATH_FILES)
    found = [o for p in PATH_FILES for o in offences(p)]
    assert not found, "\n".join(found)


def test_the_check_sees_what_it_should(tmp_path):
    """A planted offence of each kind is found; docstrings and comments are not."""
    planted = tmp_path / "planted.py"
    planted.write_text('"""bf16 in a docstring is fine."""\nimport torch  # so is int8 in a comment\n'
                       'from asr_s2s.accel.packed import PackedLinear\n'
                       'x = torch.zeros(1).to(torch.bfloat16)\nwith torch.autocast("cpu"):\n    pass\n'
                       'y = torch.ops.mkldnn\nz = "int8"\n')
    hits = {name for _, name in names(planted) if FORBIDDEN.search(name)}
    assert hits == {"packed", "PackedLinear", "bfloat16", "autocast", "mkldnn", "int8"}


# Where the package reads environment variables, and why there: the edges (entry points, the acceleration
# package's one-time detection and kernel loader, the one local-data default). Nothing else reads them: the core
# and the search take what they need as arguments (a DecodeOptions, a config), so a call means the same whatever
# the environment.
ENV_READERS = {
    "accel/precision.py": "ASR_S2S_NATIVE_BF16, read once per process by the one native-bf16 detection",
    "accel/cpu_kernels.py": "ASR_S2S_CPU_KERNELS, ASR_S2S_CACHE / XDG_CACHE_HOME, CC: the kernel loader, run once",
    "corpora/common.py": "ASR_S2S_DATA: default_data_dir, the local-data root for the CLI, recipes and the bench",
    "distributed.py": "RANK / WORLD_SIZE / LOCAL_RANK from torchrun, and oneDNN's primitive cache size, at training start",
}


def test_environment_is_read_only_at_the_edges():
    readers = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                    and node.attr in ("environ", "getenv", "putenv")):
                readers.add(path.relative_to(PACKAGE).as_posix())
    assert readers <= set(ENV_READERS), f"environment read outside the edges: {sorted(readers - set(ENV_READERS))}"
