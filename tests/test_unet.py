"""The DDPM U-Net: its size (the paper's 35.7M for CIFAR-10), shapes, an end-to-end gradient check of the
network plus the loss in float64, dropout, and training, sampling and conditioning through it unchanged."""

import numpy as np
import pytest

from tinydiff import autograd as A
from tinydiff import backend as B
from tinydiff import nn, samplers
from tinydiff import train as T
from tinydiff.autograd import Tensor, no_grad
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.gradcheck import gradcheck
from tinydiff.schedules import make_schedule
from conftest import host

TINY = dict(in_channels=1, ch=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), image_size=8)


def test_the_paper_s_cifar10_model_has_35_7_million_parameters():
    """Ho et al. 2020, Appendix B: "Our CIFAR10 model has 35.7 million parameters"."""
    model = nn.UNet.ddpm_cifar10()
    assert model.num_parameters() == 35_746_307 and round(model.num_parameters() / 1e6, 1) == 35.7
    assert nn.UNet.parameter_count(**{k: v for k, v in nn.UNet.PAPER_CIFAR10.items() if k != "dropout"}) \
        == 35_746_307
    config = T.TrainConfig(data="cifar10").resolved()  # the command line's cifar10 default is that model
    assert config.model == "unet" and T.run.parameter_count(config, 3072, 10, (3, 32, 32)) == 35_746_307


@pytest.mark.parametrize("kwargs", [
    dict(), TINY, dict(TINY, num_classes=10, extra_channels=1), dict(TINY, in_channels=3, num_res_blocks=2),
    dict(ch=8, ch_mult=(1, 2, 2, 2), attn_resolutions=(16, 8), image_size=32, in_channels=3),
])
def test_parameter_count_matches_the_built_model(kwargs):
    model = nn.UNet(**kwargs)
    assert nn.UNet.parameter_count(**kwargs) == model.num_parameters()


def test_the_small_default_is_about_0_3m_parameters_at_three_resolutions():
    model = nn.UNet()
    assert 0.25e6 < model.num_parameters() < 0.35e6
    assert [level.block[-1].conv1.out_channels for level in model.down] == [16, 32, 32]
    assert [bool(level.attn) for level in model.down] == [False, False, True]  # attention at 7 x 7


def test_bad_architectures_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="divisible by 2\\^3"):
        nn.UNet(ch_mult=(1, 2, 2, 2), image_size=28)  # 28 -> 14 -> 7 -> 4 cannot come back to 7
    with pytest.raises(ValueError, match="among the resolutions 28, 14, 7"):
        nn.UNet(attn_resolutions=(16,))
    with pytest.raises(ValueError, match="even"):
        nn.UNet(ch=15)


def test_shapes_flat_and_nchw_and_one_int_t(backend):
    model = nn.UNet(**TINY, rng=B.default_rng(0))
    for p in model.parameters():  # no zero-initialised layer: every path shows in the output
        p.data = B.default_rng(1).normal(tuple(p.shape)) * 0.3
    x = B.default_rng(2).normal((3, 64))
    out = model(x, B.asarray(np.array([5, 5, 5])))
    assert out.shape == (3, 64)
    images = model(A.reshape(Tensor(x), (3, 1, 8, 8)), 5)
    assert images.shape == (3, 1, 8, 8)
    assert np.allclose(host(images).reshape(3, 64), host(out), atol=1e-5)  # one int t = the same t per row
    with pytest.raises(ValueError, match="shape"):
        model(B.default_rng(3).normal((3, 65)), 5)


def _float64_model(**kwargs):
    """A float64 copy of a U-Net with every weight random (the zero-initialised ones too)."""
    model = nn.UNet(**kwargs, rng=B.default_rng(0))
    for i, p in enumerate(model.parameters()):
        p.data = B.default_rng((1, i)).normal(tuple(p.shape), dtype=B.float64()) * 0.4
    return model


def _swap_parameters(model, names, values):
    """Set the parameters called ``names`` to the tensors ``values`` (gradcheck's inputs)."""
    for name, value in zip(names, values):
        owner = model
        *path, leaf = name.split(".")
        for part in path:
            owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
        setattr(owner, leaf, value)


