"""Long-run memory check: train N steps on synthetic data, print RSS every K steps.

    python tools/soak.py --steps=2000 --every=100 [--setting=mnist|svhn] [--out FILE]

Prints one JSON line per report ({"step", "rss_mb", "peak_rss_mb", "seconds"}) and a
final JSON summary with the RSS growth between the first and the last report, so a
leak shows as a growing `rss_mb` across epochs. The run goes through
`model.fit` with one epoch per report, so per-epoch work (callbacks, iterator
re-creation) is exercised too. The image shape, batch size, network sizes, k and
margin are the setting's in `gmvae_keras.benchmarks.SETTINGS`; the loss weights are
`GMVAE`'s defaults.
"""

import argparse
import json
import resource
import sys
import time

from gmvae_keras.benchmarks import SETTINGS


def rss_mb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="mnist")
    parser.add_argument("--out", default=None, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.every < 1:
        parser.error("--steps and --every must be >= 1")

    import keras
    import numpy as np
    import tensorflow as tf

    from gmvae_keras import GMVAE, TemperatureAnnealing

    s = SETTINGS[args.setting]
    half, c = s["batch_size"] // 2, s["num_classes"]
    rng = np.random.default_rng(0)
    # Four distinct batches, cycled: `half` unlabeled images first, `half` labeled last.
    dataset = tf.data.Dataset.from_tensor_slices(
        {
            "images": rng.random((4, s["batch_size"]) + s["image_shape"]).astype("float32"),
            "labels": np.tile(np.arange(half) % c, (4, 1)).astype("int32"),
            "unlabeled_labels": np.zeros((4, half), "int32"),
        }
    ).repeat()
    model = GMVAE(
        s["image_shape"],
        c,
        feature_size=s["feature_size"],
        latent_size=s["latent_size"],
        k=s["k"],
        margin=s["margin"],
        seed=0,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    out = open(args.out, "w") if args.out else None
    reports = []
    start = time.perf_counter()
    epochs = -(-args.steps // args.every)
    for epoch in range(epochs):
        steps = min(args.every, args.steps - epoch * args.every)
        model.fit(
            dataset,
            steps_per_epoch=steps,
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=0,
            callbacks=[TemperatureAnnealing(1.0, 0.5, 50)],
        )
        report = {
            "step": epoch * args.every + steps,
            "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "seconds": round(time.perf_counter() - start, 1),
        }
        reports.append(report)
        line = json.dumps(report)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()
    summary = {
        "setting": args.setting,
        "steps": args.steps,
        "first_rss_mb": reports[0]["rss_mb"],
        "last_rss_mb": reports[-1]["rss_mb"],
        "rss_growth_mb": round(reports[-1]["rss_mb"] - reports[0]["rss_mb"], 1),
        "growth_after_half_mb": round(reports[-1]["rss_mb"] - reports[len(reports) // 2]["rss_mb"], 1),
        "peak_rss_mb": reports[-1]["peak_rss_mb"],
    }
    print(json.dumps(summary), flush=True)
    if out:
        out.write(json.dumps(summary) + "\n")
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
