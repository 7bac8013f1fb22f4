"""Building blocks and optimizers: initialisation, state dicts, denoisers
end to end through gradcheck, and optimizer updates against an independent
float64 transcription of PyTorch's equations."""

import math

import numpy as np
import pytest

from tinydiff import autograd as A
from tinydiff import backend as B
from tinydiff import nn, optim, train
from tinydiff.autograd import Tensor
from tinydiff.gradcheck import gradcheck
from conftest import host, as_f64


# -- layers -----------------------------------------------------------------


def test_linear_matches_its_formula_and_pytorch_init(backend):
    layer = nn.Linear(50, 7, rng=B.default_rng(1))
    w, b = host(layer.weight.data), host(layer.bias.data)
    assert w.shape == (7, 50) and b.shape == (7,)
    bound = 1 / math.sqrt(50)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound  # uniform on [-bound, bound]
    x = np.random.default_rng(0).normal(size=(4, 50)).astype(np.float32)
    out = layer(B.asarray(x))
    assert np.allclose(host(out.data), x @ w.T + b, atol=1e-5)
    assert out.dtype == B.dtype("float32")


def test_layer_norm_normalises_rows(backend):
    ln = nn.LayerNorm(6)
    x = B.asarray(np.random.default_rng(0).normal(3.0, 2.0, size=(5, 6)))
    y = host(ln(x).data)
    assert np.allclose(y.mean(axis=1), 0, atol=1e-5) and np.allclose(y.std(axis=1), 1, atol=1e-3)


def test_timestep_embedding_is_the_transformer_sinusoid(backend):
    t = B.asarray(np.array([0, 1, 10, 999]), dtype=B.dtype("int64"))
    emb = host(nn.timestep_embedding(t, 8))
    freqs = 10000.0 ** (-np.arange(4) / 4)
    angles = np.array([0, 1, 10, 999])[:, None] * freqs
    assert np.allclose(emb, np.concatenate([np.sin(angles), np.cos(angles)], axis=1), atol=1e-4)
    with pytest.raises(ValueError, match="even"):
        nn.timestep_embedding(t, 7)


def test_parameters_are_found_in_lists_and_children():
    model = nn.MLPDenoiser(data_dim=2, width=16, depth=3, emb_dim=8)
    names = [name for name, _ in model.named_parameters()]
    assert names == ["hidden.0.weight", "hidden.0.bias", "hidden.1.weight", "hidden.1.bias",
                     "hidden.2.weight", "hidden.2.bias", "out.weight", "out.bias"]
    assert model.num_parameters() == (10 * 16 + 16) + 2 * (16 * 16 + 16) + (16 * 2 + 2)


def test_state_dict_round_trip_and_refusals():
    a = nn.MLPDenoiser(width=16, depth=2, emb_dim=8, rng=B.default_rng(1))
    b = nn.MLPDenoiser(width=16, depth=2, emb_dim=8, rng=B.default_rng(2))
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert np.array_equal(pa.data, pb.data)
    state = dict(a.state_dict())
    state.pop("out.bias")
    state["extra.weight"] = np.zeros(3)
    state["out.weight"] = np.zeros((5, 5))
    with pytest.raises(ValueError) as error:
        b.load_state_dict(state)
    message = str(error.value)
    assert "missing: out.bias" in message and "unexpected: extra.weight" in message
    assert "out.weight (expected (2, 16), got (5, 5))" in message


def _bind(model, tensors):
    """Swap a model's parameters for given tensors (so gradcheck can vary them)."""
    for (name, _), tensor in zip(list(model.named_parameters()), tensors):
        owner = model
        *path, attr = name.split(".")
        for part in path:
            owner = owner[int(part)] if isinstance(owner, list) else getattr(owner, part)
        setattr(owner, attr, tensor)


