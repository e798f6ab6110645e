"""Tiny random-weight checkpoints in the real on-disk layouts (save_pretrained), built offline for the tests.

They run the same loading and inference code as the real Qwen3-VL-8B-Instruct and sam2.1-hiera-large folders;
their outputs are noise, which is what the parser, retry and fallback tests want.
"""
from __future__ import annotations

from pathlib import Path

# Qwen's own chat template, cut to what our messages use: system/user/assistant turns, text and image blocks.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]


def _tokenizer(corpus: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"},
    )


def build_tiny_qwen3_vl(path: Path) -> Path:
    import torch
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    from void_server.reasoning.prompt import SYSTEM_PROMPT, build_prompt
    from void_server.reasoning.grid import Grid

    tokenizer = _tokenizer(SYSTEM_PROMPT + build_prompt(Grid.for_size(9, 16), [0, 1], 2) + '{"affected": []}')
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    patch = 16
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                          "mrope_interleaved": True},
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=patch,
                           out_hidden_size=32, num_position_embeddings=64, deepstack_visual_indexes=[0, 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=patch),  # Qwen3-VL's own preprocessor uses 16 px patches
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=patch),
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_sam2_video(path: Path, image_size: int = 128) -> Path:
    """Sam2VideoModel with a 4-stage Hiera of a few channels at `image_size` px (the real one: 1024)."""
    import torch
    from transformers import Sam2ImageProcessor, Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    # Widths stay above the memory channels (64, hard-coded in the model): object pointers are split by them.
    s = image_size
    feats = [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]]
    config = Sam2VideoConfig(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(model_type="sam2_hiera_det_model", image_size=[s, s], hidden_size=8,
                                 blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                                 num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
                                 global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4]),
            backbone_channel_list=[64, 32, 16, 8], backbone_feature_sizes=feats, fpn_hidden_size=128,
        ),
        prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        image_size=s, num_maskmem=3, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=feats[2],
        memory_encoder_hidden_size=128, mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=64,
    )
    torch.manual_seed(0)
    model = Sam2VideoModel(config).eval()
    size = {"height": s, "width": s}
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size, mask_size={"height": s // 4, "width": s // 4}),
        video_processor=Sam2VideoVideoProcessor(size=size),
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _clip_tokenizer():
    """CLIPTokenizer (the one facebook/sam3 ships) over single byte-level characters, no merges: any name
    tokenises, offline."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def build_tiny_sam3(path: Path, image_size: int = 112) -> Path:
    """Sam3Model (text-prompted detector) with a 2-layer ViT, CLIP text encoder and DETR of a few channels at
    `image_size` px (the real one: 1008, patch 14)."""
    import torch
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    tokenizer = _clip_tokenizer()
    s, patch = image_size, 14
    side = s // patch  # ViT tokens per side; the FPN scales them by 4, 2, 1 (and 0.5)
    hidden = 32
    config = Sam3Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=hidden, intermediate_size=64,
                                 num_hidden_layers=2,
                                 num_attention_heads=2, image_size=s, patch_size=patch, window_size=side // 2,
                                 global_attn_indexes=[1], pretrain_image_size=s),
            fpn_hidden_size=hidden, backbone_feature_sizes=[[side * 4] * 2, [side * 2] * 2, [side] * 2]),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, projection_dim=hidden,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        geometry_encoder_config=dict(hidden_size=hidden, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=hidden, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=hidden, num_layers=1, num_queries=8, num_attention_heads=2,
                                 intermediate_size=64),
        mask_decoder_config=dict(hidden_size=hidden, num_attention_heads=2),
    )
    torch.manual_seed(0)
    model = Sam3Model(config).eval()
    with torch.no_grad():  # the default init gives flat 0.5 masks and scores: spread them so frames differ
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    processor = Sam3Processor(
        image_processor=Sam3ImageProcessor(size={"height": s, "width": s},
                                           mask_size={"height": side * 4, "width": side * 4}),
        tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
