"""A plain, eager PyTorch port of the GMVAE train step, for `tools/benchmark.py`.

    python tools/torch_port.py --check            # the port computes what gmvae_keras computes
    python tools/torch_port.py --bench mnist      # train images/s of the port, one JSON line
    ... --autocast_bfloat16                       # both under torch.autocast("cpu", dtype=torch.bfloat16)

This is the baseline a typical user would write: the networks of
`gmvae_keras/networks.py` as `torch.nn` modules in torch's natural NCHW
layout, the five loss terms of `gmvae_keras/losses.py`, Adam, one
`loss.backward()` per step, no `torch.compile`, 2 threads. The package itself
does not depend on torch; install it only to benchmark
(`pip install torch==2.13.0`).

Kept as in gmvae_keras, so that both do the same work: "valid" convolutions,
BatchNorm with Keras' epsilon (1e-3) and momentum (0.99, torch's 0.01),
Glorot-uniform kernels with zero biases, Adam with Keras' epsilon (1e-7), one
pairwise-distance matrix per batch serving the k-NN assignment (its
unlabeled x labeled block, without gradient) and the lifted structured loss.
Differences that do not change the work: torch's running variance is the
unbiased batch variance (Keras keeps the biased one), and the port does not
track the per-term metrics that `GMVAE.train_step` reports.

`--check` copies the weights of a `gmvae_keras.GMVAE` into the port and
compares, on a random batch: every loss function (the k-NN assignment
exactly, the others to 1e-4), the inference outputs, and the training loss
terms and gradients with the same Gumbel and Gaussian noise; `--float64`
does it in float64, to 1e-6.

`--autocast_bfloat16` is the port of `--precision=mixed_bfloat16`: the
networks run under `torch.autocast("cpu", dtype=torch.bfloat16)` while the
parts gmvae_keras keeps in float32 leave autocast (`_full_precision`): the
Gumbel-Softmax, the variance heads, the prior, the Gaussian sample, the
decoder's sigmoid, and the losses (their distance matrix included). `--check`
then compares with a `mixed_bfloat16` GMVAE, to the looser tolerances of
`check`.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# Same tables as gmvae_keras/networks.py (checked by --check): (filters,
# kernel, stride) per block; None is feature_size for the encoder, the image
# channels for the decoder. Every convolution uses "valid" padding.
ENCODER_SPECS = {
    (28, 28): [(16, 5, 1), (32, 5, 1), (64, 4, 2), (128, 5, 2), (None, 3, 1)],
    (32, 32): [(16, 5, 1), (32, 5, 1), (64, 5, 1), (128, 3, 1), (256, 4, 2), (None, 8, 1)],
}
DECODER_SPECS = {
    (28, 28): [(128, 3, 1), (64, 5, 2), (32, 4, 2), (16, 5, 1), (None, 5, 1)],
    (32, 32): [(256, 8, 1), (128, 4, 2), (64, 3, 1), (32, 5, 1), (16, 5, 1), (None, 5, 1)],
}
NEGATIVE_SLOPE = 0.2
BN_EPSILON = 1e-3  # keras.layers.BatchNormalization defaults
BN_MOMENTUM = 0.01  # = 1 - Keras' 0.99
MIN_VARIANCE = 1e-6
EPSILON = 1e-7
LOG_ZERO = -1e9
ADAM_EPSILON = 1e-7  # keras.optimizers.Adam default
# `check --autocast_bfloat16`: the model's outputs and loss terms (relative to
# max(1, |value|)), each gradient (relative to its norm), and the share of the
# training step's k-NN assignments that may differ.
BFLOAT16_TOLERANCE = 1e-2
BFLOAT16_GRADIENT_TOLERANCE = 0.25
BFLOAT16_ASSIGNMENTS = 0.1


def _glorot(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


def _full_precision():
    """Leaves an enclosing autocast: what gmvae_keras computes in float32 under a mixed policy."""
    return torch.autocast("cpu", enabled=False)


def _autocast(enabled):
    """`torch.autocast("cpu", dtype=torch.bfloat16)` when `enabled` (the port of mixed_bfloat16), else nothing."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