@pytest.mark.parametrize("kind", ["mlp", "resmlp", "mlp-conditional", "mlp-one-t", "resmlp-one-t", "mlp-extra-one-t"])
def test_denoiser_plus_mse_passes_gradcheck_end_to_end(kind, backend):
    rng = B.default_rng(0)
    extra = None
    if kind in ("mlp", "mlp-one-t"):
        model = nn.MLPDenoiser(data_dim=2, width=4, depth=2, emb_dim=4, rng=rng)
    elif kind.startswith("resmlp"):
        model = nn.ResMLPDenoiser(data_dim=3, width=4, blocks=1, emb_dim=4, cond_dim=4, rng=rng)
    elif kind == "mlp-extra-one-t":
        model = nn.MLPDenoiser(data_dim=2, width=4, depth=1, emb_dim=4, extra_dim=2, rng=rng)
        extra = Tensor(as_f64(np.random.default_rng(3).normal(size=(3, 2))))
    else:
        model = nn.MLPDenoiser(data_dim=2, width=4, depth=1, emb_dim=4, num_classes=3, rng=rng)
    params = [as_f64(host(p.data)) for p in model.parameters()]
    d = model.data_dim
    x = as_f64(np.random.default_rng(1).normal(size=(3, d)))
    target = as_f64(np.random.default_rng(2).normal(size=(3, d)))
    # "one-t": one int for the whole batch, the samplers' call (the split first layer)
    t = 17 if kind.endswith("one-t") else B.asarray(np.array([0, 5, 99]), dtype=B.dtype("int64"))
    y = B.asarray(np.array([0, 2, 3]), dtype=B.dtype("int64"))  # 3 is the null class

    def loss(x_in, *weights):
        _bind(model, weights)
        if kind == "mlp-conditional":
            out = model(x_in, t, y)
        elif extra is not None:
            out = model(x_in, t, extra=extra)
        else:
            out = model(x_in, t)
        return A.mse(out, target)

    assert gradcheck(loss, [Tensor(x)] + [Tensor(p) for p in params])


def test_denoisers_keep_float32(backend):
    for model in (nn.MLPDenoiser(), nn.ResMLPDenoiser(data_dim=20, width=32, blocks=2)):
        x = B.default_rng(0).normal((5, model.data_dim))
        t = B.default_rng(0).integers(0, 1000, (5,))
        out = model(x, t)
        assert out.shape == (5, model.data_dim) and out.dtype == B.dtype("float32")
        A.mse(out, x).backward()
        assert all(p.grad.dtype == B.dtype("float32") for p in model.parameters())


