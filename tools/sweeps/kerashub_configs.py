"""Tiny random-weight configurations of every KerasHub backbone class (keras-hub 0.32), for the
conformance sweep: small enough that one converts and runs in a few seconds, built with
weights=None semantics (plain constructors, nothing downloaded)."""

from collections.abc import Callable

# A value in CONFIGS is either the constructor's keyword arguments or a zero-argument factory
# returning them (for backbones that take sub-models; those import keras_hub lazily, so
# importing this module stays cheap). Build one as `getattr(keras_hub.models, name)(**kwargs)`.
# Everything is float32 (the default dtype policy), batch is always dynamic, and text models
# keep a dynamic sequence length; image sizes are fixed only where the architecture requires.

# Shared sizes: vocabulary 50, width 16, 2 heads, FFN 32, 2 layers (or fewer).
_V, _D, _F, _H, _L = 50, 16, 32, 2, 2
_TEXT = dict(vocabulary_size=_V, num_layers=_L, num_heads=_H, hidden_dim=_D, intermediate_dim=_F)
# SmolLM and SmolLM3 take the same constructor arguments.
_SMOLLM = dict(vocabulary_size=_V, hidden_dim=_D, intermediate_dim=_F, num_layers=_L,
               num_attention_heads=_H, num_key_value_heads=1, attention_bias=False,
               attention_dropout=0.0, rope_layer_enabled_list=[True, False],
               layer_types=["attention"] * _L, mlp_bias=False, layer_norm_epsilon=1e-5,
               max_position_embeddings=32, rope_theta=10000.0, partial_rotary_factor=1.0)
_DECODER = dict(vocabulary_size=_V, num_layers=_L, num_query_heads=_H, num_key_value_heads=1,
                hidden_dim=_D, intermediate_dim=_F)


def _mobilenetv5():
    from keras_hub.src.models.mobilenetv5.mobilenetv5_builder import (
        convert_arch_def_to_stackwise)
    return dict(convert_arch_def_to_stackwise([["er_r1_k3_s1_e1_c8"], ["er_r1_k3_s2_e2_c16"]]),
                stem_size=8, num_features=16, use_msfa=False, image_shape=(32, 32, 3))


def _build(name, **overrides):
    """Instantiate the tiny `CONFIGS[name]` backbone (with `overrides`), for nesting."""
    import keras_hub

    config = CONFIGS[name]
    config = config() if callable(config) else dict(config)
    return getattr(keras_hub.models, name)(**{**config, **overrides})


def _resnet_pyramid():
    """A 4-stage ResNet-vd encoder with pyramid levels P1..P5 (the first stage's width must be
    64; the "_vd" block lets the stem stay 8 wide, which BASNet's projection then matches)."""
    import keras_hub

    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[8], input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 8, 8, 8], stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block_vd")


def _basnet():
    return dict(image_encoder=_resnet_pyramid(), num_classes=1, projection_filters=8,
                image_shape=(32, 32, 3))


def _deeplab_v3():
    return dict(image_encoder=_resnet_pyramid(), spatial_pyramid_pooling_key="P4",
                upsampling_size=4, dilation_rates=[2, 4], low_level_feature_key="P2",
                projection_filters=8, image_shape=(32, 32, 3))


def _retinanet():
    return dict(image_encoder=_resnet_pyramid(), min_level=3, max_level=5, use_p5=False,
                image_shape=(32, 32, 3))


def _segformer():
    import keras_hub

    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2], hidden_dims=[8, 16], image_shape=(32, 32, 3))
    return dict(image_encoder=encoder, projection_filters=8)


def _depth_anything():
    encoder = _build("DINOV2Backbone", num_layers=2, position_embedding_shape=(32, 32))
    return dict(image_encoder=encoder, reassemble_factors=[2, 1], neck_hidden_dims=[8, 16],
                fusion_hidden_dim=16, head_hidden_dim=8, head_in_index=-1,
                feature_keys=["stage1", "stage2"])


def _parseq():
    import keras_hub

    encoder = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=_L, num_heads=_H, hidden_dim=_D,
        mlp_dim=_F, use_class_token=False, name="encoder")
    return dict(image_encoder=encoder, vocabulary_size=_V, max_label_length=8,
                decoder_hidden_dim=_D, num_decoder_layers=1, num_decoder_heads=_H,
                decoder_mlp_dim=_F, dropout_rate=0.0, attention_dropout=0.0)


