"""Sampling with conditions: classifier-free guidance (Ho and Salimans 2022) and RePaint inpainting (Lugmayr et al. 2022)."""

from __future__ import annotations

import numbers

from .. import backend as B
from ..autograd import no_grad
from ..backend import xp
from ..checks import check_choice, check_int
from ..diffusion import VARIANCES
from .loop import base_seed, check_finite, model_output, predict


def classifier_free_guidance(model, guidance):
    """Ho and Salimans 2022, Eq. 6: a model whose output is (1 + w) out(x, c) - w out(x, null).

    ``model(x_t, t, y=labels)`` is a class-conditional denoiser and
    ``model(x_t, t)`` (no label) its unconditional output, the learned null
    class. The returned callable takes the same arguments and can be passed
    to ``ddpm`` or ``ddim`` with ``model_kwargs={"y": labels}``. w = 0 is the
    plain conditional model. The same mix works for eps, x0 and v outputs:
    each is affine in the other with the same x_t term, so mixing outputs
    mixes the predicted noise the same way.
    """
    if isinstance(guidance, bool) or not isinstance(guidance, numbers.Real) or not guidance >= 0:
        raise ValueError(f"guidance must be a number w >= 0 (0: no guidance), got {guidance!r}")
    w = float(guidance)

    def guided(x, t, y=None, **kwargs):
        conditional = model_output(model(x, t, y=y, **kwargs))
        if w == 0.0 or y is None:
            return conditional
        unconditional = model_output(model(x, t, **kwargs))
        return (1.0 + w) * conditional - w * unconditional

    guided.accepts_scalar_t = getattr(model, "accepts_scalar_t", False)  # t goes to the model unchanged
    guided.data_dim = getattr(model, "data_dim", None)
    return guided


def repaint_schedule(T, jump_length=10, resamplings=1):
    """The order in which RePaint visits the noise levels (Lugmayr et al. 2022, Sec. 4.2).

    Returns a list of levels from T down to 0, where level k is the paper's
    x_k (x_T is noise, x_0 the image). It walks down one level at a time;
    at every ``jump_length``-th level it jumps back up ``jump_length``
    levels and walks down again, ``resamplings - 1`` times, so the known and
    generated regions have time to agree ("harmonize"). resamplings = 1 is
    plain replacement at every step.
    """
    for name, value in (("T", T), ("jump_length", jump_length), ("resamplings", resamplings)):
        check_int(name, value, minimum=1)
    jumps_left = {k: resamplings - 1 for k in range(0, T - jump_length, jump_length)}
    level, levels = T, [T]
    while level > 0:
        level -= 1
        levels.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            for _ in range(jump_length):
                level += 1
                levels.append(level)
    return levels


def _mask_like(mask, known):
    """The mask as an array of known's shape and dtype (ValueError if it does not broadcast)."""
    mask = xp.astype(B.asarray(mask), known.dtype)
    try:
        return xp.broadcast_to(mask, tuple(known.shape))
    except ValueError:
        raise ValueError(
            f"mask must have the shape of known {tuple(known.shape)} or broadcast to it, got {tuple(mask.shape)}"
        ) from None


def inpaint(
    model,
    diffusion,
    known,
    mask,
    rng,
    *,
    jump_length=10,
    resamplings=1,
    variance="beta",
    clip_x0=False,
    progress=False,
    batch_size=None,
    model_kwargs=None,
):
    """RePaint inpainting (Lugmayr et al. 2022) with any unconditional model.

    known  (N, ...) the data x_0 whose masked part is known (values elsewhere ignored)
    mask   1 where x_0 is known, 0 where it is to be generated (same shape, or broadcastable)

    Each reverse step from level k to k-1 combines (RePaint Eq. 8):
      known region:   x_{k-1} ~ q(x_{k-1} | x_0) from the known data (Eq. 4;
                      at the last step x_0 itself, so known values return exactly);
      unknown region: x_{k-1} ~ p_theta(x_{k-1} | x_k), the ancestral step of Algorithm 2.
    When the schedule (``repaint_schedule``) jumps up a level, x_{k+1} is drawn
    from q(x_{k+1} | x_k) (Eq. 2), "resampling" so the two regions harmonize.
    Returns the completed x_0 (an array like ``known``).
    """
    check_choice("variance", variance, VARIANCES)
    known = B.asarray(known)
    mask = _mask_like(mask, known)
    levels = repaint_schedule(diffusion.T, jump_length, resamplings)
    shape = tuple(known.shape)
    base = base_seed(rng)

    def noise(*key):  # keyed by the position in the schedule: sample i depends on seed and i only
        return B.default_rng((base, *key)).normal(shape, dtype=known.dtype)

    pairs = list(zip(levels[:-1], levels[1:]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="repaint")
    x = noise(0, diffusion.T)  # x_T ~ N(0, I)
    with no_grad():
        for i, (level, next_level) in enumerate(pairs):
            if next_level > level:  # jump up: x_{k+1} ~ q(x_{k+1} | x_k), Eq. 2 (code step t = k)
                x = diffusion.q_step(x, level, noise(1, i))
                continue
            t = level - 1  # code step of the transition x_level -> x_{level-1}
            output = predict(model, x, t, batch_size, model_kwargs)
            p = diffusion.p_mean_variance(output, x, t, variance=variance, clip_x0=clip_x0)
            unknown = p.mean + xp.sqrt(p.variance) * noise(2, i) if t > 0 else p.mean
            if t > 0:  # the known region at level t (code step t - 1), Eq. 4
                known_noisy = diffusion.q_sample(known, t - 1, noise(3, i))
            else:
                known_noisy = known
            x = mask * known_noisy + (1.0 - mask) * unknown
    return check_finite(x, "inpaint")