def test_drop_labels_rate():
    y = B.asarray(np.zeros(20000, dtype=np.int64))
    dropped = host(train.drop_labels(y, 10, 0.1, B.default_rng(0)))
    assert set(np.unique(dropped)) == {0, 10}
    assert abs((dropped == 10).mean() - 0.1) < 4 * math.sqrt(0.09 / 20000)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="activation must be one of"):
        nn.MLPDenoiser(activation_name="swishy")
    with pytest.raises(ValueError, match="depth"):
        nn.MLPDenoiser(depth=0)
    with pytest.raises(ValueError, match="lr"):
        optim.Adam(nn.Linear(2, 2).parameters(), lr=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([], lr=1e-3)


# -- optimizers against an independent float64 transcription of PyTorch --------


def reference_run(kind, p0, grads, lr, **h):
    """PyTorch's update equations, element by element in float64."""
    p = p0.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    buf = None
    b1, b2 = h.get("betas", (0.9, 0.999))
    eps, wd = h.get("eps", 1e-8), h.get("weight_decay", 0.0)
    for k, g in enumerate(grads, start=1):
        g = g.astype(np.float64).copy()
        if kind == "sgd":
            g = g + wd * p
            mom = h.get("momentum", 0.0)
            if mom:
                buf = g.copy() if buf is None else mom * buf + g
                g = g + mom * buf if h.get("nesterov") else buf
            p = p - lr * g
            continue
        if kind == "adamw":
            p = p * (1 - lr * wd)
        elif wd:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**k)
        v_hat = v / (1 - b2**k)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("sgd", {"lr": 0.1}),
        ("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
        ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("adam", {"lr": 0.01}),
        ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-3, "weight_decay": 0.1}),
        ("adamw", {"lr": 0.01, "weight_decay": 0.1}),
    ],
)
@pytest.mark.parametrize("storage", ["list", "vector", "vector-slices"])
def test_optimizer_matches_pytorch_equations(kind, kwargs, storage, backend):
    rng = np.random.default_rng(0)
    shapes = [(3, 2), (2,), ()]
    initial = [rng.normal(size=s) for s in shapes]
    grads = [[rng.normal(size=s) for s in shapes] for _ in range(5)]
    params = [nn.Parameter(as_f64(v.copy())) for v in initial]  # (optimizers update in place)
    # per parameter, one flat vector, or a vector updated in slices of 4 (cache-sized slices in miniature)
    where = params if storage == "list" else optim.ParameterVector(params, chunk=4 if storage == "vector-slices" else None)
    opt = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}[kind](where, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = as_f64(g)
        opt.step()
    for i, p in enumerate(params):
        expected = reference_run(kind, initial[i], [g[i] for g in grads], **kwargs)
        assert np.allclose(host(p.data), expected, rtol=1e-12, atol=1e-12)


def test_optimizer_state_dict_resumes_exactly():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(6)]

    def run(split):
        p = nn.Parameter(start.copy())
        opt = optim.Adam([p], lr=0.05)
        for g in grads[:split]:
            p.grad = g
            opt.step()
        if split < len(grads):
            state = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in opt.state_dict().items()}
            p2 = nn.Parameter(p.data.copy())
            opt = optim.Adam([p2], lr=0.05).load_state_dict(state)
            p = p2
            for g in grads[split:]:
                p.grad = g
                opt.step()
        return p.data

    assert np.array_equal(run(6), run(3))


def test_clip_grad_norm(backend):
    params = [nn.Parameter(as_f64(np.zeros(2))), nn.Parameter(as_f64(np.zeros((1,))))]
    params[0].grad, params[1].grad = as_f64([3.0, 0.0]), as_f64([4.0])
    norm = optim.clip_grad_norm(params, 1.0)
    assert np.isclose(float(host(norm)), 5.0)
    total = math.sqrt(sum(float((host(p.grad) ** 2).sum()) for p in params))
    assert np.isclose(total, 1.0, rtol=1e-5)
    params[0].grad, params[1].grad = as_f64([0.3, 0.0]), as_f64([0.4])
    optim.clip_grad_norm(params, 1.0)
    assert np.allclose(host(params[0].grad), [0.3, 0.0])  # under the limit: untouched


def test_warmup_cosine():
    lr = [optim.warmup_cosine(s, 1.0, warmup_steps=10, total_steps=110, min_lr=0.1) for s in range(120)]
    assert np.isclose(lr[0], 0.1) and np.isclose(lr[9], 1.0)
    assert np.isclose(lr[10], 1.0) and np.isclose(lr[60], 0.1 + 0.9 * 0.5)
    assert np.isclose(lr[110], 0.1) and np.isclose(lr[119], 0.1)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))


def test_ema_follows_its_recursion_and_swaps(backend):
    p = nn.Parameter(as_f64([0.0, 0.0]))
    ema = optim.EMA([p], decay=0.9, warmup=True)
    shadow = np.array([0.0, 0.0])
    for k in range(20):
        p.data[...] = as_f64([k + 1.0, -(k + 1.0)])
        ema.update()
        d = min(0.9, (1 + k) / (10 + k))
        shadow = d * shadow + (1 - d) * np.array([k + 1.0, -(k + 1.0)])
    assert np.allclose(host(ema.state_dict()["shadow"]), shadow)
    with ema.average_parameters():
        assert np.allclose(host(p.data), shadow)
    assert np.allclose(host(p.data), [20.0, -20.0])