class Encoder(nn.Module):
    """x̂ = g(x): Conv2d + BatchNorm + LeakyReLU blocks down to 1x1, flattened."""

    def __init__(self, image_shape, feature_size):
        super().__init__()
        height, width, channels = image_shape
        blocks, c_in = [], channels
        for filters, kernel, stride in ENCODER_SPECS[(height, width)]:
            c_out = filters or feature_size
            blocks += [nn.Conv2d(c_in, c_out, kernel, stride, bias=False), _bn(c_out), nn.LeakyReLU(NEGATIVE_SLOPE)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)

    def forward(self, images):
        return torch.flatten(self.blocks(images), 1)


class Decoder(nn.Module):
    """p(x|z): ConvTranspose2d + BatchNorm + ReLU blocks from 1x1, sigmoid output."""

    def __init__(self, image_shape, latent_size):
        super().__init__()
        height, width, channels = image_shape
        specs = DECODER_SPECS[(height, width)]
        blocks, c_in = [], latent_size
        for filters, kernel, stride in specs[:-1]:
            blocks += [nn.ConvTranspose2d(c_in, filters, kernel, stride, bias=False), _bn(filters), nn.ReLU()]
            c_in = filters
        self.blocks = nn.Sequential(*blocks)
        _, kernel, stride = specs[-1]
        self.output_conv = nn.ConvTranspose2d(c_in, channels, kernel, stride)

    def forward(self, z):
        x = self.output_conv(self.blocks(z[:, :, None, None]))
        with _full_precision():
            return torch.sigmoid(x.to(self.output_conv.weight.dtype))