def test_the_whole_unet_plus_the_loss_passes_gradcheck():
    """Algorithm 1's loss through the whole network, in float64: d loss / d x_0, and d loss / d theta in a random
    direction of all 10k parameters at once, plus the full Jacobian of a few weight tensors of every kind."""
    model = _float64_model(**TINY, num_classes=3)
    diffusion = GaussianDiffusion(make_schedule("linear", 100), prediction_type="eps")
    x0 = B.default_rng(2).normal((2, 64), dtype=B.float64())
    t, y = B.asarray(np.array([3, 70])), B.asarray(np.array([0, 2]))

    def loss(x):
        return diffusion.training_loss(model, x, B.default_rng(4), t=t, model_kwargs={"y": y})

    assert gradcheck(loss, [Tensor(x0)])
    names = [name for name, _ in model.named_parameters()]
    base = [p.data for p in model.parameters()]
    direction = [B.default_rng((5, i)).normal(tuple(p.shape), dtype=B.float64()) for i, p in enumerate(base)]

    def along(s):  # every parameter moved by s times its direction
        _swap_parameters(model, names, [p + s * v for p, v in zip(base, direction)])
        return loss(Tensor(x0))

    assert gradcheck(along, [Tensor(B.asarray(np.zeros(1), dtype=B.float64()))])
    checked = ["conv_in.weight", "down.1.attn.0.q.weight", "down.0.block.0.temb_proj.weight",
               "up.0.block.0.nin_shortcut.bias", "mid_block1.norm2.weight", "down.0.resample.conv.bias",
               "up.0.resample.conv.bias", "classes.table.weight", "conv_out.weight"]
    for name in checked:
        index = names.index(name)

        def with_one(p, index=index):
            values = [Tensor(b) for b in base]
            values[index] = p
            _swap_parameters(model, names, values)
            return loss(Tensor(x0))

        assert gradcheck(with_one, [Tensor(base[index])]), name


def test_dropout_only_in_a_training_step_and_reproducible():
    model = nn.UNet(**TINY, dropout=0.5)
    for i, p in enumerate(model.parameters()):
        p.data = B.default_rng((1, i)).normal(tuple(p.shape)) * 0.3
    x, t = B.default_rng(2).normal((2, 64)), B.asarray(np.array([1, 2]))
    with no_grad():
        whole = host(model(x, t))  # sampling runs under no_grad: the whole network
    first, second = host(model(x, t)), host(model(x, t))  # a graph in training mode: dropped
    assert not np.allclose(first, whole) and not np.allclose(first, second)
    assert model.dropout_calls == 2
    model.dropout_calls = 0
    assert np.array_equal(host(model(x, t)), first)  # the masks are keyed on (dropout_seed, dropout_calls)
    model.eval()
    assert np.allclose(host(model(x, t)), whole)


def tiny_unet_config(**overrides):
    values = dict(data="digits", model="unet", channels=4, channel_mult="1,2", res_blocks=1, steps=6,
                  batch_size=8, T=50, warmup=2, checkpoint_every=3, log_every=3, ema=0.9, seed=3, dropout=0.2)
    values.update(overrides)
    return T.TrainConfig(**values)


def test_training_resumes_exactly_with_dropout(tmp_path):
    quiet = dict(progress=False, log=lambda *_: None)
    straight = T.train(tiny_unet_config(), tmp_path / "straight", **quiet)
    T.train(tiny_unet_config(), tmp_path / "split", stop_at=3, **quiet)
    second = T.train(tiny_unet_config(), tmp_path / "split", resume=True, **quiet)
    for (name, a), (_, b) in zip(straight.run.model.named_parameters(), second.run.model.named_parameters()):
        assert np.array_equal(host(a), host(b)), name
    config = straight.run.config
    assert config.attention_resolutions == "lowest" and straight.run.model.down[-1].attn  # 8 -> 4: attention at 4
    assert T.run.parameter_count(config, 64, 10, (8, 8)) == straight.run.model.num_parameters()


def test_sampling_guidance_and_superresolution_take_the_unet_unchanged(tmp_path):
    quiet = dict(progress=False, log=lambda *_: None)
    run = T.train(tiny_unet_config(conditional=True, steps=2), tmp_path / "c", **quiet).run
    shape = (4, 64)
    guided = samplers.ddim(samplers.classifier_free_guidance(run.model, 2.0), run.diffusion, shape,
                           B.default_rng(0), steps=4, model_kwargs={"y": B.asarray(np.array([0, 1, 2, 3]))})
    assert guided.shape == shape and np.all(np.isfinite(host(guided)))
    sr = T.train(tiny_unet_config(superres=2, steps=2), tmp_path / "sr", **quiet).run
    assert sr.model.extra_channels == 1
    low = T.low_resolution(B.default_rng(1).normal(shape), (8, 8), 2)
    out = samplers.ddpm(sr.model, sr.diffusion, shape, B.default_rng(0), model_kwargs={"extra": low})
    assert out.shape == shape


