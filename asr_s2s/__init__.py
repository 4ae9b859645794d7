"""asr-s2s: sequence-to-sequence speech recognition with recurrent encoders and attention decoders.

    import asr_s2s
    model = asr_s2s.load_model("model.pt")        # or None / "default": the bundled recognizer
    print(model.transcribe("speech.wav").text)

``import asr_s2s`` stays light: torch is imported on first use of ``load_model`` and friends.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_model": "model", "ASRModel": "model", "Transcript": "transcribe", "Segment": "transcribe",
    "AudioError": "audio", "load_audio": "audio",
    "write_transcript": "transcribe", "ExportedModel": "export",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = list(_LAZY)