def _clip():
    return dict(vision_encoder=_build("CLIPVisionEncoder"),
                text_encoder=_build("CLIPTextEncoder"), projection_dim=8)


def _siglip():
    return dict(vision_encoder=_build("SigLIPVisionEncoder"),
                text_encoder=_build("SigLIPTextEncoder", projection_dim=_D))


def _metaclip_2():
    return dict(vision_encoder=_build("MetaCLIP2VisionEncoder"),
                text_encoder=_build("MetaCLIP2TextEncoder"), projection_dim=8)


def _sam():
    import keras_hub

    image_encoder = _build("ViTDetBackbone")  # 32x32 images, patch 8 -> a 4x4 embedding
    prompt_encoder = keras_hub.layers.SAMPromptEncoder(
        hidden_size=8, image_embedding_size=(4, 4), input_image_size=(32, 32),
        mask_in_channels=16)
    mask_decoder = keras_hub.layers.SAMMaskDecoder(
        num_layers=1, hidden_size=8, intermediate_dim=16, num_heads=2, embedding_dim=8,
        num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=8)
    return dict(image_encoder=image_encoder, prompt_encoder=prompt_encoder,
                mask_decoder=mask_decoder)


def _stable_diffusion_3():
    import keras_hub
    from keras_hub.src.models.vae.vae_backbone import VAEBackbone

    # The VAE's group norms use 32 groups, so its widths stay at 32; 4 stages = /8 latents.
    vae = VAEBackbone(encoder_num_filters=[32] * 4, encoder_num_blocks=[1] * 4,
                      decoder_num_filters=[32] * 4, decoder_num_blocks=[1] * 4,
                      sample_channels=32)

    def clip(name):
        return keras_hub.models.CLIPTextEncoder(
            vocabulary_size=_V, embedding_dim=_D, hidden_dim=_D, num_layers=_L, num_heads=_H,
            intermediate_dim=_F, intermediate_output_index=0, max_sequence_length=32,
            name=name)

    return dict(mmdit_patch_size=2, mmdit_hidden_dim=_D, mmdit_num_layers=1,
                mmdit_num_heads=_H, mmdit_position_size=8, mmdit_qk_norm=None,
                mmdit_dual_attention_indices=None, vae=vae, clip_l=clip("clip_l"),
                clip_g=clip("clip_g"), image_shape=(64, 64, 3))


def _blip2():
    from keras_hub.src.models.blip2.blip2_custom_opt import BLIP2CustomOPT
    from keras_hub.src.models.blip2.blip2_qformer import BLIP2QFormer
    from keras_hub.src.models.blip2.blip2_vision_encoder import BLIP2VisionEncoder

    vision_encoder = BLIP2VisionEncoder(
        image_size=32, patch_size=8, num_layers=1, num_heads=_H, hidden_dim=_D,
        intermediate_dim=_F, use_patch_bias=True, use_class_token=True, use_mha_bias=True,
        use_mlp_bias=True, dropout_rate=0.0, layer_norm_epsilon=1e-6, initializer_range=0.02)
    qformer = BLIP2QFormer(
        num_query_tokens=4, num_layers=1, num_heads=_H, hidden_dim=_D, intermediate_dim=_F,
        vision_dim=_D, cross_attention_frequency=1, dropout=0.0, layer_norm_epsilon=1e-6)
    language_model = BLIP2CustomOPT(
        vocabulary_size=_V, num_layers=1, num_heads=_H, hidden_dim=_D, intermediate_dim=_F,
        num_query_tokens=4, dropout=0.0, max_sequence_length=32, qformer_hidden_dim=_D)
    return dict(vision_encoder=vision_encoder, qformer=qformer, language_model=language_model)