class GMVAE(nn.Module):
    """The GMVAE of gmvae_keras.model.GMVAE, NCHW images in [0, 1]."""

    def __init__(
        self,
        image_shape,
        num_classes,
        feature_size=100,
        latent_size=100,
        gaussian_weight=1.0,
        categorical_weight=1.0,
        assignment_weight=1.0,
        metric_weight=1.0,
        margin=1.0,
        k=5,
        temperature=1.0,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.loss_weights = dict(
            gaussian=gaussian_weight, categorical=categorical_weight, assignment=assignment_weight, metric=metric_weight
        )
        self.margin = margin
        self.k = k
        self.temperature = temperature
        self.encoder = Encoder(image_shape, feature_size)
        # q(y|x̂)
        self.cat_hidden = nn.Linear(feature_size, feature_size)
        self.cat_logits = nn.Linear(feature_size, num_classes)
        # q(z|x̂,y)
        self.gauss_hidden = nn.Linear(feature_size + num_classes, latent_size)
        self.gauss_mean = nn.Linear(latent_size, latent_size)
        self.gauss_variance = nn.Linear(latent_size, latent_size)
        # p(z|y)
        self.prior_mean = nn.Linear(num_classes, latent_size)
        self.prior_variance = nn.Linear(num_classes, latent_size)
        self.decoder = Decoder(image_shape, latent_size)
        self.apply(_glorot)

    def forward(self, images, gumbel=None, noise=None):
        """Every intermediate quantity. In training mode y and z are sampled
        (with the given Gumbel / standard normal noise when passed); in eval
        mode y = softmax(logits) and z = its mean, as in gmvae_keras.

        Every output is in the parameters' dtype: under autocast the networks
        compute in bfloat16 and the rest as gmvae_keras keeps it (`_full_precision`).
        """
        full = self.cat_logits.weight.dtype
        features = self.encoder(images)
        logits = self.cat_logits(F.leaky_relu(self.cat_hidden(features), NEGATIVE_SLOPE))
        with _full_precision():
            features, logits = features.to(full), logits.to(full)
            if self.training:
                if gumbel is None:
                    uniform = torch.rand_like(logits) * (1.0 - 2 * EPSILON) + EPSILON
                    gumbel = -torch.log(-torch.log(uniform))
                y = F.softmax((logits + gumbel) / self.temperature, dim=-1)
            else:
                y = F.softmax(logits, dim=-1)
        hidden = F.leaky_relu(self.gauss_hidden(torch.cat([features, y], dim=-1)), NEGATIVE_SLOPE)
        z_mean = self.gauss_mean(hidden)
        with _full_precision():
            z_mean = z_mean.to(full)
            z_variance = F.softplus(self.gauss_variance(hidden.to(full))) + MIN_VARIANCE
            if self.training:
                if noise is None:
                    noise = torch.randn_like(z_mean)
                z = z_mean + torch.sqrt(z_variance) * noise
            else:
                z = z_mean
            prior_mean = self.prior_mean(y)
            prior_variance = F.softplus(self.prior_variance(y)) + MIN_VARIANCE
        return {
            "features": features,
            "logits": logits,
            "y": y,
            "z_mean": z_mean,
            "z_variance": z_variance,
            "z": z,
            "prior_mean": prior_mean,
            "prior_variance": prior_variance,
            "reconstruction": self.decoder(z),
        }

    def compute_losses(self, images, labels, gumbel=None, noise=None):
        """`(terms, total, assigned)` as gmvae_keras.model.GMVAE.compute_losses.

        `images` [B, C, H, W]: the first B - len(labels) rows unlabeled, the
        last len(labels) rows labeled.
        """
        out = self(images, gumbel, noise)
        with _full_precision():
            return self._losses(images, labels, out)

    def _losses(self, images, labels, out):
        terms = {
            "reconstruction_loss": reconstruction_loss(images, out["reconstruction"]),
            "gaussian_loss": gaussian_loss(
                out["z"], out["z_mean"], out["z_variance"], out["prior_mean"], out["prior_variance"]
            ),
            "categorical_loss": categorical_loss(out["logits"]),
        }
        num_unlabeled = images.shape[0] - labels.shape[0]
        distances = pairwise_distance(out["features"])
        assigned = assign_labels(distances[:num_unlabeled, num_unlabeled:], labels, self.num_classes, self.k)
        all_labels = torch.cat([assigned, labels])
        terms["assignment_loss"] = F.cross_entropy(out["logits"], all_labels)
        terms["metric_loss"] = lifted_structured_loss(all_labels, distances, self.margin)
        w = self.loss_weights
        total = (
            terms["reconstruction_loss"]
            + w["gaussian"] * terms["gaussian_loss"]
            + w["categorical"] * terms["categorical_loss"]
            + w["assignment"] * terms["assignment_loss"]
            + w["metric"] * terms["metric_loss"]
        )
        return terms, total, assigned


# ------------------------------------------------------------------ losses


def reconstruction_loss(images, reconstructions):
    """Squared error summed over pixels, averaged over the batch."""
    return torch.square(images - reconstructions).flatten(1).sum(-1).mean()


def log_normal(x, mean, variance):
    return -0.5 * (torch.log(2.0 * math.pi * variance) + torch.square(x - mean) / variance).sum(-1)


def gaussian_loss(z, mean, variance, prior_mean, prior_variance):
    """log q(z|x̂,y) - log p(z|y), summed over z, averaged over the batch."""
    return (log_normal(z, mean, variance) - log_normal(z, prior_mean, prior_variance)).mean()


def categorical_loss(logits):
    """KL(q(y|x̂) || uniform), averaged over the batch."""
    log_q = F.log_softmax(logits, dim=-1)
    return ((log_q.exp() * log_q).sum(-1) + math.log(logits.shape[-1])).mean()


def pairwise_distance(a, b=None):
    """Euclidean distances; zero (with zero gradient) where they vanish."""
    b = a if b is None else b
    squared = a.square().sum(-1, keepdim=True) - 2.0 * a @ b.T + b.square().sum(-1)[None, :]
    squared = squared.clamp_min(0.0)
    is_zero = squared <= 1e-12
    return torch.where(is_zero, 0.0, torch.sqrt(torch.where(is_zero, 1.0, squared)))


@torch.no_grad()
def assign_labels(distances, labeled_labels, num_classes, k):
    """1/distance-weighted k-NN vote among the labeled samples (paper, eq. 8)."""
    nearest, neighbours = torch.topk(distances, k, dim=1, largest=False)
    weights = 1.0 / (nearest + EPSILON)
    votes = torch.zeros(distances.shape[0], num_classes, dtype=weights.dtype)
    votes.scatter_add_(1, labeled_labels[neighbours], weights)
    return votes.argmax(-1)


def lifted_structured_loss(labels, distances, margin):
    """Lifted structured loss (Song et al. 2016), log-sum-exp form, averaged
    over the ordered positive pairs and halved."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool)
    positives = (same & ~eye).to(distances.dtype)
    row_terms = torch.logsumexp(torch.where(same, LOG_ZERO, margin - distances), dim=1)
    j = torch.logaddexp(row_terms[:, None], row_terms[None, :]) + distances
    return (F.relu(j).square() * positives).sum() / positives.sum().clamp_min(1.0) / 2.0


# --------------------------------------------------------------- benchmark


def make_batch(setting, seed=0):
    """A synthetic batch: NCHW images in [0, 1], labels of the labeled half."""
    generator = np.random.default_rng(seed)
    height, width, channels = setting["image_shape"]
    batch, n_l = setting["batch_size"], setting["batch_size"] // 2
    images = generator.random((batch, channels, height, width), dtype=np.float32)
    labels = np.arange(n_l) % setting["num_classes"]
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def build(setting):
    return GMVAE(
        image_shape=setting["image_shape"],
        num_classes=setting["num_classes"],
        feature_size=setting["feature_size"],
        latent_size=setting["latent_size"],
        gaussian_weight=setting.get("gaussian_weight", 1.0),
        categorical_weight=setting.get("categorical_weight", 1.0),
        assignment_weight=setting.get("assignment_weight", 1.0),
        metric_weight=setting.get("metric_weight", 1.0),
        margin=setting["margin"],
        k=setting["k"],
    )


def steps_for(step_seconds, repeat_seconds, max_steps=50):
    """Steps per timed repeat so that one repeat lasts about `repeat_seconds`."""
    return max(1, min(max_steps, math.ceil(repeat_seconds / max(step_seconds, 1e-9))))


def bench(setting, warmup=1, steps=None, repeats=3, repeat_seconds=8.0, threads=2, seed=0, autocast_bfloat16=False):
    """Steady-state train images/s of the port (median over `repeats`), under bfloat16 autocast if asked."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build(setting).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=ADAM_EPSILON)
    images, labels = make_batch(setting, seed)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(autocast_bfloat16):
            _, total, _ = model.compute_losses(images, labels)
        total.backward()
        optimizer.step()
        return total

    for _ in range(max(1, warmup)):
        start = time.perf_counter()
        loss = step().item()
    if steps is None:  # the last warm-up step sets the steps per repeat
        steps = steps_for(time.perf_counter() - start, repeat_seconds)
    rates, cpu_seconds, wall_seconds = [], 0.0, 0.0
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(steps):
            loss = step()
        loss = loss.item()  # eager CPU torch is synchronous; this only reads the value
        elapsed = time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
        wall_seconds += elapsed
        rates.append(steps * setting["batch_size"] / elapsed)
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss}")
    return {
        "torch_train_images_per_second": statistics.median(rates),
        "torch_train_repeats_images_per_second": rates,
        "torch_train_steps_per_repeat": steps,
        "torch_train_warmup_steps": max(1, warmup),
        "torch_train_cpu_utilization": cpu_seconds / wall_seconds,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_autocast": "bfloat16" if autocast_bfloat16 else None,
        "torch_final_loss": loss,
    }