def test_unet_options_need_model_unet_and_well_formed_lists():
    with pytest.raises(ValueError, match="channels is an option of the U-Net"):
        T.TrainConfig(data="mnist", model="resmlp", channels=32).validate()
    with pytest.raises(ValueError, match="channel_mult must be a comma-separated list"):
        T.TrainConfig(data="mnist", model="unet", channel_mult="1,x").validate()
    T.TrainConfig(data="cifar10", channels=64).validate()  # cifar10's default model is the U-Net
    small = T.TrainConfig(data="mnist", model="unet").resolved()
    assert (small.channels, small.channel_mult, small.res_blocks, small.dropout) == (16, "1,2,2", 1, 0.0)
    assert T.TrainConfig(data="mnist").resolved().channels is None  # the residual MLP has no U-Net options


def test_unet_forward_and_backward_under_each_backend(backend):
    model = nn.UNet(**TINY, num_classes=2)
    out = model(B.default_rng(0).normal((2, 64)), B.asarray(np.array([0, 9])), y=B.asarray(np.array([0, 1])))
    A.mse(out, B.default_rng(1).normal((2, 64))).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.conv_out.weight.grad.dtype == B.default_dtype()


def test_colour_images_train_save_and_load(tmp_path):
    """A (3, H, W) data set (CIFAR-10's layout): the U-Net takes three channels, the checkpoint keeps the shape."""
    from tinydiff import data as D

    rng = np.random.default_rng(0)
    dataset = D.Dataset(x=rng.uniform(-1, 1, (16, 3 * 8 * 8)).astype(np.float32), labels=rng.integers(0, 10, 16),
                        num_classes=10, image_shape=(3, 8, 8), name="cifar10", levels=256)
    config = T.TrainConfig(data="cifar10", channels=4, channel_mult="1,2", res_blocks=1, attention_resolutions="none",
                           dropout=0.0, steps=2, batch_size=4, T=50, checkpoint_every=2)
    result = T.train(config, tmp_path, progress=False, log=lambda *_: None, dataset=dataset)
    assert result.run.model.in_channels == 3 and result.run.config.lr == 2e-4  # cifar10: the paper's setting
    loaded = T.load_run(tmp_path)
    assert loaded.image_shape == (3, 8, 8) and loaded.model.num_parameters() == result.run.model.num_parameters()
    with pytest.raises(ValueError, match="grey-scale"):
        T.new_run(T.TrainConfig(data="cifar10", channels=4, channel_mult="1,2", superres=2), dataset)


@pytest.mark.parametrize("model", ["unet", "resmlp"])
def test_the_sampler_s_memory_estimate_covers_one_model_call(model, tmp_path):
    """`sample` refuses an n that cannot fit from activations_per_row: it must not undercount what a call holds."""
    import tracemalloc

    from tinydiff.cli.sample import activations_per_row

    if model == "unet":
        config = tiny_unet_config(channels=8, steps=1, dropout=0.0)
    else:
        config = T.TrainConfig(data="digits", model="resmlp", width=64, steps=1, batch_size=8, T=50, seed=3)
    run = T.train(config, tmp_path, progress=False, log=lambda *_: None).run
    rows = 256
    x = B.asarray(np.random.default_rng(0).normal(size=(rows, 64)).astype(np.float32))
    with no_grad():
        run.model(x, 10)  # warm
        tracemalloc.start()
        run.model(x, 10)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    estimate = 4 * rows * activations_per_row(run)
    assert peak <= estimate <= 20 * peak, (peak, estimate)