def _d_fine():
    import keras_hub

    hgnetv2 = keras_hub.models.HGNetV2Backbone(
        depths=[1, 1], embedding_size=8, hidden_sizes=[16, 32], stem_channels=[3, 8, 8],
        hidden_act="relu", use_learnable_affine_block=False,
        stackwise_stage_filters=[(8, 8, 16, 1, 1, 3), (16, 8, 32, 1, 1, 3)],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, False],
        image_shape=(32, 32, 3), out_features=["stage1", "stage2"])
    return dict(backbone=hgnetv2, decoder_in_channels=[_D, _D], encoder_hidden_dim=_D,
                num_labels=4, num_denoising=0, learn_initial_query=False, num_queries=8,
                anchor_image_size=(32, 32), feat_strides=[4, 8], num_feature_levels=2,
                hidden_dim=_D, encoder_in_channels=[16, 32], encode_proj_layers=[1],
                num_attention_heads=_H, encoder_ffn_dim=_F, num_encoder_layers=1,
                hidden_expansion=0.5, depth_multiplier=0.5, eval_idx=-1,
                num_decoder_layers=1, decoder_attention_heads=_H, decoder_ffn_dim=_F,
                decoder_n_points=[2, 2], lqe_hidden_dim=8, num_lqe_layers=1, seed=0,
                out_features=["stage1", "stage2"], image_shape=(32, 32, 3))


def _sam3():
    import keras_hub

    layers = keras_hub.layers
    return dict(
        vision_encoder=layers.SAM3VisionEncoder(
            image_shape=(32, 32, 3), patch_size=8, num_layers=_L, hidden_dim=_D,
            intermediate_dim=_F, num_heads=_H, fpn_hidden_dim=_D,
            fpn_scale_factors=[4.0, 2.0, 1.0, 0.5], pretrain_image_shape=(32, 32, 3),
            window_size=2, global_attn_indexes=[1]),
        text_encoder=layers.SAM3TextEncoder(
            vocabulary_size=_V, embedding_dim=_D, hidden_dim=_D, num_layers=_L, num_heads=_H,
            intermediate_dim=_F),
        geometry_encoder=layers.SAM3GeometryEncoder(
            num_layers=1, hidden_dim=_D, intermediate_dim=_F, num_heads=_H, roi_size=2),
        detr_encoder=layers.SAM3DetrEncoder(num_layers=1, hidden_dim=_D, intermediate_dim=_F,
                                       num_heads=_H),
        detr_decoder=layers.SAM3DetrDecoder(image_shape=(32, 32, 3), patch_size=8, num_layers=1,
                                       hidden_dim=_D, intermediate_dim=_F, num_heads=_H,
                                       num_queries=8),
        mask_decoder=layers.SAM3MaskDecoder(num_upsampling_stages=3, hidden_dim=_D, num_heads=_H))