# ------------------------------------------------------------------- check


def _copy_dense(dense, linear):
    kernel, bias = (np.asarray(w) for w in dense.get_weights())
    linear.weight.data = torch.from_numpy(kernel.T.copy())
    linear.bias.data = torch.from_numpy(bias.copy())


def _copy_conv(keras_conv, torch_conv):
    # Conv2D kernel (kh, kw, in, out) -> (out, in, kh, kw);
    # Conv2DTranspose kernel (kh, kw, out, in) -> (in, out, kh, kw).
    kernel = np.asarray(keras_conv.kernel)
    torch_conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    if keras_conv.use_bias:
        torch_conv.bias.data = torch.from_numpy(np.asarray(keras_conv.bias).copy())


def _copy_bn(keras_bn, torch_bn):
    gamma, beta, mean, variance = (np.asarray(w) for w in keras_bn.get_weights())
    for name, value in (("weight", gamma), ("bias", beta)):
        getattr(torch_bn, name).data = torch.from_numpy(value.copy())
    torch_bn.running_mean.copy_(torch.from_numpy(mean))
    torch_bn.running_var.copy_(torch.from_numpy(variance))


def copy_weights(keras_model, port):
    """Copies a gmvae_keras.GMVAE's weights into the port; returns the pairs
    (keras variable, torch parameter) of the trainable weights."""
    import keras  # noqa: PLC0415

    pairs = []

    def chain(keras_layers, torch_layers):
        keras_layers = [
            layer
            for layer in keras_layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.BatchNormalization))
        ]
        torch_layers = [
            layer for layer in torch_layers if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d))
        ]
        assert len(keras_layers) == len(torch_layers), (len(keras_layers), len(torch_layers))
        for kl, tl in zip(keras_layers, torch_layers, strict=True):
            if isinstance(tl, nn.BatchNorm2d):
                _copy_bn(kl, tl)
                pairs.extend([(kl.gamma, tl.weight), (kl.beta, tl.bias)])
            else:
                _copy_conv(kl, tl)
                pairs.append((kl.kernel, tl.weight))
                if kl.use_bias:
                    pairs.append((kl.bias, tl.bias))

    chain(keras_model.encoder.blocks, port.encoder.blocks)
    chain(
        keras_model.decoder.blocks + [keras_model.decoder.output_conv],
        list(port.decoder.blocks) + [port.decoder.output_conv],
    )
    for kl, tl in (
        (keras_model.categorical_inference.hidden, port.cat_hidden),
        (keras_model.categorical_inference.logits, port.cat_logits),
        (keras_model.gaussian_inference.hidden, port.gauss_hidden),
        (keras_model.gaussian_inference.mean, port.gauss_mean),
        (keras_model.gaussian_inference.variance, port.gauss_variance),
        (keras_model.gaussian_prior.mean, port.prior_mean),
        (keras_model.gaussian_prior.variance, port.prior_variance),
    ):
        _copy_dense(kl, tl)
        pairs.extend([(kl.kernel, tl.weight), (kl.bias, tl.bias)])
    return pairs


