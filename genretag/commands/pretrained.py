"""``genretag pretrained musicnn-msd --out msd.ckpt``: published weights as a genretag checkpoint.

The checkpoint serves ``tag``, ``embed``, ``export``, the beets plugin and ``fit
--model.init_from`` like one trained here. ``--ckpt musicnn-msd`` does the same conversion on
first use into the cache folder (genretag.pretrained.musicnn.resolve_checkpoint).
"""

from __future__ import annotations

import argparse

from genretag.errors import CommandParser, run_command
from genretag.network import describe_card
from genretag.pretrained import musicnn

EXAMPLE = f"""example:
  {musicnn.INSTALL}
  genretag pretrained musicnn-msd --out msd.ckpt
  genretag tag ~/Music --ckpt msd.ckpt --out tags.csv       # or --ckpt musicnn-msd directly

models:
  musicnn-msd       musicnn's MSD_musicnn: Million Song Dataset, Last.fm's top 50 tags (30 genres)
  musicnn-mtt       musicnn's MTT_musicnn: MagnaTagATune's top 50 tags (14 genres)
  musicnn-msd-vgg   musicnn's MSD_vgg: the same tags, its VGG baseline (3 s windows only)
  musicnn-mtt-vgg   musicnn's MTT_vgg: the same tags, its VGG baseline (3 s windows only)

{musicnn.LICENSE_NOTE}
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``genretag pretrained`` command line."""
    parser = CommandParser(
        prog="genretag pretrained",
        description="Convert published weights into a genretag checkpoint, with numpy alone "
        "(no TensorFlow): the installed musicnn package's TensorFlow 1 checkpoints.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", help="musicnn-msd, musicnn-mtt, musicnn-msd-vgg or musicnn-mtt-vgg"
    )
    parser.add_argument("--out", required=True, help="the file to write, e.g. msd.ckpt")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``genretag pretrained MODEL --out FILE``: 0 when written, 2 (one line) on a usage error."""
    return run_command("pretrained", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    content = musicnn.import_musicnn(args.model, args.out)
    print(f"wrote {args.out}\n{describe_card(content)}")
    return 0