CONFIGS: dict[str, dict | Callable[[], dict]] = {
    # --- Encoder-only text models -------------------------------------------------------
    "AlbertBackbone": dict(_TEXT, embedding_dim=8, max_sequence_length=32),
    "BertBackbone": dict(_TEXT, max_sequence_length=32),
    "DebertaV3Backbone": dict(_TEXT, max_sequence_length=32, bucket_size=16),
    "DistilBertBackbone": dict(_TEXT, max_sequence_length=32),
    "ElectraBackbone": dict(vocab_size=_V, num_layers=_L, num_heads=_H, hidden_dim=_D,
                            embedding_dim=8, intermediate_dim=_F, max_sequence_length=32),
    "ESMBackbone": dict(_TEXT, max_sequence_length=32),
    "ESM2Backbone": dict(_TEXT, max_sequence_length=32),
    "FNetBackbone": dict(vocabulary_size=_V, num_layers=_L, hidden_dim=_D, intermediate_dim=_F,
                         max_sequence_length=32),
    "RobertaBackbone": dict(_TEXT, max_sequence_length=32),
    "RoformerV2Backbone": dict(_TEXT, head_size=8),
    "XLMRobertaBackbone": dict(_TEXT, max_sequence_length=32),
    "XLNetBackbone": dict(_TEXT),
    # --- Decoder-only text models -------------------------------------------------------
    "BloomBackbone": dict(_TEXT),
    "FalconBackbone": dict(vocabulary_size=_V, num_layers=_L, num_attention_heads=_H,
                           hidden_dim=_D, intermediate_dim=_F),
    "GPT2Backbone": dict(_TEXT, max_sequence_length=32),
    "GPTNeoXBackbone": dict(_TEXT, max_sequence_length=32),
    "OPTBackbone": dict(_TEXT, max_sequence_length=32),
    "GemmaBackbone": dict(_DECODER, head_dim=8),
    "LlamaBackbone": dict(_DECODER),
    "Llama3Backbone": dict(_DECODER),
    "MistralBackbone": dict(_DECODER, sliding_window=32),
    "MixtralBackbone": dict(_DECODER, num_experts=2, top_k=2, sliding_window=32),
    "GptOssBackbone": dict(_DECODER, num_experts=2, top_k=2, sliding_window=32, head_dim=8),
    "Phi3Backbone": dict(_DECODER, max_sequence_length=32, pretraining_sequence_length=32),
    "QwenBackbone": dict(_DECODER),
    "Qwen2Backbone": dict(_DECODER),
    "Qwen3Backbone": dict(_DECODER, head_dim=8),
    "QwenMoeBackbone": dict(_DECODER, moe_intermediate_dim=16, shared_expert_intermediate_dim=16,
                            num_experts=2, top_k=2),
    "Qwen3MoeBackbone": dict(_DECODER, moe_intermediate_dim=16, num_experts=2, top_k=2,
                             head_dim=8),
    "Qwen3_5Backbone": dict(_DECODER, head_dim=8,
                            layer_types=["linear_attention", "full_attention"],
                            linear_num_key_heads=2, linear_num_value_heads=2,
                            linear_key_head_dim=8, linear_value_head_dim=8),
    "Qwen3_5MoeBackbone": dict({k: v for k, v in _DECODER.items() if k != "intermediate_dim"},
                               head_dim=8, moe_intermediate_dim=16,
                               shared_expert_intermediate_size=16, num_experts=2, top_k=2,
                               layer_types=["linear_attention", "full_attention"],
                               linear_num_key_heads=2, linear_num_value_heads=2,
                               linear_key_head_dim=8, linear_value_head_dim=8),
    "SmolLMBackbone": _SMOLLM,
    "SmolLM3Backbone": _SMOLLM,
    "RWKV7Backbone": dict(hidden_size=_D, head_size=8, num_layers=_L, vocabulary_size=_V,
                          intermediate_dim=_F, gate_lora=8, mv_lora=8, aaa_lora=8,
                          decay_lora=8),
    "Gemma3Backbone": dict(_DECODER, head_dim=8, image_size=32, vision_encoder=None),
    "Gemma4Backbone": dict(_DECODER, head_dim=8, image_size=32, vision_encoder=None,
                           sliding_window_size=32),
    "Gemma3nBackbone": dict(text_vocab_size=_V, text_hidden_size=8, num_hidden_layers=1,
                            pad_token_id=0, num_attention_heads=1, num_key_value_heads=1,
                            head_dim=8, intermediate_size=[16],
                            hidden_activation="gelu_approximate",
                            layer_types=["full_attention"], sliding_window=4,
                            rope_theta=10000.0, max_position_embeddings=32,
                            vocab_size_per_layer_input=_V, hidden_size_per_layer_input=2,
                            altup_num_inputs=2, laurel_rank=1),
    # --- Encoder-decoder text models ----------------------------------------------------
    "BartBackbone": dict(_TEXT, max_sequence_length=32),
    "T5Backbone": dict(_TEXT, key_value_dim=8),
    "EdRecBackbone": dict(vocab_size=_V, num_layers_enc=1, num_layers_dec=1, hidden_dim=_D,
                          intermediate_dim=_F, num_heads=_H),
    "T5GemmaBackbone": dict(vocabulary_size=_V, encoder_hidden_dim=_D,
                            encoder_intermediate_dim=_F, encoder_num_layers=1,
                            encoder_num_attention_heads=_H, encoder_num_key_value_heads=1,
                            encoder_head_dim=8, encoder_layer_types=["full_attention"],
                            decoder_hidden_dim=_D, decoder_intermediate_dim=_F,
                            decoder_num_layers=1, decoder_num_attention_heads=_H,
                            decoder_num_key_value_heads=1, decoder_head_dim=8,
                            decoder_layer_types=["full_attention"]),
    "T5Gemma2Backbone": dict(vocabulary_size=_V, encoder_hidden_dim=_D,
                             encoder_intermediate_dim=_F, encoder_num_layers=1,
                             encoder_num_attention_heads=_H, encoder_num_key_value_heads=1,
                             encoder_head_dim=8, encoder_layer_types=["full_attention"],
                             decoder_hidden_dim=_D, decoder_intermediate_dim=_F,
                             decoder_num_layers=1, decoder_num_attention_heads=_H,
                             decoder_num_key_value_heads=1, decoder_head_dim=8,
                             decoder_layer_types=["full_attention"]),
    "WhisperBackbone": dict(_TEXT, num_mels=8, max_encoder_sequence_length=32,
                            max_decoder_sequence_length=32),
    "MoonshineBackbone": dict(vocabulary_size=_V, filter_dim=_D, encoder_num_layers=1,
                              decoder_num_layers=1, hidden_dim=_D, intermediate_dim=_F,
                              encoder_num_heads=_H, decoder_num_heads=_H,
                              max_position_embeddings=64),
    # --- Image backbones (CNNs) ---------------------------------------------------------
    # ResNet insists on stackwise_num_filters[0] == 64, and a plain basic_block first stage has
    # no projection shortcut, so its stem must be 64 wide too (see _resnet_pyramid for "_vd").
    "ResNetBackbone": dict(input_conv_filters=[64], input_conv_kernel_sizes=[3],
                           stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
                           stackwise_num_strides=[1, 2], block_type="basic_block",
                           image_shape=(32, 32, 3)),
    "VGGBackbone": dict(stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16],
                        image_shape=(32, 32, 3)),
    "DenseNetBackbone": dict(stackwise_num_repeats=[1, 1], growth_rate=8,
                             image_shape=(32, 32, 3)),
    "CSPNetBackbone": dict(stem_filters=8, stem_kernel_size=3, stem_strides=1,
                           stackwise_depth=[1, 1], stackwise_strides=[1, 2],
                           stackwise_num_filters=[8, 16], block_type="dark_block",
                           stage_type="csp",
                           bottle_ratio=[0.5], block_ratio=[0.5],
                           image_shape=(32, 32, 3)),
    "EfficientNetBackbone": dict(stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
                                 stackwise_input_filters=[8, 8],
                                 stackwise_output_filters=[8, 16],
                                 stackwise_expansion_ratios=[1, 2],
                                 stackwise_squeeze_and_excite_ratios=[0.0, 0.25],
                                 stackwise_strides=[1, 2],
                                 stackwise_block_types=["fused", "unfused"],
                                 stackwise_width_coefficients=[1.0, 1.0],
                                 stackwise_depth_coefficients=[1.0, 1.0],
                                 num_features=16, dropout=0.0, input_shape=(32, 32, 3)),
    "MobileNetBackbone": dict(stackwise_expansion=[[16], [32]], stackwise_num_blocks=[1, 1],
                              stackwise_num_filters=[[8], [16]],
                              stackwise_kernel_size=[[3], [3]],
                              stackwise_num_strides=[[2], [2]],
                              stackwise_se_ratio=[[None], [0.25]],
                              stackwise_activation=[["relu"], ["hard_swish"]],
                              stackwise_padding=[[1], [1]], output_num_filters=16,
                              depthwise_filters=8, depthwise_stride=1,
                              depthwise_residual=False, last_layer_filter=16,
                              input_num_filters=8, image_shape=(32, 32, 3)),
    "MobileNetV5Backbone": _mobilenetv5,
    "HGNetV2Backbone": dict(depths=[1, 1], embedding_size=8, hidden_sizes=[16, 16],
                            stem_channels=[3, 8, 8], hidden_act="relu",
                            use_learnable_affine_block=False,
                            stackwise_stage_filters=[(8, 8, 16, 1, 1, 3),
                                                     (16, 8, 16, 1, 1, 3)],
                            apply_downsample=[False, True],
                            use_lightweight_conv_block=[False, False],
                            image_shape=(32, 32, 3)),
    "XceptionBackbone": dict(stackwise_conv_filters=[[8, 8], [16, 16]],
                             stackwise_pooling=[True, False], image_shape=(32, 32, 3)),
    # --- Image backbones (transformers) -------------------------------------------------
    "MiTBackbone": dict(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                        layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0,
                        layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2],
                        hidden_dims=[8, 16], image_shape=(32, 32, 3)),
    "ViTBackbone": dict(image_shape=(32, 32, 3), patch_size=8, num_layers=_L, num_heads=_H,
                        hidden_dim=_D, mlp_dim=_F),
    "DeiTBackbone": dict(image_shape=(32, 32, 3), patch_size=8, num_layers=_L, num_heads=_H,
                         hidden_dim=_D, intermediate_dim=_F),
    "DINOV2Backbone": dict(patch_size=8, num_layers=_L, hidden_dim=_D, num_heads=_H,
                           intermediate_dim=_F, image_shape=(32, 32, 3),
                           position_embedding_shape=(32, 32, 3)),
    "DINOV3Backbone": dict(patch_size=8, num_layers=_L, hidden_dim=_D, num_heads=_H,
                           intermediate_dim=_F, num_register_tokens=1, image_shape=(32, 32, 3)),
    "SwinTransformerBackbone": dict(image_shape=(32, 32, 3), embed_dim=8, depths=[1, 1],
                                    num_heads=[1, 2], window_size=4, patch_size=4,
                                    drop_path=0.0),
    "ViTDetBackbone": dict(hidden_size=_D, num_layers=_L, intermediate_dim=_F, num_heads=_H,
                           global_attention_layer_indices=[1], image_shape=(32, 32, 3),
                           patch_size=8, num_output_channels=8, window_size=2),
    "CLIPVisionEncoder": dict(patch_size=8, hidden_dim=_D, num_layers=_L, num_heads=_H,
                              intermediate_dim=_F, image_shape=(32, 32, 3)),
    "SigLIPVisionEncoder": dict(patch_size=8, hidden_dim=_D, num_layers=_L, num_heads=_H,
                                intermediate_dim=_F, image_shape=(32, 32, 3)),
    "MetaCLIP2VisionEncoder": dict(patch_size=8, hidden_dim=_D, num_layers=_L, num_heads=_H,
                                   intermediate_dim=_F, image_shape=(32, 32, 3)),
    "VideoPrismBackbone": dict(num_frames=2, patch_size=8, hidden_dim=_D, intermediate_dim=_F,
                               num_heads=_H, num_spatial_layers=1, num_temporal_layers=1,
                               num_auxiliary_layers=0, image_shape=(32, 32, 3)),
    # --- Text towers of the contrastive models ------------------------------------------
    "CLIPTextEncoder": dict(vocabulary_size=_V, embedding_dim=_D, hidden_dim=_D, num_layers=_L,
                            num_heads=_H, intermediate_dim=_F, max_sequence_length=32),
    "SigLIPTextEncoder": dict(vocabulary_size=_V, embedding_dim=_D, hidden_dim=_D,
                              num_layers=_L, num_heads=_H, intermediate_dim=_F,
                              max_sequence_length=32),
    "MetaCLIP2TextEncoder": dict(vocabulary_size=_V, embedding_dim=_D, hidden_dim=_D,
                                 num_layers=_L, num_heads=_H, intermediate_dim=_F,
                                 max_sequence_length=32),
    # --- Models built around a sub-model (factories; keras_hub imported lazily) ---------
    "BASNetBackbone": _basnet,
    "DeepLabV3Backbone": _deeplab_v3,
    "RetinaNetBackbone": _retinanet,
    "SegFormerBackbone": _segformer,
    "DepthAnythingBackbone": _depth_anything,
    "PARSeqBackbone": _parseq,
    "CLIPBackbone": _clip,
    "SigLIPBackbone": _siglip,
    "MetaCLIP2Backbone": _metaclip_2,
    "PaliGemmaBackbone": dict(_DECODER, head_dim=8, image_size=32, vit_patch_size=8,
                              vit_num_heads=_H, vit_hidden_dim=_D, vit_num_layers=1,
                              vit_intermediate_dim=_F),
    "FluxBackbone": dict(input_channels=8, hidden_size=_D, mlp_ratio=2.0, num_heads=_H,
                         depth=1, depth_single_blocks=1, axes_dim=[2, 2, 4], theta=10000,
                         use_bias=True, guidance_embed=False, image_shape=(None, 8),
                         text_shape=(4, 8), image_ids_shape=(None, 3), text_ids_shape=(4, 3),
                         y_shape=(8,)),
    "SAMBackbone": _sam,
    "StableDiffusion3Backbone": _stable_diffusion_3,
    "BLIP2Backbone": _blip2,
    "DFineBackbone": _d_fine,
    "SAM3PromptableConceptBackbone": _sam3,
}

