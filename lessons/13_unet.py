# %% [markdown]
# # Lesson 13: the U-Net
#
# Ho et al. did not use an MLP. Their denoiser for images (Sec. 4,
# Appendix B) is a U-Net on the PixelCNN++ backbone: convolutions at four
# resolutions for 32x32 images, Wide-ResNet blocks with group
# normalization, the timestep embedding added inside every block,
# self-attention at 16x16, and skip connections that hand every block's
# output on the way down to a block on the way up. This lesson builds it
# from its parts: a convolution (checked against a loop), group
# normalization and the residual block, the whole network level by level
# with every tensor's shape, the paper's 35.7 million parameters, and what
# attention at 16x16 looks at in one image.
#
# Run: `python lessons/13_unet.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import autograd as A
from tinydiff import backend as B
from tinydiff import data, nn, viz
from tinydiff.autograd import Tensor, no_grad

lesson = _lesson.Lesson("13_unet", "the U-Net: convolution, group norm, attention, the network level by level")
f64 = B.dtype("float64")

# %% [markdown]
# ## Step 1: one convolution, against a loop
#
# A convolution layer (in every deep learning library a cross-correlation)
# slides a $k \times k$ kernel over the zero-padded image:
# $\mathrm{out}[n, o, y, x] = b_o + \sum_{c, i, j} W[o, c, i, j]\, x_p[n, c, ys + i, xs + j]$.
# tinydiff computes it as the sum over the $k^2$ kernel taps of one matrix
# product each, $W[:, :, i, j]$ times the image shifted by $(i, j)$, where
# laying the padded rows end to end makes every shift a plain slice; here it
# is checked against the four nested loops of the definition.

# %%
lesson.step(
    "a convolution is a sum over kernel taps",
    paper="out[n,o,y,x] = b[o] + sum_{c,i,j} W[o,c,i,j] x_pad[n,c,y s+i,x s+j]   (PyTorch's conv2d)",
    code="tinydiff.autograd.conv2d(x, weight, bias, stride, padding): one matmul per kernel tap",
)
rng = np.random.default_rng(lesson.seed)
x = rng.normal(size=(2, 3, 6, 6))
weight, bias = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)


def by_loops(x, weight, bias, stride, padding):
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k = weight.shape[-1]
    size = (x.shape[-1] + 2 * padding - k) // stride + 1
    out = np.zeros((x.shape[0], weight.shape[0], size, size))
    for n in range(x.shape[0]):
        for o in range(weight.shape[0]):
            for y in range(size):
                for z in range(size):
                    patch = padded[n, :, y * stride:y * stride + k, z * stride:z * stride + k]
                    out[n, o, y, z] = bias[o] + np.sum(weight[o] * patch)
    return out


for stride in (1, 2):
    out = A.conv2d(B.asarray(x, dtype=f64), B.asarray(weight, dtype=f64), B.asarray(bias, dtype=f64),
                   stride=stride, padding=1)
    lesson.value(f"x {x.shape} -> out (stride {stride})", str(out.shape))
    lesson.check_close(f"conv2d at stride {stride}", out.numpy(), by_loops(x, weight, bias, stride, 1),
                       atol=1e-12, against="the loops")
lesson.say("""Stride 2 halves 6x6 to 3x3: that is how the U-Net goes down a resolution (Downsample).
The columns cost memory: every pixel is copied k^2 = 9 times, so tinydiff builds them a few images
at a time, while they sit in the processor's cache.""")

# %% [markdown]
# ## Step 2: group normalization and the residual block
#
# Group normalization (Wu and He 2018) normalises each image's channels in
# groups of $C/G$, over the group's channels and all positions, then
# scales and shifts each channel. The residual block of the paper's code:
# $h = \mathrm{conv}(\mathrm{SiLU}(\mathrm{GN}(x))) + \mathrm{Linear}(\mathrm{SiLU}(t_{emb}))$,
# then $\mathrm{conv}(\mathrm{dropout}(\mathrm{SiLU}(\mathrm{GN}(h))))$, added to $x$
# (through a 1x1 convolution when the channels change). The timestep enters
# every block. The second convolution starts at zero, so a fresh block is
# the identity: the network starts shallow and grows into its depth.
#
# One trap: the timestep's projection is a constant per channel, and a
# group of one channel is normalised over its positions alone, which
# subtracts any constant. The paper's 32 groups over 128 channels hold 4
# each; "32, or as many as divide the channels" at 16 channels would hold 1,
# and the block would never see t. tinydiff keeps at least 4 channels a
# group (``nn.norm_groups``), which at the paper's widths is its 32 groups.

