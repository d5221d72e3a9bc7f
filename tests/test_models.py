"""Every preset: forward at batch 1 and 2, backward, default size and a size that is not a multiple of 32."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import vitkit
from vitkit.models.layers import pad_same

ALL_MODELS = vitkit.list_models()
# (default, odd) input sizes: the odd one is not a multiple of 32 (nor of 2 for MobileViT's last stages)
ODD_SIZE = {"vit_cifar": 90}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward_default_and_odd_size(name):
    model = vitkit.create_model(name, num_classes=7)
    default = model.preprocess.input_size
    for size in (default, ODD_SIZE.get(name, 200)):
        for batch in (1, 2):
            model.eval()
            with torch.no_grad():
                out = model(torch.rand(batch, 3, size, size))
            assert out.shape == (batch, 7)
            assert torch.isfinite(out).all()
        model.train()
        x = torch.rand(1, 3, size, size, requires_grad=True)  # batch 1: reshape bugs hide there
        model(x).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None for g in grads), "a parameter got no gradient"
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_batch_elements_are_independent(name):
    # a reshape that mixes batch and token axes shows up as one image changing another's logits
    model = vitkit.create_model(name, num_classes=3).eval()
    size = model.preprocess.input_size
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        both = model(x)
        first = model(x[:1])
        x2 = x.clone()
        x2[1] = torch.rand(3, size, size)
        changed = model(x2)
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(changed[:1], first, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "name, num_classes, expected",
    [
        ("mobilevit_xxs", 1000, 1_272_024),  # timm and transformers give the same
        ("mobilevit_xs", 1000, 2_317_848),
        ("mobilevit_s", 1000, 5_578_632),
        ("vit_b16", 1000, 86_567_656),
        ("vit_b16_no_qkv_bias", 1000, 86_567_656 - 27_648),
        ("vit_s16", 1000, 22_050_664),
        ("vit_ti16", 1000, 5_717_416),
        ("vit_cifar", 1000, 349_224),
        ("vit_cifar", 10, 349_224 - 990 * 65),  # the head: 64 weights and a bias per class
        ("mobilevit_xxs_keras", 5, 1_305_077),  # trainable; Keras' total adds 2,544 BatchNorm statistics
        ("mobilevitv2_050", 1000, 1_370_593),  # timm and transformers give the same
        ("mobilevitv2_075", 1000, 2_866_009),
        ("mobilevitv2_100", 1000, 4_901_841),
        ("mobilevitv2_125", 1000, 7_478_089),
        ("mobilevitv2_150", 1000, 10_594_753),
        ("mobilevitv2_175", 1000, 14_251_833),
        ("mobilevitv2_200", 1000, 18_449_329),
        ("mobilevitv3_xxs", 1000, 1_249_448),  # the paper: 1.2M, 2.5M, 5.8M, 1.4M, 3.0M, 5.1M
        ("mobilevitv3_xs", 1000, 2_490_360),
        ("mobilevitv3_s", 1000, 5_763_912),
        ("mobilevitv3_050", 1000, 1_429_985),
        ("mobilevitv3_075", 1000, 2_999_641),
        ("mobilevitv3_100", 1000, 5_139_409),
    ],
)
def test_parameter_counts(name, num_classes, expected):
    model = vitkit.create_model(name, num_classes=num_classes)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_keras_preset_total_as_keras_counts_it():
    model = vitkit.create_model("mobilevit_xxs_keras", num_classes=5)
    trainable = sum(p.numel() for p in model.parameters())
    bn_stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert bn_stats == 2_544
    assert trainable + bn_stats == 1_307_621


def test_vit_cifar_matches_seed_hyper_parameters():
    model = vitkit.create_model("vit_cifar", num_classes=10)
    assert model.preprocess.input_size == 72
    assert model.pos_embed.shape == (1, 1 + 144, 64)  # 144 patches of 6x6, plus the class token
    assert len(model.blocks) == 8
    assert model.blocks[0].attn.num_heads == 4
    assert model.blocks[0].mlp.fc1.out_features == 128 and model.blocks[0].mlp.fc2.out_features == 64


def test_features_and_head_are_separate():
    model = vitkit.create_model("mobilevit_xxs", num_classes=4).eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, 320, 8, 8)
        assert model.forward_head(feats, pre_logits=True).shape == (1, 320)
        torch.testing.assert_close(model.forward_head(feats), model(x))
    vit = vitkit.create_model("vit_ti16", num_classes=4).eval()
    with torch.no_grad():
        tokens = vit.forward_features(torch.rand(1, 3, 224, 224))
    assert tokens.shape == (1, 197, 192)


@pytest.mark.parametrize(
    "name, overrides",
    [("vit_cifar", {"mlp_drop_rate": 0.0}), ("vit_ti16", {"qkv_bias": False, "image_size": 64, "depth": 2})],
)
def test_vit_forward_is_the_class_token_of_every_tokens_features(name, overrides):
    """forward() runs the last block for the class token alone; logits and every gradient equal the full path's."""
    torch.manual_seed(0)
    model = vitkit.create_model(name, num_classes=7, **overrides).train()
    size = model.config.image_size
    x = torch.rand(3, 3, size, size)
    y = torch.tensor([0, 3, 6])

    def loss_and_grads(forward):
        model.zero_grad()
        logits = forward(x)
        F.cross_entropy(logits, y).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    fast, fast_grads = loss_and_grads(model)
    full, full_grads = loss_and_grads(lambda x: model.forward_head(model.forward_features(x)))
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    assert fast_grads.keys() == full_grads.keys()
    for n in full_grads:
        torch.testing.assert_close(fast_grads[n], full_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    # and the work is really skipped: the last block's other N - 1 tokens' q, attention, projection and MLP
    from vitkit.models.summary import count_macs

    model.eval()
    D, M, N = model.config.dim, model.blocks[-1].mlp.fc1.out_features, model.pos_embed.shape[1]
    fast_macs, _ = count_macs(model, x[:1])
    full_macs, _ = count_macs(lambda x: model.forward_head(model.forward_features(x)), x[:1])
    assert full_macs - fast_macs == (N - 1) * (2 * D * D + 2 * N * D + 2 * D * M)


@pytest.mark.parametrize("name", ["mobilevit_xxs", "vit_ti16"])
def test_one_class_is_a_one_logit_head_and_the_config_is_kept(name):
    model = vitkit.create_model(name, num_classes=1).eval()
    size = model.preprocess.input_size
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 1)  # a one-logit head, as for a sigmoid
    assert model.config == vitkit.models.get_model_spec(name).config


