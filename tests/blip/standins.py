"""A tiny InstructBLIP checkpoint saved like a hub repository, as a local stand-in for Salesforce's.

``make_tiny_instructblip(folder, lm)`` writes what ``from_pretrained`` reads from the hub (config,
weights, processor with its two tokenizers), with a T5, OPT or GPT-2 language model of a few thousand
weights, so that the hub code path itself runs in CI without network. Tokenizers are trained offline.
"""

from __future__ import annotations

from pathlib import Path

from .conftest import REPORTS

PROMPTS = ["Indication: cough. Likely findings: cardiomegaly, pleural effusion. Write the findings and impression.",
           "Indication: none given. Likely findings: none. Write the findings and impression."]


def make_tiny_instructblip(folder: Path, lm: str = "t5", num_query_tokens: int = 4, image_size: int = 32) -> Path:
    import torch
    from transformers import (BlipImageProcessor, InstructBlipConfig, InstructBlipForConditionalGeneration,
                              InstructBlipProcessor)

    from crrg.blip.language_model import train_tokenizer

    tokenizer = train_tokenizer(REPORTS + PROMPTS, vocab_size=300)
    qformer_tokenizer = train_tokenizer(REPORTS + PROMPTS, vocab_size=280)
    processor = InstructBlipProcessor(image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
                                      tokenizer=tokenizer, qformer_tokenizer=qformer_tokenizer, num_query_tokens=num_query_tokens)
    ids = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
           "bos_token_id": tokenizer.bos_token_id}
    text = {
        "t5": {"model_type": "t5", "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1,
               "num_heads": 2, "decoder_start_token_id": tokenizer.pad_token_id, "feed_forward_proj": "gated-gelu",
               "tie_word_embeddings": False},
        "opt": {"model_type": "opt", "hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                "max_position_embeddings": 256, "word_embed_proj_dim": 32},
        "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 256},
    }[lm]
    config = InstructBlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": 16},
        qformer_config={"vocab_size": len(qformer_tokenizer), "hidden_size": 32, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "intermediate_size": 64, "encoder_hidden_size": 32,
                        "cross_attention_frequency": 2, "pad_token_id": qformer_tokenizer.pad_token_id},
        text_config={**text, **ids},
        num_query_tokens=num_query_tokens, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    InstructBlipForConditionalGeneration(config).save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return Path(folder)


def count_generated_tokens(hub_model) -> list[int]:
    """Spy on ``hub_model.model.generate``: the list fills with how many tokens each call wrote beyond its
    prompt (a decoder-only LM returns the prompt first, a T5 its decoder start token)."""
    calls: list[int] = []
    generate = hub_model.model.generate

    def spy(**inputs):
        out = generate(**inputs)
        prompt = inputs["input_ids"].shape[1] if hub_model.decoder_only else 1  # T5: the decoder start token
        calls.append(out.shape[1] - prompt)
        return out

    hub_model.model.generate = spy
    return calls