def test_inference_goes_through_cache_sized_slices_with_the_same_result():
    """Without a graph, on the CPU, a large batch is cut into slices of rows: every per-row argument is cut alike."""
    rng = np.random.default_rng(0)
    model = nn.UNet(in_channels=1, ch=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
                    image_size=8, num_classes=3, extra_channels=1)
    for parameter in model.parameters():  # the output layers start at zero: make every weight count
        parameter.data = B.asarray(rng.normal(scale=0.3, size=parameter.shape).astype(np.float32))
    x, extra = (B.asarray(rng.normal(size=(10, 64)).astype(np.float32)) for _ in range(2))
    y, t_rows = B.asarray(np.arange(10) % 3), B.asarray(rng.integers(0, 1000, 10))
    model.MAP_BYTES = 3 * 4 * 4 * 8 * 8  # three rows a slice
    with no_grad():
        assert model.rows_per_call(10) == 3
        sliced = [host(model(x, t, y=y, extra=extra)) for t in (7, t_rows)]
        model.MAP_BYTES = 2**40
        assert model.rows_per_call(10) == 10
        whole = [host(model(x, t, y=y, extra=extra)) for t in (7, t_rows)]
    for a, b in zip(sliced, whole):
        assert np.allclose(a, b, atol=1e-6)
    assert not np.allclose(whole[0], whole[1], atol=1e-6)  # the per-row t reached the rows it belongs to
    model.MAP_BYTES = 3 * 4 * 4 * 8 * 8
    assert model.rows_per_call(10) == 10  # recording a graph (training): the whole batch in one pass
    with no_grad():  # t and y are checked against all the rows before any slice is cut
        with pytest.raises(ValueError, match="t has 3"):
            model(x, B.asarray(np.arange(3)), y=y, extra=extra)
        with pytest.raises(ValueError):
            model(x, 7, y=B.asarray(np.arange(5) % 3), extra=extra)


def test_norm_groups_divide_every_width_and_keep_the_paper_s_32():
    import math

    for channels in range(1, 600):
        groups = nn.norm_groups(channels)
        assert channels % groups == 0 and groups <= 32, channels
        assert nn.norm_groups(channels, 32, 1) == math.gcd(32, channels)  # the rule before group_channels
    assert [nn.norm_groups(c) for c in (128, 256, 384, 512)] == [32] * 4  # the paper's widths, as in its code
    assert [nn.norm_groups(c) for c in (8, 16, 32, 48)] == [2, 4, 8, 4]  # at least 4 channels a group
    nn.UNet(ch=18, ch_mult=(1, 2), attn_resolutions=(14,))  # 18 // 4 = 4 groups would not divide 18: 2 do


@pytest.mark.parametrize("group_channels", [4, 1])
def test_the_small_unet_sees_the_timestep_and_the_class(group_channels):
    """t and y enter as a constant per channel; GroupNorm groups of one channel would subtract them again."""
    rng = np.random.default_rng(0)
    model = nn.UNet(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), num_classes=10,
                    group_channels=group_channels, rng=B.default_rng(0))
    for parameter in model.parameters():  # the output layers start at zero: make every weight count
        parameter.data = B.asarray(rng.normal(scale=0.2, size=parameter.shape).astype(np.float32))
    x = B.asarray(rng.normal(size=(2, 784)).astype(np.float32))
    labels = B.asarray(np.array([3, 3]))
    with no_grad():
        early, late = (host(model(x, t, y=labels)) for t in (10, 900))
        other_class = host(model(x, 10, y=B.asarray(np.array([5, 5]))))
    t_effect = np.abs(early - late).max() / np.abs(early).max()
    y_effect = np.abs(early - other_class).max() / np.abs(early).max()
    if group_channels == 4:  # the default: groups of 4 channels at 16 and 32 channels
        assert nn.norm_groups(16) == 4 and nn.norm_groups(32) == 8 and nn.norm_groups(128) == 32
        assert t_effect > 1e-2 and y_effect > 1e-2, (t_effect, y_effect)
    else:  # tinydiff's rule before: single channels, and neither t nor y reaches the output
        assert t_effect < 1e-4 and y_effect < 1e-4, (t_effect, y_effect)


def test_a_unet_checkpoint_from_before_group_channels_loads_as_it_was_trained(tmp_path):
    """Its header has no group_channels: it is built with the old one-channel groups, so its outputs are its own."""
    import json

    run = T.train(tiny_unet_config(channels=8, steps=2), tmp_path / "new", progress=False, log=lambda *_: None).run
    assert run.config.group_channels == 4
    header, arrays = T.read_checkpoint(tmp_path / "new")
    config = dict(header["config"])
    del config["group_channels"]
    header = dict(header, config=config)
    from tinydiff.train.checkpoint import write_npz_atomic

    write_npz_atomic(str(tmp_path / "old.npz"), header, arrays)
    old = T.load_run(tmp_path / "old.npz")
    assert old.config.group_channels == 1
    assert [m.num_groups for m in old.model.modules() if isinstance(m, nn.GroupNorm)][:1] == [8]  # 8 channels, 8 groups
    assert [m.num_groups for m in run.model.modules() if isinstance(m, nn.GroupNorm)][:1] == [2]  # 8 channels, 2 groups
    assert json.loads((tmp_path / "new" / "config.json").read_text())["group_channels"] == 4