# %%
lesson.step(
    "GroupNorm, and the residual block with the timestep inside",
    paper=["GN: y = (x - mean_g) / sqrt(var_g + eps) * gamma_c + beta_c, mean and var per image and group",
           "ResBlock: x + conv2(dropout(SiLU(GN(conv1(SiLU(GN(x))) + proj(SiLU(temb))))))   (Appendix B)"],
    code="tinydiff.autograd.group_norm; tinydiff.nn.GroupNorm, tinydiff.nn.ResBlock",
)
h = B.asarray(rng.normal(size=(2, 8, 5, 5)) * 3 + 2, dtype=f64)
normed = A.group_norm(h, 4).numpy().reshape(2, 4, -1)  # (N, G, C/G * H * W)
lesson.check_close("mean of every group after GroupNorm", normed.mean(-1), 0.0, atol=1e-12, against="0")
lesson.check_close("variance of every group", normed.var(-1), 1.0, rtol=1e-4, against="1")
block = nn.ResBlock(8, 8, temb_dim=16, rng=lesson.rng(1))
temb = Tensor(lesson.rng(2).normal((2, 16)))
x32 = lesson.rng(3).normal((2, 8, 5, 5))
lesson.check_close("a fresh ResBlock(x, temb)", block(x32, temb).numpy(), B.to_numpy(x32), atol=0.0,
                   against="x itself (its last convolution starts at zero)")
shift = Tensor(lesson.rng(4).normal((2, 8, 1, 1)))  # what the timestep adds: one number per image and channel
for groups, reaches in ((8, False), (nn.norm_groups(8), True)):
    moved = A.group_norm(h + shift, groups).numpy() - A.group_norm(h, groups).numpy()
    lesson.check((np.abs(moved).max() > 1e-3) == reaches,
                 f"a per-channel shift through GroupNorm with {8 // groups} channel(s) a group "
                 f"{'survives' if reaches else 'is subtracted away'}", f"largest change {np.abs(moved).max():.2e}")

# %% [markdown]
# ## Step 3: the U-Net, level by level
#
# The small U-Net tinydiff trains on 28x28 MNIST: 16, 32, 32 channels at
# 28, 14 and 7 pixels, one residual block per level, attention at 7x7. On
# the way down every output is pushed onto a stack of skips; on the way up
# each block pops one and concatenates it to its input as channels. The
# loop below is `UNet.forward` with a print at every tensor.

# %%
lesson.step(
    "every tensor's shape, down and up",
    paper="Appendix B: ResBlocks at each resolution, stride-2 convolutions down, nearest-neighbour up, skips",
    code="tinydiff.nn.UNet(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), image_size=28)",
)
model = nn.UNet(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), image_size=28,
                rng=lesson.rng(4))
for i, p in enumerate(model.parameters()):  # random weights everywhere, so every path shows in the output
    p.data = lesson.rng(100 + i).normal(tuple(p.shape)) * 0.2
x = lesson.rng(6).normal((2, 784))  # two flattened images, as tinydiff's data sets hold them
t = B.asarray(np.array([10, 500]))
rows = []
with no_grad():
    temb = model.timestep_features(t, None, 2)
    hs = [model.conv_in(A.reshape(Tensor(x), (2, 1, 28, 28)))]
    rows.append(["in", "conv_in", str(hs[-1].shape)])
    for level in model.down:
        for i, block in enumerate(level.block):
            h = block(hs[-1], temb)
            hs.append(level.attn[i](h) if level.attn else h)
            rows.append(["down", f"ResBlock{' + attention' if level.attn else ''}", str(hs[-1].shape)])
        if level.resample is not None:
            hs.append(level.resample(hs[-1]))
            rows.append(["down", "Downsample (stride-2 conv)", str(hs[-1].shape)])
    h = model.mid_block2(model.mid_attn(model.mid_block1(hs[-1], temb)), temb)
    rows.append(["middle", "ResBlock, attention, ResBlock", str(h.shape)])
    skips = len(hs)
    for level in model.up:
        for i, block in enumerate(level.block):
            skip = hs.pop()
            h = block(A.concatenate([h, skip], axis=1), temb)
            h = level.attn[i](h) if level.attn else h
            rows.append(["up", f"cat skip {skip.shape[1]} ch -> ResBlock{' + attn' if level.attn else ''}",
                         str(h.shape)])
        if level.resample is not None:
            h = level.resample(h)
            rows.append(["up", "Upsample (nearest 2x, conv)", str(h.shape)])
    out = model.conv_out(A.silu(model.norm_out(h)))
    rows.append(["out", "GroupNorm, SiLU, conv_out", str(out.shape)])
    whole = model(x, t)
lesson.table(["path", "layer", "shape (N, C, H, W)"], rows)
blocks_up = sum(len(level.block) for level in model.up)
lesson.check(skips == blocks_up and not hs, f"each of the {skips} skips pushed on the way down is popped by one of "
             f"the {blocks_up} blocks on the way up")
lesson.check_close("the walk above", A.reshape(out, (2, 784)).numpy(), whole.numpy(), atol=1e-6,
                   against="model(x, t)")
lesson.value("parameters of this U-Net", f"{model.num_parameters():,}")

# %% [markdown]
# ## Step 4: the paper's CIFAR-10 model, 35.7 million parameters
#
# Appendix B: "Our CIFAR10 model has 35.7 million parameters". That is
# `UNet.ddpm_cifar10()`: 128 channels, multipliers (1, 2, 2, 2) at 32, 16, 8
# and 4 pixels, two residual blocks per resolution, attention at 16x16,
# dropout 0.1. Counting its parts:

