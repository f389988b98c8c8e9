"""Keys and shapes of ST_Memory's released checkpoint ("psp50+STF+MAR"), transcribed from
shared/docs/temporal-modules.md, NOT generated from lmanet_ros's modules.

Sources, by section of that document:

- 2.6 "Checkpoints": the key list and every shape written there (pspnet.decode_head.*,
  STF.*, MAR.*); "plain torch.save(state_dict) of the whole SegRefine module";
  "pspnet.backbone.*" and "pspnet.auxiliary_head.*" (given as patterns only, expanded below
  from the sections 2.6 points to).
- 2.2 "STF, exactly": d = 512, FFN 256, one encoder and one decoder layer, LayerNorms over d.
- 2.3 "MAR, exactly": memory 190 x 512 each, stacks 512 -> 512 -> 256 -> 256 (no biases),
  Wo 256 -> 512, FFN 512 -> 256 -> 512, norm1, norm2.
- 2.1 point 1 -> 1.2 "Backbone" (ResNetV1c-50: deep stem 3 -> 32 (stride 2) -> 32 -> 64, each
  with BN; ResNet-50's stages of 3, 4, 6, 3 bottlenecks, widths 64, 128, 256, 512, expansion 4,
  a downsample projection in each stage's first block) and 1.8 "Checkpoints" (mmseg's key
  patterns: backbone.stem.{0,3,6}.weight, backbone.stem.{1,4,7}.*, backbone.layer{1..4}.{b}.
  conv{1,2,3}.weight / bn{1,2,3}.*, downsample.{0,1}.*; a BN's keys are weight, bias,
  running_mean, running_var, num_batches_tracked; no conv biases except conv_seg).
- 1.3 / 1.8, auxiliary head: mmseg FCNHead on stage 3, CBR 3x3 1024 -> 256, 1x1 256 -> 19
  (auxiliary_head.convs.0.conv.weight [256,1024,3,3], convs.0.bn.*, conv_seg.*).

``RELEASED`` maps each key to its shape (``()``: a scalar, ``num_batches_tracked``);
``TRAINING_ONLY_PREFIX`` names the keys a model without the auxiliary head ignores.
"""

RELEASED: dict[str, tuple[int, ...]] = {}
TRAINING_ONLY_PREFIX = "pspnet.auxiliary_head."
D = 512


def _bn(prefix: str, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        RELEASED[f"{prefix}.{name}"] = (channels,)
    RELEASED[f"{prefix}.num_batches_tracked"] = ()


def _layer_norm(prefix: str) -> None:
    RELEASED[f"{prefix}.weight"] = (D,)
    RELEASED[f"{prefix}.bias"] = (D,)


# --- pspnet.backbone.* (sections 1.2, 1.8) ---------------------------------------------------
for index, (cin, cout) in zip((0, 3, 6), ((3, 32), (32, 32), (32, 64))):
    RELEASED[f"pspnet.backbone.stem.{index}.weight"] = (cout, cin, 3, 3)
    _bn(f"pspnet.backbone.stem.{index + 1}", cout)
in_channels = 64
for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
    for block in range(blocks):
        prefix = f"pspnet.backbone.layer{stage}.{block}"
        RELEASED[f"{prefix}.conv1.weight"] = (width, in_channels, 1, 1)
        _bn(f"{prefix}.bn1", width)
        RELEASED[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
        _bn(f"{prefix}.bn2", width)
        RELEASED[f"{prefix}.conv3.weight"] = (4 * width, width, 1, 1)
        _bn(f"{prefix}.bn3", 4 * width)
        if block == 0:
            RELEASED[f"{prefix}.downsample.0.weight"] = (4 * width, in_channels, 1, 1)
            _bn(f"{prefix}.downsample.1", 4 * width)
        in_channels = 4 * width

# --- pspnet.decode_head.* (section 2.6, verbatim shapes) ------------------------------------
for branch in range(4):
    RELEASED[f"pspnet.decode_head.psp_modules.{branch}.1.conv.weight"] = (512, 2048, 1, 1)
    _bn(f"pspnet.decode_head.psp_modules.{branch}.1.bn", 512)
RELEASED["pspnet.decode_head.bottleneck.conv.weight"] = (512, 4096, 3, 3)
_bn("pspnet.decode_head.bottleneck.bn", 512)
RELEASED["pspnet.decode_head.conv_seg.weight"] = (19, 512, 1, 1)
RELEASED["pspnet.decode_head.conv_seg.bias"] = (19,)

# --- pspnet.auxiliary_head.* (sections 1.3, 1.8) --------------------------------------------
RELEASED["pspnet.auxiliary_head.convs.0.conv.weight"] = (256, 1024, 3, 3)
_bn("pspnet.auxiliary_head.convs.0.bn", 256)
RELEASED["pspnet.auxiliary_head.conv_seg.weight"] = (19, 256, 1, 1)
RELEASED["pspnet.auxiliary_head.conv_seg.bias"] = (19,)

# --- STF.* (sections 2.2, 2.6, verbatim shapes) ---------------------------------------------
RELEASED["STF.pe_enc"] = (1, 512, 3, 128, 256)
RELEASED["STF.pe_dec"] = (1, 512, 1, 128, 256)
for layer, attentions, norms in (("encoder", ("self_attn",), 2),
                                 ("decoder", ("self_attn", "multihead_attn"), 3)):
    prefix = f"STF.{layer}.layers.0"
    for attention in attentions:
        for stage in ("self_attn_long", "self_attn_short"):
            RELEASED[f"{prefix}.{attention}.{stage}.in_proj_weight"] = (1536, 512)
            RELEASED[f"{prefix}.{attention}.{stage}.in_proj_bias"] = (1536,)
            RELEASED[f"{prefix}.{attention}.{stage}.out_proj.weight"] = (512, 512)
            RELEASED[f"{prefix}.{attention}.{stage}.out_proj.bias"] = (512,)
    RELEASED[f"{prefix}.linear1.weight"] = (256, 512)
    RELEASED[f"{prefix}.linear1.bias"] = (256,)
    RELEASED[f"{prefix}.linear2.weight"] = (512, 256)
    RELEASED[f"{prefix}.linear2.bias"] = (512,)
    for norm in range(1, norms + 1):
        _layer_norm(f"{prefix}.norm{norm}")

# --- MAR.* (sections 2.3, 2.6, verbatim shapes) ---------------------------------------------
RELEASED["MAR.memory_key"] = (1, 190, 512)
RELEASED["MAR.memory_value"] = (1, 190, 512)
for stack in ("to_q", "to_k", "to_v"):
    RELEASED[f"MAR.HEdecoder.attn.{stack}.0.weight"] = (512, 512)
    RELEASED[f"MAR.HEdecoder.attn.{stack}.1.weight"] = (256, 512)
    RELEASED[f"MAR.HEdecoder.attn.{stack}.2.weight"] = (256, 256)
RELEASED["MAR.HEdecoder.attn.to_out.0.weight"] = (512, 256)
RELEASED["MAR.HEdecoder.attn.to_out.0.bias"] = (512,)
_layer_norm("MAR.HEdecoder.norm1")
_layer_norm("MAR.HEdecoder.norm2")
RELEASED["MAR.HEdecoder.linear1.weight"] = (256, 512)
RELEASED["MAR.HEdecoder.linear1.bias"] = (256,)
RELEASED["MAR.HEdecoder.linear2.weight"] = (512, 256)
RELEASED["MAR.HEdecoder.linear2.bias"] = (512,)
