"""``tacleaner audit``: scan a model, score its training pairs, clean it by the defender's rule
and report it all in one run folder (report.html, report.md, report.json)."""
from __future__ import annotations

import argparse
from pathlib import Path

from tacleaner.fileio import check_inputs_outside

from .options import (
    AddCommand,
    add_data_columns,
    add_device_option,
    add_model_options,
    add_run_folder_options,
    int_at_least,
)

RATES_HELP = "learning rates to try for each defense, comma-separated (default 5e-4,1e-3,1.5e-3; the last is the demo's)"


def comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list")
    return items


def comma_rates(text: str) -> list[float]:
    try:
        rates = [float(t) for t in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated learning rates such as 1e-3,1.5e-3") from None
    if any(not r > 0 for r in rates):
        raise argparse.ArgumentTypeError(f"{text!r}: learning rates must be positive")
    return rates


def add_parsers(add: AddCommand) -> None:
    s = add("audit", "is this CLIP model backdoored? scan it, score its training pairs (--data), clean it by the "
            "defender's rule (--clean-data) and write one report (report.html, report.md, report.json)", audit)
    add_model_options(s, checkpoint_required=True)
    s.add_argument("--zeroshot", required=True, help="labelled clean images: zero-shot CSV (image, label) or "
                   "ImageFolder tree; split in halves, one to choose on, one to report on")
    s.add_argument("--classes", required=True, help="classes JSON (classnames, templates), or 'imagenet'")
    s.add_argument("--out", required=True, help="run folder for the report and every step's output")
    s.add_argument("--data", help="the model's training pairs (CSV or shards): score every pair, list the most "
                   "suspicious and write the rest as detect/clean.csv (default: none)")
    s.add_argument("--clean-data", help="clean image-caption pairs to clean the model with (default: none: no cleaning)")
    s.add_argument("--base", help="the model this one was fine-tuned from (e.g. the public pretrained weights): the "
                   "scan then ranks what fine-tuning added (default: none)")
    add_data_columns(s)
    s.add_argument("--defenses", type=comma_list, default=["cleanclip"],
                   help="defenses to choose among, comma-separated (default cleanclip)")
    s.add_argument("--rates", type=comma_rates, default=[5e-4, 1e-3, 1.5e-3], help=RATES_HELP)
    s.add_argument("--ca-budget", type=float, default=2.0,
                   help="points of validation accuracy a cleaning may cost (the defender's rule)")
    s.add_argument("--epochs", type=int_at_least(1), default=4, help="cleaning epochs")
    s.add_argument("--batch-size", type=int_at_least(2), default=64, help="cleaning batch size")
    s.add_argument("--scan-images", type=int_at_least(2), default=256, help="validation images the scan probes")
    s.add_argument("--threads", type=int_at_least(0), default=0, help="torch threads on CPU (0: torch's default)")
    add_run_folder_options(s)
    add_device_option(s)


def audit(args: argparse.Namespace) -> int:
    from tacleaner.audit import AuditInputs, run_audit
    from tacleaner.environment import resolve_device
    from tacleaner.errors import TacleanerError

    if args.ca_budget < 0:
        raise TacleanerError(f"--ca-budget {args.ca_budget:g}: expected points >= 0")
    inputs = AuditInputs(checkpoint=args.checkpoint, zeroshot=args.zeroshot, classes=args.classes, out=args.out,
                         model=args.model, data=args.data, clean_data=args.clean_data, base=args.base,
                         image_col=args.image_col, caption_col=args.caption_col, defenses=args.defenses,
                         rates=args.rates, ca_budget=args.ca_budget, epochs=args.epochs, batch_size=args.batch_size,
                         scan_images=args.scan_images, threads=args.threads, device=args.device)
    check_inputs_outside(args.out, [args.checkpoint, args.zeroshot, args.classes, args.data, args.clean_data, args.base])
    device = resolve_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    say = (lambda _: None) if args.quiet else (lambda m: print(f"audit: {m}", flush=True))
    report = run_audit(inputs, device, say, progress=not args.quiet, resume=args.resume, overwrite=args.overwrite)
    out = Path(args.out)
    print(report["decision"])
    for f in report["findings"]:
        print(f"  {f['id']}: {f['reliability']}")
    print(f"wrote {out / 'report.html'}, report.md and report.json")
    return 0