# Backbones that cannot be built tiny / at all here, with the exact reason (one line each):
SKIPPED: dict[str, str] = {
    "FeaturePyramidBackbone": "abstract base class (a Backbone plus a `pyramid_outputs` "
                              "property), no layers or call() of its own: "
                              "FeaturePyramidBackbone() builds an empty model with no inputs; "
                              "its concrete subclasses (ResNet, CSPNet, DenseNet, EfficientNet, "
                              "MobileNet, HGNetV2, MiT, DINOV2, ...) are all in CONFIGS",
}

# Inputs that need values other than the sweep's default rule (integer `*mask*` inputs -> ones,
# other integer inputs -> random in [0, 2), float inputs -> standard normal; unknown dims ->
# batch 2, sequence 5, other unknown dims 32). Everywhere: token ids must be < the vocabulary
# (50 here), segment ids < num_segments (2; FNet 4), and models with learned position
# embeddings take at most 32 positions (max_sequence_length=32); the [0, 2) default satisfies
# all of these. Image inputs are the fixed or 32x32 sizes given by `model.inputs`.
INPUT_NOTES: dict[str, str] = {
    "MoonshineBackbone": "encoder_input_values is raw audio (batch, samples, 1) float: the conv "
                         "stem (k127/s64, k7/s3, k3/s2) needs samples >= 895 (verified with "
                         "1600; the default 5 fails); encoder_padding_mask is bool "
                         "(batch, samples) of the same length; decoder_padding_mask is bool; "
                         "decoder_token_ids < 50",
    "SigLIPTextEncoder": "token_ids length must equal max_sequence_length exactly (32): the "
                         "position embedding is added unsliced, so length 5 fails",
    "SigLIPBackbone": "token_ids length must equal the text encoder's max_sequence_length "
                      "exactly (32); images (batch, 32, 32, 3)",
    "StableDiffusion3Backbone": "num_steps (batch,) int32 must be >= 1 (only element [0] is "
                                "read; 0 fails with a gather out of range), e.g. 2; "
                                "guidance_scale (batch,) float, e.g. 5.0; images (batch, 64, "
                                "64, 3) ~[-1, 1]; latents (batch, 8, 8, 16); the four "
                                "clip_{l,g}[_negative]_token_ids < 50 with length <= 32",
    "SAM3PromptableConceptBackbone": "boxes (batch, 1, 5) float = [batch_index, cx, cy, w, "
                                     "h] with batch_index = the row's own index in "
                                     "[0, batch) and cx, cy, w, h normalised to [0, 1] (the "
                                     "default normal values fail: a negative index); exactly "
                                     "one box per image works (0 or 3 boxes fail in "
                                     "keras-hub 0.32); box_labels (batch, 1) int32 in {0, 1} "
                                     "(-10 = padding fails); token_ids < 50, length <= 32; "
                                     "padding_mask int ones",
    "SAMBackbone": "runs under the default rule, but meaningful prompts are: points "
                   "(batch, n, 2) pixel coords in [0, 32); labels (batch, n) float in "
                   "{1, 0, -1 = padding}; boxes (batch, m, 2, 2) pixel corners in [0, 32); "
                   "masks (batch, 0 or 1, 16, 16, 1) (0 masks = the no-mask embedding)",
    "FluxBackbone": "timesteps (batch,) float in [0, 1]; image_ids (batch, L, 3) and text_ids "
                    "(batch, 4, 3) are float position ids (small non-negative integers as "
                    "floats); text is fixed at 4 tokens (batch, 4, 8); image (batch, L, 8) "
                    "with L dynamic; y (batch, 8); guidance is ignored (guidance_embed=False)",
    "Gemma4Backbone": "position_ids (batch, seq) int32 should be arange(seq) per row (any "
                      "small non-negative ints run, e.g. the default [0, 2))",
    "PaliGemmaBackbone": "response_mask (batch, seq) int: 1 marks causal response tokens, 0 "
                         "the bidirectional prefix (all-ones runs); output length is 16 image "
                         "tokens + seq",
    "PARSeqBackbone": "token_ids length <= max_label_length + 1 = 9 (10 fails); ids < 50 "
                      "(the head predicts 48 classes); images (batch, 32, 32, 3)",
    "BLIP2Backbone": "token_ids/padding_mask length <= 28 (OPT positions are offset by the 4 "
                     "query tokens + 2; 29 fails); ids < 50; images (batch, 32, 32, 3)",
    "WhisperBackbone": "encoder_features (batch, frames, 8) float with frames <= 32 "
                       "(max_encoder_sequence_length; 33 fails); decoder_token_ids < 50, "
                       "length <= 32",
    "Gemma3nBackbone": "padding_mask is bool (the default ones become True)",
    "EdRecBackbone": "encoder_padding_mask and decoder_padding_mask are bool",
    "VideoPrismBackbone": "pixel_values is video: (batch, 2 frames, 32, 32, 3)",
}
