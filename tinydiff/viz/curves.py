"""Curves against t or training step: noise schedules, the loss, the bound, a histogram.

Schedule and bound plots put the paper's t = 1..T on the x axis: entry i of a
length-T array is paper step t = i + 1.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import MaxNLocator

from .common import POINT_COLOR, as_host, as_vector, finish, new_figure

# ---------------------------------------------------------------- smoothing


def smooth(values, weight=0.98):
    """Exponential moving average with bias correction.

    m_i = weight * m_{i-1} + (1 - weight) * v_i with m_{-1} = 0, and the
    output is m_i / (1 - weight^(i+1)): the same correction Adam applies to
    its moments, so the first points are not pulled towards zero.
    ``weight`` = 0 returns the values unchanged.
    """
    values = as_vector(values, "values")
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"weight must be in [0, 1), got {weight}")
    out = np.empty_like(values)
    mean = 0.0
    for i, value in enumerate(values):
        mean = weight * mean + (1.0 - weight) * value
        out[i] = mean / (1.0 - weight ** (i + 1))
    return out


_ema = smooth  # plot_loss's argument ``smooth`` shadows the function inside it


def _window_mean(values, window):
    """Trailing moving average; the first points average what exists so far."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


# ---------------------------------------------------------------- schedules


def plot_schedules(schedules, path):
    """Compare noise schedules: beta_t, alpha_bar_t and log SNR(t) against t.

    ``schedules`` maps a name to a dict of length-T host arrays "betas" and
    "alpha_bars", and optionally "snr" (else SNR = alpha_bar / (1 - alpha_bar),
    Kingma et al. 2021). beta_t is on a log axis so a linear schedule and a
    cosine one (Nichol and Dhariwal 2021, Eq. 17) are both visible.
    """
    if not isinstance(schedules, dict) or not schedules:
        raise ValueError("schedules must be a non-empty dict name -> {'betas', 'alpha_bars', 'snr'}")
    fig = new_figure(11, 3.4)
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    for name, schedule in schedules.items():
        betas, alpha_bars, snr = _schedule_arrays(name, schedule)
        t = np.arange(1, len(betas) + 1)  # paper t = 1..T
        with np.errstate(divide="ignore"):
            log_snr = np.where(snr > 0, np.log(np.maximum(snr, 1e-300)), np.nan)
        axes[0].plot(t, betas, label=str(name))
        axes[1].plot(t, alpha_bars, label=str(name))
        axes[2].plot(t, log_snr, label=str(name))
    axes[0].set_yscale("log")
    titles = [r"$\beta_t$ (log scale)", r"$\bar\alpha_t$", r"$\log\,\mathrm{SNR}(t)$"]
    ylabels = [r"$\beta_t$", r"$\bar\alpha_t$", r"$\log\,\bar\alpha_t / (1 - \bar\alpha_t)$"]
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set_title(title)
        ax.set_xlabel("t")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="small")
    return finish(fig, path)


def _schedule_arrays(name, schedule):
    """(betas, alpha_bars, snr) of one entry of ``plot_schedules``'s dict, checked."""
    if not isinstance(schedule, dict) or "betas" not in schedule or "alpha_bars" not in schedule:
        raise ValueError(f"schedules[{name!r}] must be a dict with arrays 'betas' and 'alpha_bars'")
    betas = as_vector(schedule["betas"], f"schedules[{name!r}]['betas']")
    alpha_bars = as_vector(schedule["alpha_bars"], f"schedules[{name!r}]['alpha_bars']")
    if "snr" in schedule:
        snr = as_vector(schedule["snr"], f"schedules[{name!r}]['snr']")
    else:
        snr = alpha_bars / np.maximum(1.0 - alpha_bars, 1e-300)
    if not len(betas) == len(alpha_bars) == len(snr):
        raise ValueError(
            f"schedules[{name!r}]: 'betas', 'alpha_bars' and 'snr' must have the same length T, "
            f"got {len(betas)}, {len(alpha_bars)}, {len(snr)}"
        )
    return betas, alpha_bars, snr


# ---------------------------------------------------------------- losses


