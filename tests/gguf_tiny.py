"""A tiny random Llama written as a GGUF file (fp32 tensors, a byte-level BPE tokenizer in its
metadata), readable by transformers' GGUF loader: the stand-in for a packaged GGUF base in tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN, LAYERS, HEADS, FFN, CONTEXT = 16, 1, 2, 32, 64
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # unk, bos, eos (as SmolLM2 names them)


def byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> Path:
    """Write the GGUF file `path` and return it. Tensor names and metadata keys are llama.cpp's; the
    tokenizer is `gpt2` (byte-level BPE: tokens, token types, merges), as in SmolLM2's file."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = [*SPECIALS, *byte_alphabet(), "ab", "Ġa"]
    n_vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (n_vocab - len(SPECIALS)))  # 3: control
    writer.add_token_merges(["a b", "Ġ a"])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)

    def random(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    random("token_embd.weight", n_vocab, HIDDEN)  # (V, H); no output.weight: tied embeddings
    for i in range(LAYERS):
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            random(f"blk.{i}.{part}.weight", HIDDEN, HIDDEN)
        random(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        random(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        random(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{norm}.weight", np.ones(HIDDEN, np.float32))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
