"""Report what the reader makes of a Speech Commands folder: layout, classes, split sizes.

Reads: --data_dir (with the data set flags: --task / --wanted_words, percentages, --split_salt).
Writes: nothing; prints the table and one JSON line (also to --json_out).

    python -m pipeline.inspect_data --data_dir ../shared/data/speech_commands_real8 \\
        --wanted_words yes,no,up,down,left,right,stop,go --unknown_percentage 0
"""
import json

from absl import app

from pipeline import cli, data_flags
from pipeline.input_pipeline import index_from_config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    index = index_from_config(data_flags.config_from_flags())
    print(f"{index.data_dir}: layout={index.layout}, {len(index.labels)} classes, "
          f"{len(index.noise_files)} noise recordings")
    print(index.table())
    if index.skipped.counts:
        print("skipped/converted:", index.skipped.summary())
    result = {"layout": index.layout, "labels": index.labels, "counts": index.counts(),
              "skipped": dict(index.skipped.counts)}
    print(json.dumps(result))
    return result  # --json_out


def define_flags():
    data_flags.define_flags()


if __name__ == "__main__":
    cli.run(main, define=define_flags)