def test_num_classes_zero_gives_pooled_features():
    model = vitkit.create_model("mobilevit_xs", num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 256, 256)).shape == (2, 384)


def test_reset_classifier():
    model = vitkit.create_model("vit_cifar", num_classes=10)
    model.reset_classifier(3)
    assert model(torch.rand(1, 3, 72, 72)).shape == (1, 3)


def test_preprocessing_travels_with_the_model():
    assert vitkit.create_model("mobilevit_xxs").preprocess.mean == (0.0, 0.0, 0.0)
    assert vitkit.create_model("vit_b16").preprocess.mean == (0.5, 0.5, 0.5)
    assert vitkit.create_model("vit_b16", image_size=384).preprocess.input_size == 384
    keras = vitkit.create_model("mobilevit_xxs_keras").preprocess
    assert (keras.input_size, keras.crop_pct) == (256, 1.0)


def test_vit_image_size_override_sizes_the_position_embedding():
    model = vitkit.create_model("vit_ti16", image_size=384, num_classes=2)
    assert model.pos_embed.shape == (1, 1 + 24 * 24, 192)


def test_vit_position_embedding_is_interpolated_for_new_sizes():
    model = vitkit.create_model("vit_ti16", num_classes=2).eval()
    # a non-square size: the 14x14 grid is resized to 18x20
    with torch.no_grad():
        assert model(torch.rand(1, 3, 288, 320)).shape == (1, 2)


def test_unknown_model_and_option_errors_are_one_sentence():
    with pytest.raises(ValueError, match="Did you mean mobilevit_xxs"):
        vitkit.create_model("mobilevit_xxx")
    with pytest.raises(ValueError, match="has no option dropout"):
        vitkit.create_model("mobilevit_s", dropout=0.2)


def test_list_models_filter():
    assert vitkit.list_models("mobilevit_*") == ["mobilevit_s", "mobilevit_xs", "mobilevit_xxs", "mobilevit_xxs_keras"]
    assert vitkit.list_models("mobilevitv3_*") == [f"mobilevitv3_{s}" for s in ("050", "075", "100", "s", "xs", "xxs")]


@pytest.mark.parametrize(
    "size, expected",
    [(256, (0, 1)), (255, (1, 1)), (128, (0, 1)), (7, (1, 1))],  # TensorFlow pads the extra pixel after
)
def test_tf_same_padding(size, expected):
    padded = pad_same(torch.ones(1, 1, size, size), kernel_size=3, stride=2)
    top, bottom = expected
    assert padded.shape[-2:] == (size + top + bottom,) * 2
    assert bool((padded[0, 0, 0] == 0).all()) == (top == 1)  # a zero first row means a pad before
    assert bool((padded[0, 0, -1] == 0).all()) == (bottom == 1)


