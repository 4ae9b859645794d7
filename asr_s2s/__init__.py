"""asr-s2s: sequence-to-sequence speech recognition with recurrent encoders and attention decoders."""

__version__ = "0.1.0"
