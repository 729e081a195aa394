"""Run pipeline.train's command line in a fresh process on N logical CPU devices, optionally
"killed" right after its K-th checkpoint (tests/test_train_strategy.py).

    python tests/train_driver.py [--cpus N] [--die_after_saves K] -- <pipeline.train flags>

Logical devices (``tf.config.set_logical_device_configuration``) can only be configured before
TensorFlow initialises its devices, hence a process of its own for each training run. The
"kill" is ``os._exit`` right after ``CheckpointManager.save`` returned for the K-th time: no
cleanup, no further write, as a killed process leaves its run directory (exit status
``KILLED``). Everything else is the real command line (``cli.run(train.main, ...)``).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLED = 75


def main(argv):
    if "--" not in argv:
        sys.exit("usage: train_driver.py [--cpus N] [--die_after_saves K] -- <train flags>")
    split = argv.index("--")
    own, train_args = argv[:split], argv[split + 1:]
    opts = dict(a.lstrip("-").split("=", 1) for a in own)
    cpus = int(opts.pop("cpus", 1))
    die_after = int(opts.pop("die_after_saves", 0))
    if opts:
        sys.exit(f"unknown options {opts}")

    sys.path.insert(0, ROOT)
    import models  # noqa: F401  (Keras 2 before TensorFlow)
    import tensorflow as tf

    if cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpus)])
    if die_after:
        save = tf.train.CheckpointManager.save
        saves = []

        def save_then_die(self, *a, **k):
            path = save(self, *a, **k)
            saves.append(path)
            if len(saves) >= die_after:
                sys.stdout.flush()
                os._exit(KILLED)
            return path

        tf.train.CheckpointManager.save = save_then_die

    from pipeline import cli, train
    sys.argv = ["pipeline.train"] + train_args
    cli.run(train.main, define=train.define_flags, errors=(train.NonFiniteLoss,))


if __name__ == "__main__":
    main(sys.argv[1:])