def _to_keras_layout(name, array):
    """A torch gradient in the layout of the matching Keras variable."""
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:
        return array.T
    return array


def check(setting_name="mnist", seed=0, float64=False, verbose=True, autocast_bfloat16=False):
    """Compares the port with gmvae_keras on a random batch; raises on mismatch.

    In float32 the model's outputs, loss terms and assignments must agree to
    1e-4 (relative to max(1, |value|)) and each gradient to 2e-2 of its norm
    (the backward passes through BatchNorm cancel, so float32 rounding shows
    there); with `float64=True` everything to 1e-6. With
    `autocast_bfloat16=True` the port under bfloat16 autocast is compared with
    a `mixed_bfloat16` GMVAE: the loss functions (float32 in both) as in
    float32, the model's outputs and loss terms to `BFLOAT16_TOLERANCE`, each
    gradient to `BFLOAT16_GRADIENT_TOLERANCE` of its norm, and up to
    `BFLOAT16_ASSIGNMENTS` of the training step's k-NN assignments may differ
    (two frameworks round 8-bit mantissas differently, and a near tie of the
    vote can go either way).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    if float64 and autocast_bfloat16:
        raise SystemExit("--float64 and --autocast_bfloat16 exclude each other")
    dt = np.float64 if float64 else np.float32
    tolerance, gradient_tolerance = (1e-6, 1e-6) if float64 else (1e-4, 2e-2)
    model_tolerance, assignments_allowed = tolerance, 0
    if autocast_bfloat16:
        model_tolerance, gradient_tolerance = BFLOAT16_TOLERANCE, BFLOAT16_GRADIENT_TOLERANCE
        assignments_allowed = BFLOAT16_ASSIGNMENTS
    if float64:
        keras.config.set_floatx("float64")
        torch.set_default_dtype(torch.float64)

    from gmvae_keras import losses as K
    from gmvae_keras import networks
    from gmvae_keras.benchmarks import SETTINGS
    from gmvae_keras.model import GMVAE as KerasGMVAE

    failures = []

    def report(name, ok, detail):
        if verbose:
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        if not ok:
            failures.append(name)

    def close(name, ours, theirs, tol=tolerance):
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        scale = max(1.0, float(np.max(np.abs(theirs))) if theirs.size else 1.0)
        error = float(np.max(np.abs(ours - theirs))) / scale if theirs.size else 0.0
        report(
            name, ours.shape == theirs.shape and error <= tol, f"max error {error:.2e} (relative to max(1, max|value|))"
        )

    report(
        "network tables",
        ENCODER_SPECS == networks._ENCODER_SPECS
        and DECODER_SPECS == networks._DECODER_SPECS
        and NEGATIVE_SLOPE == networks.NEGATIVE_SLOPE,
        "ENCODER_SPECS, DECODER_SPECS, NEGATIVE_SLOPE equal gmvae_keras.networks'",
    )

    # --- loss functions on random tensors.
    rng = np.random.default_rng(seed)
    setting = SETTINGS[setting_name]
    batch, n_l, c = setting["batch_size"], setting["batch_size"] // 2, setting["num_classes"]
    n_u, f = batch - n_l, setting["feature_size"]
    centres = rng.normal(size=(c, f)) * 2.0
    true = rng.integers(0, c, batch)
    features = (centres[true] + rng.normal(size=(batch, f))).astype(dt)
    features[3] = features[n_u + 5]  # an unlabeled duplicate of a labeled sample: distance 0
    labels = true[n_u:].astype(np.int64)
    t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731

    d_keras = K.pairwise_distance(features).numpy()
    d_torch = pairwise_distance(t(features)).numpy()
    # |a|^2 - 2ab + |b|^2 cancels for (near-)coinciding points, so there both
    # are only rounding noise of order sqrt(eps)*|a|: compare them separately.
    far = d_keras > 1.0
    close("pairwise_distance", d_torch[far], d_keras[far])
    near_bound = 1e-2 * float(np.max(d_keras))
    near = float(max(np.max(d_keras[~far]), np.max(d_torch[~far])))
    report(
        "pairwise_distance of coinciding points",
        near <= near_bound,
        f"largest {near:.2e} (both), bound {near_bound:.2e}",
    )
    assigned_keras = K.assign_labels(d_keras[:n_u, n_u:], labels, c, setting["k"]).numpy()
    assigned_torch = assign_labels(t(d_keras[:n_u, n_u:]), t(labels), c, setting["k"]).numpy()
    report(
        "assign_labels",
        np.array_equal(assigned_keras, assigned_torch),
        f"{int(np.sum(assigned_keras != assigned_torch))} of {n_u} assignments differ",
    )
    all_labels = np.concatenate([assigned_keras, labels])
    close(
        "lifted_structured_loss",
        lifted_structured_loss(t(all_labels), t(d_keras), setting["margin"]).item(),
        K.lifted_structured_loss(all_labels, d_keras, setting["margin"]).numpy(),
    )
    logits = rng.normal(size=(batch, c)).astype(dt) * 3
    close("categorical_loss", categorical_loss(t(logits)).item(), K.categorical_loss(logits).numpy())
    close(
        "assignment_loss",
        F.cross_entropy(t(logits), t(all_labels)).item(),
        K.assignment_loss(all_labels.astype(np.int32), logits).numpy(),
    )
    z, m, v, pm, pv = (rng.normal(size=(batch, 8)).astype(dt) for _ in range(5))
    v, pv = np.exp(v), np.exp(pv)
    close("gaussian_loss", gaussian_loss(*map(t, (z, m, v, pm, pv))).item(), K.gaussian_loss(z, m, v, pm, pv).numpy())
    x, r = (rng.random((4, 28, 28, 1), dtype=dt) for _ in range(2))
    close("reconstruction_loss", reconstruction_loss(t(x), t(r)).item(), K.reconstruction_loss(x, r).numpy())

    # --- the whole model, same weights: inference, then a training step's
    # loss terms and gradients with the same noise.
    keras.utils.set_random_seed(seed)
    weights = {k: setting[k] for k in ("gaussian_weight", "categorical_weight", "assignment_weight", "metric_weight")}
    kmodel = KerasGMVAE(
        image_shape=setting["image_shape"],
        num_classes=c,
        feature_size=f,
        latent_size=setting["latent_size"],
        margin=setting["margin"],
        k=setting["k"],
        seed=seed,
        dtype="mixed_bfloat16" if autocast_bfloat16 else None,
        **weights,
    )
    port = build(setting)
    pairs = copy_weights(kmodel, port)
    report(
        "trainable weights",
        len(pairs) == len(kmodel.trainable_variables) == len(list(port.parameters())),
        f"{len(pairs)} pairs, keras {len(kmodel.trainable_variables)}, torch {len(list(port.parameters()))}",
    )
    images = rng.random((batch,) + tuple(setting["image_shape"]), dtype=dt)
    images_nchw = t(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    port.eval()
    with torch.no_grad(), _autocast(autocast_bfloat16):
        out_torch = port(images_nchw)
    out_keras = kmodel(images, training=False)
    for name in ("features", "logits", "z_mean", "z_variance", "prior_mean", "prior_variance"):
        close(f"inference {name}", out_torch[name].numpy(), out_keras[name].numpy(), model_tolerance)
    close(
        "inference reconstruction",
        out_torch["reconstruction"].numpy().transpose(0, 2, 3, 1),
        out_keras["reconstruction"].numpy(),
        model_tolerance,
    )

    gumbel = -np.log(-np.log(rng.uniform(1e-7, 1 - 1e-7, (batch, c)))).astype(dt)
    noise = rng.normal(size=(batch, setting["latent_size"])).astype(dt)
    port.train()
    with _autocast(autocast_bfloat16):
        terms_torch, total_torch, assigned_torch = port.compute_losses(images_nchw, t(labels), t(gumbel), t(noise))
    total_torch.backward()

    # gmvae_keras.model.GMVAE.call and compute_losses, with the noise injected;
    # `full` is GMVAE._full: float32 after the 16-bit networks of a mixed model.
    def full(x):
        return keras.ops.cast(x, kmodel.dtype_policy.variable_dtype)

    with tf.GradientTape() as tape:
        feats = kmodel.encoder(images, training=True)
        lg = kmodel.categorical_inference(feats)
        y = keras.ops.softmax((full(lg) + gumbel) / setting.get("temperature", 1.0), axis=-1)
        zm, zv = kmodel.gaussian_inference([feats, y])
        zz = full(zm) + keras.ops.sqrt(zv) * noise
        pm_, pv_ = kmodel.gaussian_prior(y)
        rec = kmodel.decoder(zz, training=True)
        feats, lg, zm = full(feats), full(lg), full(zm)
        dist = K.pairwise_distance(feats)
        assigned = K.assign_labels(dist[:n_u, n_u:], labels, c, setting["k"])
        lab = keras.ops.concatenate([assigned, labels.astype(np.int32)], axis=0)
        terms_keras = {
            "reconstruction_loss": K.reconstruction_loss(images, rec),
            "gaussian_loss": K.gaussian_loss(zz, zm, zv, pm_, pv_),
            "categorical_loss": K.categorical_loss(lg),
            "assignment_loss": K.assignment_loss(lab, lg),
            "metric_loss": K.lifted_structured_loss(lab, dist, setting["margin"]),
        }
        total_keras = K.total_loss(terms_keras, **weights)
    grads = tape.gradient(total_keras, [kv for kv, _ in pairs])
    same_assigned = int(np.sum(assigned.numpy() != assigned_torch.numpy()))
    report(
        "training assignment",
        same_assigned <= assignments_allowed * n_u,
        f"{same_assigned} of {n_u} assignments differ",
    )
    for name in terms_keras:
        close(f"training {name}", terms_torch[name].item(), terms_keras[name].numpy(), model_tolerance)
    close("training total loss", total_torch.item(), total_keras.numpy(), model_tolerance)
    worst, worst_name = 0.0, ""
    for (kv, tp), g in zip(pairs, grads, strict=True):
        ours, theirs = _to_keras_layout(kv.path, tp.grad.numpy()), np.asarray(g)
        error = float(np.linalg.norm(ours - theirs)) / max(float(np.linalg.norm(theirs)), 1e-30)
        if error > worst:
            worst, worst_name = error, kv.path
    report(
        "training gradients",
        worst <= gradient_tolerance,
        f"worst |difference| / |gradient| (Frobenius) {worst:.2e}, at {worst_name}",
    )
    if failures:
        raise SystemExit(f"{len(failures)} check(s) failed: {', '.join(failures)}")
    if verbose:
        print("the port matches gmvae_keras")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="compare with gmvae_keras on a random batch")
    mode.add_argument(
        "--bench",
        metavar="SETTING",
        help="benchmark a setting of gmvae_keras.benchmarks (mnist, svhn) or a JSON object",
    )
    parser.add_argument("--setting", default="mnist", help="setting of --check (mnist, svhn)")
    parser.add_argument("--float64", action="store_true", help="--check in float64, to tolerance 1e-6")
    parser.add_argument(
        "--autocast_bfloat16",
        action="store_true",
        help="run under torch.autocast('cpu', dtype=torch.bfloat16), the port of --precision=mixed_bfloat16",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per timed repeat (default: about --repeat_seconds)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeat_seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.check:
        check(args.setting, float64=args.float64, autocast_bfloat16=args.autocast_bfloat16)
        return 0
    if args.bench.lstrip().startswith("{"):
        setting = json.loads(args.bench)
    else:
        from gmvae_keras.benchmarks import SETTINGS  # noqa: PLC0415

        setting = SETTINGS[args.bench]
    setting = dict(setting, image_shape=tuple(setting["image_shape"]))
    result = bench(
        setting,
        args.warmup,
        args.steps,
        args.repeats,
        args.repeat_seconds,
        args.threads,
        autocast_bfloat16=args.autocast_bfloat16,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