def test_mlp_with_adam_fits_a_nonlinear_function():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(512, 2)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) * np.cos(1.5 * x[:, 1:])).astype(np.float32)
    model = nn.Sequential(nn.Linear(2, 64, rng=B.default_rng(0)), A.gelu,
                          nn.Linear(64, 64, rng=B.default_rng(1)), A.gelu,
                          nn.Linear(64, 1, rng=B.default_rng(2)))
    opt = optim.Adam(model.parameters(), lr=3e-3)
    initial = A.mse(model(x), y).item()
    for _ in range(1500):
        idx = rng.integers(0, 512, size=128)
        loss = A.mse(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = A.mse(model(x), y).item()
    assert final < 0.01 * initial and final < 2e-3, (initial, final)


def test_cross_entropy_matches_its_definition_and_gradcheck(backend):
    logits = np.random.default_rng(0).normal(size=(5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    expected = -np.mean([logits[i, labels[i]] - np.log(np.exp(logits[i]).sum()) for i in range(5)])
    y = B.asarray(labels, dtype=B.dtype("int64"))
    assert np.isclose(nn.cross_entropy(Tensor(as_f64(logits)), y).item(), expected)
    assert gradcheck(lambda z: nn.cross_entropy(z, y), [Tensor(as_f64(logits))])


def test_plain_mlp_shapes():
    model = nn.MLP(6, [8, 8], 3)
    assert model(B.asarray(np.ones((2, 6), dtype=np.float32))).shape == (2, 3)
    assert len(model.parameters()) == 6


def test_parameter_vector_gives_the_per_parameter_updates_and_average(backend):
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(3, 2)), rng.normal(size=(4,))]
    grads = [rng.normal(size=(3, 2)) * 5, rng.normal(size=(4,)) * 5]
    a = [nn.Parameter(as_f64(v)) for v in values]
    b = [nn.Parameter(as_f64(v)) for v in values]
    vector = optim.ParameterVector(b, chunk=3)
    opt_a, opt_b = optim.Adam(a, lr=0.1), optim.Adam(vector, lr=0.1)
    ema_a, ema_b = optim.EMA(a, decay=0.9), optim.EMA(vector, decay=0.9)
    for _ in range(3):
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = as_f64(g), as_f64(g)
        norm_a = optim.clip_grad_norm(a, 1.0)
        norm_b = optim.clip_grad_norm(vector, 1.0)
        assert np.isclose(float(host(norm_a)), float(host(norm_b)))
        opt_a.step()
        opt_b.step()
        ema_a.update()
        ema_b.update()
    for p, q in zip(a, b):
        assert np.allclose(host(p.data), host(q.data), rtol=1e-12, atol=1e-12)
    assert np.allclose(host(ema_a.state_dict()["shadow"]), host(ema_b.state_dict()["shadow"]), rtol=1e-12, atol=1e-12)
    # The state dicts are the same flat arrays, so a checkpoint loads into either storage.
    opt_c = optim.Adam([nn.Parameter(as_f64(v)) for v in values], lr=0.1).load_state_dict(opt_b.state_dict())
    assert np.allclose(host(opt_c.state_dict()["exp_avg"]), host(opt_b.state_dict()["exp_avg"]))


def test_parameter_vector_refuses_a_rehomed_parameter():
    params = [nn.Parameter(np.zeros((2, 2), dtype=np.float32))]
    vector = optim.ParameterVector(params)
    optim.ParameterVector(params)  # a second vector takes the parameter over
    with pytest.raises(RuntimeError, match="no longer lives in this vector"):
        vector.gather_grads()


def test_timestep_table_matches_the_sinusoids(backend):
    embed = nn.TimestepEmbedding(16, num_timesteps=50)
    t = B.asarray(np.array([0, 7, 49, 7]), dtype=B.dtype("int64"))
    assert np.allclose(host(embed(t)), host(nn.timestep_embedding(t, 16)), atol=1e-6)
    assert host(embed(t)).shape == (4, 16)


def test_timestep_table_falls_back_outside_its_range():
    embed = nn.TimestepEmbedding(8, num_timesteps=10)
    t = np.array([3, 25], dtype=np.int64)
    assert np.allclose(embed(t), nn.timestep_embedding(t, 8), atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "mlp-extra", "mlp-classes", "resmlp-classes"])
