"""``tacleaner detect``: rank a dataset's pairs by how suspicious they are, before training on them."""
from __future__ import annotations

import argparse

from tacleaner.fileio import check_inputs_outside

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

DETECTOR_NAMES = ("dao", "density", "disagreement", "k-distance", "norm", "slof")  # equal to tacleaner.detect.DETECTORS (tested): help needs no torch


def detector_name(text: str) -> str:
    """A signal, or signals joined by ``+``, each one of DETECTOR_NAMES."""
    parts = [p.strip() for p in text.split("+")]
    bad = [p for p in parts if p not in DETECTOR_NAMES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown signal {bad[0]!r}; choose from {', '.join(DETECTOR_NAMES)}, "
                                         "or join several with +")
    return "+".join(parts)


def add_parsers(add: AddCommand) -> None:
    s = add("detect", "score every pair of an image-caption set by how much its image embedding is a local outlier "
            "(suspected poison); write scores.csv, clean.csv without the most suspicious pairs, summary.json and "
            "histogram.png", detect)
    add_model_options(s, checkpoint_required=True)
    add_pairs_option(s)
    add_data_columns(s)
    s.add_argument("--out", required=True, help="folder to write")
    s.add_argument("--detector", default="norm+disagreement", type=detector_name,
                   help="dao, slof, k-distance (sparse surroundings: Huang et al., ICLR 2025), density (a tight "
                   "cluster), norm (the image feature's length), disagreement (image and caption apart); a+b adds "
                   "the signals' robust z-scores (default norm+disagreement: chosen on a tune world, needs no poison rate)")
    s.add_argument("--features", default="raw", choices=("raw", "normalised"),
                   help="distances between the image features as the model outputs them (raw, as Huang et al.) or "
                   "scaled to unit length")
    s.add_argument("--k", type=int_at_least(1), default=16, help="neighbours")
    s.add_argument("--reference", type=int_at_least(2), default=4096,
                   help="rows sampled (by --seed) that every row is compared with")
    s.add_argument("--seed", type=seed_int, default=0, help="draws the reference rows")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--z", type=finite_float, help="leave out of clean.csv the pairs whose robust z-score "
                       "(score - median) / (1.4826 MAD) is at least this: a cut from the scores alone, no poison rate "
                       "(default 2)")
    which.add_argument("--remove", type=fraction, help="leave this fraction of the scored pairs, the most "
                       "suspicious, out instead (needs a guess at the poison rate; default none: --z decides)")
    which.add_argument("--threshold", type=finite_float, help="leave the pairs scoring at least this out instead (default none: --z decides)")
    s.add_argument("--poisoned", help="a poisoning run's poisoned_indices.json: add AUROC and recall at the poison "
                   "count to summary.json (for measuring a detector; default none)")
    s.add_argument("--batch-size", type=int_at_least(1), default=256, help="images per forward pass")
    s.add_argument("--num-workers", type=int_at_least(0), help="processes decoding images (default: on a GPU up to "
                   "8, one core left; on CPU 0)")
    s.add_argument("--overwrite", action="store_true", help="replace an --out folder tacleaner created")
    add_device_option(s)


def detect(args: argparse.Namespace) -> int:
    from tacleaner import distributed
    from tacleaner.data.pairs import read_pairs
    from tacleaner.detect import DetectConfig, summary_lines
    from tacleaner.detect import detect as run_detect

    cfg = DetectConfig(detector=args.detector, k=args.k, features=args.features, reference=args.reference,
                       seed=args.seed, batch_size=args.batch_size)
    table = read_pairs(args.data, args.image_col, args.caption_col)
    check_inputs_outside(args.out, [args.checkpoint, args.data, args.poisoned])
    _, device = distributed.setup(args.device)
    summary = run_detect(load_bundle(args), table, cfg, args.out, device, z=args.z, remove=args.remove,
                         threshold=args.threshold,
                         poisoned=args.poisoned, overwrite=args.overwrite, progress=not args.quiet,
                         num_workers=args.num_workers, meta={"checkpoint": args.checkpoint, "data": str(args.data)})
    if summary:
        from tacleaner.detect.score import DEFAULT_DETECTOR
        from tacleaner.findings import reliability_line

        print(summary_lines(summary))
        print(reliability_line("detect") if cfg.detector == DEFAULT_DETECTOR and args.z is None and args.remove is None
              and args.threshold is None else "reliability: measured for the default detector and cut only "
              "(docs/research/results-trigger-free.md)")
        print(f"wrote {args.out}/scores.csv, clean.csv, summary.json and histogram.png")
    return 0