def plot_loss(steps, losses, path, smooth=0.98, log_y=True, title=None):
    """The training loss: raw values faint, smoothed curve on top.

    ``smooth`` is either an EMA weight in [0, 1) (bias corrected, see
    ``smooth()``) or an int window >= 1 for a trailing moving average. The y
    axis is logarithmic when ``log_y`` and every loss is positive.
    """
    steps = as_vector(steps, "steps")
    losses = as_vector(losses, "losses")
    if steps.shape != losses.shape:
        raise ValueError(f"steps and losses must have the same shape (N,), got {steps.shape} and "
                         f"{losses.shape}")
    if isinstance(smooth, (int, np.integer)) and not isinstance(smooth, bool):
        if smooth < 1:
            raise ValueError(f"smooth as a window must be >= 1, got {smooth}")
        smoothed, how = _window_mean(losses, int(smooth)), f"moving average of {int(smooth)}"
    else:
        smoothed, how = _ema(losses, float(smooth)), f"EMA {float(smooth):g}"
    fig = new_figure(6.0, 3.6)
    ax = fig.add_subplot()
    ax.plot(steps, losses, color=POINT_COLOR, alpha=0.25, linewidth=0.8, label="loss")
    ax.plot(steps, smoothed, color=POINT_COLOR, linewidth=1.8, label=f"smoothed ({how})")
    if log_y and np.all(losses[np.isfinite(losses)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "Training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return finish(fig, path)


def plot_loss_by_t(t_values, losses, path, T, buckets=10):
    """Mean loss per timestep bucket, with standard-error bars.

    ``t_values`` (N,) are the code's 0-indexed timesteps in [0, T) that the
    per-example ``losses`` (N,) were computed at. Shows which t the model
    finds hard (for eps-prediction, the small t of Sec. 3.4).
    """
    t_values = as_vector(t_values, "t_values")
    losses = as_vector(losses, "losses")
    if t_values.shape != losses.shape:
        raise ValueError(f"t_values and losses must have the same shape (N,), got {t_values.shape} "
                         f"and {losses.shape}")
    T, buckets = int(T), int(buckets)
    if T < 1 or not 1 <= buckets <= T:
        raise ValueError(f"T must be >= 1 and buckets in [1, T], got T={T}, buckets={buckets}")
    if t_values.min() < 0 or t_values.max() >= T:
        raise ValueError(f"t_values must lie in [0, T) = [0, {T}), got range "
                         f"[{t_values.min():g}, {t_values.max():g}]")
    edges = np.linspace(0, T, buckets + 1).round().astype(int)
    which = np.searchsorted(edges, t_values, side="right") - 1  # bucket k holds edges[k] <= t < edges[k+1]
    means = np.full(buckets, np.nan)
    errors = np.zeros(buckets)
    for k in range(buckets):
        chosen = losses[which == k]
        if len(chosen):
            means[k] = chosen.mean()
            errors[k] = chosen.std(ddof=1) / math.sqrt(len(chosen)) if len(chosen) > 1 else 0.0
    fig = new_figure(max(5.0, 0.45 * buckets + 1.5), 3.6)
    ax = fig.add_subplot()
    ax.bar(np.arange(buckets), means, yerr=errors, color=POINT_COLOR, capsize=2)
    ax.set_xticks(np.arange(buckets), [f"{edges[k]}-{edges[k + 1] - 1}" for k in range(buckets)],
                  rotation=45 if buckets > 6 else 0, fontsize="small")
    if np.all(means[np.isfinite(means)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("t bucket")
    ax.set_ylabel("mean loss")
    ax.set_title("Loss by timestep")
    ax.grid(alpha=0.3, axis="y", which="both")
    return finish(fig, path)


def plot_vlb_terms(terms_per_t, path, prior=None):
    """The variational bound (Eq. 5) split by t, in nats.

    Entry i of ``terms_per_t`` (T,) is L_i: i = 0 the decoder term L_0, then
    the KL terms L_1..L_{T-1}, plotted at paper step t = i + 1. ``prior`` is
    L_T, which has no step of its own and goes into the title and total.
    """
    terms = as_vector(terms_per_t, "terms_per_t")
    t = np.arange(1, len(terms) + 1)
    fig = new_figure(6.0, 3.6)
    ax = fig.add_subplot()
    kl = r"$L_{t-1}$ (KL, Eq. 5)"
    if len(terms) <= 50:
        ax.bar(t[1:], terms[1:], color=POINT_COLOR, label=kl)
        ax.bar(t[:1], terms[:1], color="tab:orange", label="$L_0$ (decoder)")
    else:
        ax.plot(t[1:], terms[1:], color=POINT_COLOR, linewidth=1.2, label=kl)
        ax.plot(t[:1], terms[:1], "o", color="tab:orange", label="$L_0$ (decoder)")
    if np.all(terms[np.isfinite(terms)] > 0):
        ax.set_yscale("log")
    total = float(np.sum(terms)) + (float(prior) if prior is not None else 0.0)
    parts = f"$L_T$ = {float(prior):.3g}, " if prior is not None else ""
    ax.set_title(f"Variational bound by t: {parts}total = {total:.4g} nats", fontsize="medium")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("t")
    ax.set_ylabel("nats")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return finish(fig, path)


def plot_histogram_1d(samples, path, density_fn=None, bins=60, title=None):
    """A histogram of 1-D samples (N,) or (N, 1), with an optional density curve.

    ``density_fn(x)`` takes a host float64 array (M,) and returns the density
    (M,), e.g. the true data density to compare the samples against.
    """
    samples = as_host(samples, "samples")
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim != 1 or samples.shape[0] == 0:
        raise ValueError(f"samples must have shape (N,) or (N, 1) with N >= 1, got {samples.shape}")
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        raise ValueError("samples has no finite values")
    fig = new_figure(5.5, 3.6)
    ax = fig.add_subplot()
    ax.hist(finite, bins=int(bins), density=True, color=POINT_COLOR, alpha=0.6, label="samples")
    if density_fn is not None:
        low, high = finite.min(), finite.max()
        margin = 0.1 * (high - low) + 1e-6
        x = np.linspace(low - margin, high + margin, 400)
        y = as_host(density_fn(x), "density_fn output")
        if y.shape != x.shape:
            raise ValueError(f"density_fn must return shape {x.shape} for x {x.shape}, got {y.shape}")
        ax.plot(x, y, color="black", linewidth=1.5, label="density")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title(title or "Samples against the density")
    ax.legend(fontsize="small")
    return finish(fig, path)