# %%
lesson.step(
    "the paper's parameter count",
    paper="Appendix B: 'Our CIFAR10 model has 35.7 million parameters'",
    code="tinydiff.nn.UNet.ddpm_cifar10(); UNet.parameter_count",
)
cifar = nn.UNet.ddpm_cifar10(rng=lesson.rng(7))


def count(modules):
    return sum(p.size for m in modules for p in m.parameters())


parts = [("timestep embedding (2 dense)", count(cifar.temb_dense)), ("conv_in", count([cifar.conv_in])),
         ("down: 4 levels", count(cifar.down)),
         ("middle: ResBlock, attention, ResBlock", count([cifar.mid_block1, cifar.mid_attn, cifar.mid_block2])),
         ("up: 4 levels", count(cifar.up)), ("norm_out, conv_out", count([cifar.norm_out, cifar.conv_out]))]
lesson.table(["part", "parameters"], [[name, f"{n:,}"] for name, n in parts])
total = sum(n for _, n in parts)
lesson.check(total == cifar.num_parameters() == nn.UNet.parameter_count(
    **{k: v for k, v in nn.UNet.PAPER_CIFAR10.items() if k != "dropout"}),
    "the parts add up to the model, and to the count made without building it", f"{total:,}")
lesson.check(round(total / 1e6, 1) == 35.7, "35.7 million parameters, as the paper states", f"{total / 1e6:.4f}M")

# %% [markdown]
# ## Step 5: what attention at 16x16 looks at
#
# Self-attention lets every position of the 16x16 feature map read every
# other: $\mathrm{softmax}(Q K^\top / \sqrt{C})\,V$, with queries, keys and
# values 1x1 convolutions of the group-normalised features, one row of
# weights per position summing to 1. Convolutions only see a 3x3
# neighbourhood per layer; attention sees the whole image at once. Below, a
# digit (upsampled to 32x32, in three channels) goes into the CIFAR-10 model
# down to its first attention block; each map shows where one query
# position (red) puts its weight. The weights are untrained, so the maps are
# nearly flat (the largest weight is about twice the uniform 1/256) and what
# they show is feature similarity: positions on the stroke look at the
# stroke. Training sharpens and repurposes them.

# %%
lesson.step(
    "self-attention at 16x16 on one image",
    paper="Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V   (Vaswani et al. 2017), at 16x16 (Appendix B)",
    code="tinydiff.nn.AttentionBlock (attention_map); tinydiff.autograd.scaled_dot_product_attention",
)
digit = data.load("digits").images()[lesson.pick(0, 7)]  # (8, 8) in [-1, 1]
image = np.repeat(np.repeat(digit, 4, axis=0), 4, axis=1)  # (32, 32)
x = B.asarray(np.broadcast_to(image, (1, 3, 32, 32)).copy())
with no_grad():
    temb = cifar.timestep_features(B.asarray(np.array([50])), None, 1)
    h = cifar.conv_in(Tensor(x))
    for block in cifar.down[0].block:
        h = block(h, temb)
    h = cifar.down[0].resample(h)  # (1, 128, 16, 16): the input of the first attention block
    h = cifar.down[1].block[0](h, temb)
    attention = cifar.down[1].attn[0]
    weights = B.to_numpy(attention.attention_map(h))[0]  # (256, 256): row p, where position p looks
    q, k, v = (B.to_numpy(z.data)[0].astype(np.float64) for z in attention.queries_keys_values(h))
scores = q @ k.T / math.sqrt(q.shape[1])
by_hand = np.exp(scores - scores.max(1, keepdims=True))
by_hand /= by_hand.sum(1, keepdims=True)
lesson.value("feature map into attention", f"{tuple(h.shape)}: 16 x 16 = 256 positions of {h.shape[1]} channels")
lesson.check_close("the 256 x 256 attention weights", weights, by_hand, atol=1e-5, against="softmax(Q K^T / sqrt(C))")
lesson.check_close("every row of weights sums to", weights.sum(1), 1.0, atol=1e-5, against="1")
small = image.reshape(16, 2, 16, 2).mean(axis=(1, 3))  # the digit at 16x16, where attention works
queries = [(8, 8), (3, 8), (12, 4)]
panels = [np.broadcast_to(small, (3, 16, 16)).copy()]
for y, z in queries:
    w = weights[y * 16 + z].reshape(16, 16)
    panel = np.broadcast_to(2 * w / w.max() - 1, (3, 16, 16)).copy()  # brightest: the most weight
    panel[:, y, z] = (1.0, -1.0, -1.0)  # the query position in red
    panels.append(panel)
lesson.value("largest weight of each query", ", ".join(f"{weights[y * 16 + z].max():.3f}" for y, z in queries),
             note=f"(uniform would be {1 / 256:.4f})")
lesson.saved(viz.image_grid(np.stack(panels), lesson.path("attention_16x16.png"), nrow=4,
                            title="16x16: the digit; where 3 positions (red) look"))

lesson.done()