def test_keras_preset_attends_across_the_whole_map():
    # Keras' MultiHeadAttention on the (4, hw/4, d) reshape attends over both axes: a pixel in the first
    # row band must influence tokens in the last band through one transformer layer
    block = vitkit.create_model("mobilevit_xxs_keras").stages[2][1].transformer[0].eval()
    tokens = torch.randn(1, 32 * 32, 64)
    with torch.no_grad():
        base = block(tokens)
        tokens[0, :256] += 3 * torch.randn(256, 64)  # the first row band (the top 8 rows)
        moved = block(tokens)
    assert (moved[0, -256:] - base[0, -256:]).abs().max() > 1e-2  # the last band sees it


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevit_s", "mobilevit_xxs_keras"])
def test_fuse_folds_batchnorm_and_keeps_the_logits(name):
    from tests.conftest import randomize_

    model = randomize_(vitkit.create_model(name, num_classes=10)).eval()
    fused = vitkit.models.fuse(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.rand(2, 3, 200, 232)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevit_xxs_keras"])
def test_channels_last_gives_the_same_logits(name):
    from tests.conftest import randomize_

    model = randomize_(vitkit.create_model(name, num_classes=10)).eval()
    x = torch.rand(2, 3, 200, 232)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("B, C, H, W, p", [(1, 3, 4, 6, 2), (2, 5, 6, 4, 2), (2, 2, 9, 6, 3)])
def test_unfold_groups_pixels_by_position_inside_their_patch(B, C, H, W, p, channels_last):
    """Token n of sequence (i, j) is pixel (i, j) of patch n (patches row-major): checked index by index
    against the definition, and fold must undo it exactly."""
    from vitkit.models.mobilevit import fold, unfold

    x = torch.arange(B * C * H * W, dtype=torch.float32).reshape(B, C, H, W)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    tokens = unfold(x, p, channels_last)
    nh, nw = H // p, W // p
    assert tokens.shape == (B * p * p, nh * nw, C)
    for b in range(B):
        for i in range(p):
            for j in range(p):
                for n in range(nh * nw):
                    row, col = divmod(n, nw)
                    expected = x[b, :, row * p + i, col * p + j]
                    assert torch.equal(tokens[b * p * p + i * p + j, n], expected), (b, i, j, n)
    assert torch.equal(fold(tokens, B, C, nh, nw, p, channels_last), x)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_gradients_match_finite_differences(name):
    """Autograd's directional derivative equals a central difference in float64: the in-place activations,
    residuals and reshapes must leave backward correct, not merely finite."""
    from tests.conftest import randomize_

    model = vitkit.create_model(name, num_classes=5, drop_rate=0.0, attn_drop_rate=0.0)
    model = randomize_(model, scale=0.1).double().eval()  # random BatchNorm statistics: signal reaches the input
    size = 64 if name != "vit_cifar" else 36
    x = torch.rand(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 5, dtype=torch.float64)
    (model(x) * weights).sum().backward()
    # a random direction plus the gradient's own (scaled to the same length): the derivative along it cannot
    # be small by chance, and a wrong gradient still shows (its direction is checked against the model)
    direction = torch.randn_like(x) + x.grad * (x.numel() ** 0.5 / x.grad.norm())
    eps = 1e-6
    with torch.no_grad():
        numeric = ((model(x + eps * direction) - model(x - eps * direction)) * weights).sum() / (2 * eps)
    analytic = (x.grad * direction).sum()
    assert abs(float(analytic)) > 1e-3, "the gradient is too small for the check to mean anything"
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 3),
    C=st.integers(1, 5),
    nh=st.integers(1, 6),
    nw=st.integers(1, 6),
    p=st.integers(1, 3),
    channels_last=st.booleans(),
)
def test_fold_undoes_unfold_for_any_feature_map(B, C, nh, nw, p, channels_last):
    from vitkit.models.mobilevit import fold, unfold

    x = torch.randn(B, C, nh * p, nw * p)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    tokens = unfold(x, p, channels_last)
    assert tokens.shape == (B * p * p, nh * nw, C)
    assert torch.equal(fold(tokens, B, C, nh, nw, p, channels_last), x)


@pytest.fixture(scope="module")
def small_models():
    return {name: vitkit.create_model(name, num_classes=3).eval() for name in ("mobilevit_xxs", "vit_cifar")}


@settings(max_examples=8, deadline=None)
@given(name=st.sampled_from(["mobilevit_xxs", "vit_cifar"]), batch=st.integers(1, 5), side=st.integers(33, 80))
def test_any_batch_size_gives_each_image_its_own_logits(small_models, name, batch, side):
    model = small_models[name]
    x = torch.rand(batch, 3, side, side)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(batch)])
    assert together.shape == (batch, 3)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
