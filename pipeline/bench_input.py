"""Input-pipeline throughput: clips/s of augmented training batches on this machine.

Reads: --data_dir (the training split, with the data set flags).
Writes: decoded audio to --cache_dir (optional; default memory); the throughput (--json_out);
  prints clips/s per pass and one JSON line.

    python -m pipeline.bench_input --data_dir ../shared/data/speech_commands_real8 \\
        --wanted_words yes,no,up,down,left,right,stop,go --unknown_percentage 0

Prints the first pass (read + decode + cache + augment + features) and the cached steady state
(augment + features) in clips/s, then one JSON line. Training consumes ~200-400 clips/s on 2
cores (see README), so the steady-state number is what must stay well above it.
"""
import json
import statistics
import time

from absl import app, flags

from pipeline import cli, data_flags, output_paths
from pipeline.input_pipeline import InputPipeline, index_from_config

FLAGS = flags.FLAGS


def define_flags():
    data_flags.define_flags()
    flags.DEFINE_integer("batch_size", 96, "Training batch size (the reference's 96).")
    flags.DEFINE_integer("epochs", 3, "Passes over the training split (first one fills the "
                         "cache).")


def _pass(pipe, epoch):
    n, t0 = 0, time.perf_counter()
    for x, _ in pipe.train(FLAGS.batch_size, epoch=epoch):
        n += int(x.shape[0])
    return n, time.perf_counter() - t0


def main(argv):
    import os
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.epochs < 1 or FLAGS.batch_size < 1:
        raise app.UsageError("--epochs and --batch_size: expected at least 1")
    output_paths.check_dir(FLAGS.cache_dir, "--cache_dir")
    cfg = data_flags.config_from_flags()
    index = index_from_config(cfg)
    pipe = InputPipeline(index, cfg)
    results = []
    for epoch in range(FLAGS.epochs):
        n, dt = _pass(pipe, epoch)
        kind = "first pass (decode+cache)" if epoch == 0 else "cached"
        print(f"epoch {epoch}: {n} clips in {dt:.2f} s = {n / dt:,.0f} clips/s [{kind}]")
        results.append(n / dt)
    steady = statistics.median(results[1:]) if len(results) > 1 else results[0]
    result = {"first_pass_clips_per_s": round(results[0], 1),
              "cached_clips_per_s": round(steady, 1), "batch_size": FLAGS.batch_size,
              "cores": os.cpu_count(), "augment": cfg.augment.__dict__}
    print(json.dumps(result))
    return result  # --json_out


if __name__ == "__main__":
    cli.run(main, define=define_flags)
