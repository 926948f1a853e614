"""``tacleaner detect``: rank a dataset's pairs by how suspicious they are, before training on them."""
from __future__ import annotations

import argparse

from ..fileio import check_inputs_outside
from .common import load_bundle
from .options import (
    AddCommand,
    add_data_columns,
    add_device_option,
    add_model_options,
    add_pairs_option,
    finite_float,
    fraction,
    int_at_least,
    seed_int,
)

DETECTOR_NAMES = ("dao", "density", "k-distance", "slof")  # equal to tacleaner.detect.DETECTORS (tested): help needs no torch


def add_parsers(add: AddCommand) -> None:
    s = add("detect", "score every pair of an image-caption set by how much its image embedding is a local outlier "
            "(suspected poison); write scores.csv, clean.csv without the most suspicious pairs, summary.json and "
            "histogram.png", detect)
    add_model_options(s, checkpoint_required=True)
    add_pairs_option(s)
    add_data_columns(s)
    s.add_argument("--out", required=True, help="folder to write")
    s.add_argument("--detector", default="dao", choices=DETECTOR_NAMES,
                   help="dao, slof, k-distance (sparse surroundings: Huang et al., ICLR 2025) or density (a tight "
                   "cluster: a backdoored model's triggered images at high poison rates)")
    s.add_argument("--k", type=int_at_least(1), default=16, help="neighbours")
    s.add_argument("--reference", type=int_at_least(2), default=4096,
                   help="rows sampled (by --seed) that every row is compared with")
    s.add_argument("--seed", type=seed_int, default=0, help="draws the reference rows")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--remove", type=fraction, help="leave this fraction of the scored pairs, the most "
                       "suspicious, out of clean.csv (default 0.01)")
    which.add_argument("--threshold", type=finite_float, help="leave the pairs scoring at least this out instead (default: none: --remove decides)")
    s.add_argument("--poisoned", help="a poisoning run's poisoned_indices.json: add AUROC and recall at the poison "
                   "count to summary.json (for measuring a detector; default none)")
    s.add_argument("--batch-size", type=int_at_least(1), default=256, help="images per forward pass")
    s.add_argument("--num-workers", type=int_at_least(0), help="processes decoding images (default: on a GPU up to "
                   "8, one core left; on CPU 0)")
    s.add_argument("--overwrite", action="store_true", help="replace an --out folder tacleaner created")
    add_device_option(s)


def detect(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..data.pairs import read_pairs
    from ..detect import DEFAULT_REMOVE, DetectConfig, summary_lines
    from ..detect import detect as run_detect

    cfg = DetectConfig(detector=args.detector, k=args.k, reference=args.reference, seed=args.seed,
                       batch_size=args.batch_size)
    table = read_pairs(args.data, args.image_col, args.caption_col)
    check_inputs_outside(args.out, [args.checkpoint, args.data, args.poisoned])
    _, device = distributed.setup(args.device)
    remove = DEFAULT_REMOVE if args.remove is None and args.threshold is None else args.remove
    summary = run_detect(load_bundle(args), table, cfg, args.out, device, remove=remove, threshold=args.threshold,
                         poisoned=args.poisoned, overwrite=args.overwrite, progress=not args.quiet,
                         num_workers=args.num_workers, meta={"checkpoint": args.checkpoint, "data": str(args.data)})
    if summary:
        print(summary_lines(summary))
        print(f"wrote {args.out}/scores.csv, clean.csv, summary.json and histogram.png")
    return 0