def test_one_int_t_gives_the_same_output_and_gradients_as_a_full_t_array(kind, backend):
    """A sampler's call model(x, t) with one int t: the conditioning is computed for one
    row and broadcast (in MLPDenoiser the first layer's product splits by columns).
    It must agree with the plain call on t = full((N,), t), output and every gradient."""
    rng = B.default_rng(4)
    n, kwargs = 6, {}
    if kind == "mlp":
        model = nn.MLPDenoiser(data_dim=2, width=16, depth=2, emb_dim=8, rng=rng)
    elif kind == "mlp-extra":
        model = nn.MLPDenoiser(data_dim=2, width=16, depth=2, emb_dim=8, extra_dim=3, rng=rng)
        kwargs["extra"] = B.default_rng(5).normal((n, 3))
    elif kind == "mlp-classes":
        model = nn.MLPDenoiser(data_dim=2, width=16, depth=2, emb_dim=8, num_classes=4, rng=rng)
    else:
        model = nn.ResMLPDenoiser(data_dim=5, width=16, blocks=2, emb_dim=8, cond_dim=8, num_classes=4, rng=rng)
    x = B.default_rng(6).normal((n, model.data_dim))
    target = B.default_rng(7).normal((n, model.data_dim))
    labels = [None] if "classes" not in kind else [None, B.asarray(np.array([0, 1, 2, 3, 4, 1]), dtype=B.dtype("int64"))]
    for y in labels:
        extra_kwargs = dict(kwargs, y=y) if "classes" in kind else kwargs
        results = []
        for t in (321, B.asarray(np.full(n, 321), dtype=B.dtype("int64"))):
            model.zero_grad()
            out = model(x, t, **extra_kwargs)
            A.mse(out, target).backward()
            results.append((host(out.data), {name: host(p.grad) for name, p in model.named_parameters()
                                             if p.grad is not None}))
        (out_one, grads_one), (out_full, grads_full) = results
        assert out_one.shape == (n, model.data_dim)
        np.testing.assert_allclose(out_one, out_full, rtol=1e-5, atol=1e-6)
        assert grads_one.keys() == grads_full.keys()
        for name in grads_full:
            np.testing.assert_allclose(grads_one[name], grads_full[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_t_of_the_wrong_shape_is_refused_by_name():
    model = nn.MLPDenoiser(data_dim=2, width=8, depth=1, emb_dim=4)
    x = B.default_rng(0).normal((3, 2))
    with pytest.raises(ValueError, match="t must be an int or an integer array of shape"):
        model(x, B.asarray(np.zeros((3, 1), dtype=np.int64)))
    with pytest.raises(ValueError, match="t must be an int"):
        model(x, "5")
    with pytest.raises(ValueError, match="t has 2 steps for 3 rows of x"):
        model(x, B.asarray(np.array([1, 2], dtype=np.int64)))
    with pytest.raises(ValueError, match="t has 2 steps for 3 rows of x"):
        nn.ResMLPDenoiser(data_dim=2, width=8, blocks=1, emb_dim=4, cond_dim=4)(x, B.asarray(np.array([1, 2])))


def test_activations_of_integer_input_are_floats(backend):
    x = B.asarray(np.array([-2, 0, 3], dtype=np.int64))
    for act in (A.gelu, A.silu):
        out = act(Tensor(x))
        assert out.dtype == B.default_dtype()
        expected = A.gelu(Tensor(B.asarray(np.array([-2.0, 0.0, 3.0])))) if act is A.gelu else \
            A.silu(Tensor(B.asarray(np.array([-2.0, 0.0, 3.0]))))
        np.testing.assert_allclose(host(out.data), host(expected.data), rtol=1e-6)
