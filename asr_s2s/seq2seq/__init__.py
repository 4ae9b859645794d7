"""The generic sequence-to-sequence core: encoder, attention, decoder, model, search."""

from .attention import ATTENTIONS, Attention, AttentionMemory, make_attention
from .decoder import DECODERS, Decoder, DecoderConfig, DecoderState, InputFeedingDecoder, LuongDecoder, make_decoder
from .encoder import Encoder, EncoderConfig, EncoderOutput, RecurrentEncoder
from .inference import Inference
from .model import ENCODERS, EOS, PAD, SOS, UNK, ModelConfig, Seq2Seq, make_encoder
from .search import SearchResult, beam_search, greedy_search, length_penalty, max_lengths

__all__ = [
    "ATTENTIONS", "Attention", "AttentionMemory", "make_attention",
    "DECODERS", "Decoder", "DecoderConfig", "DecoderState", "InputFeedingDecoder", "LuongDecoder", "make_decoder",
    "ENCODERS", "Encoder", "EncoderConfig", "EncoderOutput", "RecurrentEncoder", "make_encoder", "Inference",
    "ModelConfig", "Seq2Seq", "PAD", "SOS", "EOS", "UNK",
    "SearchResult", "greedy_search", "beam_search", "length_penalty", "max_lengths",
]
