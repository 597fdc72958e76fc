"""A tiny random causal LM with a real byte-level BPE tokenizer, saved to a folder (seconds to build).

For tests of the machinery around the engine (grids, the store, Ray) where the model's quality does
not matter and the embedded models would only cost time. ``load_model(folder)`` loads it.
"""

from __future__ import annotations

from pathlib import Path

TEXT = (
    "The history of the lighthouse begins with fire on a hill. In the spring a young doctor arrived "
    "in the small mountain village and the robot learns to paint. Ocean currents move heat. Dear diary, "
    "today was the strangest day of my life. Recipe notes from my grandmother's kitchen: flour, salt."
)


def build_tiny_model(folder: Path, vocab_size: int = 320, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([TEXT] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper than the default init, so that the distributions are not flat
        model.lm_head.weight.normal_(0.0, 0.15)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
