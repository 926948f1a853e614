"""``tacleaner scan``: audit a model for a backdoor target without knowing the trigger."""
from __future__ import annotations

import argparse

from tacleaner.fileio import check_inputs_outside

from .common import load_bundle, parse_params
from .options import AddCommand, add_device_option, add_model_options, add_param_option

SETTINGS_HELP = ("scan setting, repeatable (defaults: images 256, probe linf,patch (or linf, or patch), eps 8/255, "
                 "steps 10, step_size 2/255, patch_sizes 0.125,0.25,0.333, patch_steps 10, patch_step 0.1, top 3, "
                 "invert_steps 200, invert_lr 0.1, mask_weight 0.05, batch_size 128, seed 0, cut 15: the anomaly index at "
                 "which the most attracting class is a suspected target, reference_cut 12: the same with --reference)")


def add_parsers(add: AddCommand) -> None:
    s = add("scan", "audit a model for a backdoor target: per class, how strongly adversarial probes are drawn to "
            "it, and the smallest trigger that sends other images there", scan)
    add_model_options(s, checkpoint_required=True)
    s.add_argument("--data", required=True, help="zero-shot CSV (image, label) or ImageFolder tree of clean images")
    s.add_argument("--classes", default="imagenet", help="classes JSON, or 'imagenet'")
    add_param_option(s, help=SETTINGS_HELP)
    s.add_argument("--reference", metavar="SCAN.json",
                   help="the scan.json of the model this one was fine-tuned from (e.g. the public pretrained weights), "
                   "scanned on the same --data, --classes and settings: rank classes by the attraction this model adds, "
                   "so that a class every model of the data is drawn to is not taken for a target (default: none)")
    s.add_argument("--before", help="the scan.json of this model before a defense: print the class it suspected, "
                   "before and after (default: none)")
    s.add_argument("--out", help="folder for scan.json and inverted_triggers.png (default: print only)")
    s.add_argument("--overwrite", action="store_true", help="replace an --out folder tacleaner created")
    add_device_option(s)


def scan(args: argparse.Namespace) -> int:
    from tacleaner import findings
    from tacleaner.data.zeroshot import read_classes, read_zeroshot
    from tacleaner.environment import resolve_device
    from tacleaner.fileio import prepare_run_dir, read_json, write_json
    from tacleaner.params import build
    from tacleaner.scan import ScanConfig, format_report, frame_images, read_reference, save_triggers
    from tacleaner.scan import scan as run_scan

    before = read_json(args.before) if args.before else None
    classes = read_classes(args.classes)
    data = read_zeroshot(args.data, classes)
    cfg = build(ScanConfig, parse_params(args.param), "scan --param")
    reference = (read_reference(read_json(args.reference), cfg, classes.classnames, args.reference)
                 if args.reference else None)
    device = resolve_device(args.device)
    bundle = load_bundle(args)
    if args.out:
        check_inputs_outside(args.out, [args.checkpoint, args.data, args.classes, args.before, args.reference])
    out = prepare_run_dir(args.out, overwrite=args.overwrite, resumable=False) if args.out else None
    report, triggers = run_scan(bundle, data, classes, cfg, device, reference, args.reference)
    decision = findings.decide(report)
    result = {**report.to_json(), "decision": decision.to_json()}
    print(format_report(report))
    print(f"decision: {decision.sentence()}")
    print(findings.reliability_line("scan_reference" if reference is not None else "scan"))
    if before is not None:
        result["before_after"] = findings.before_after(before, report, args.before)
        print(findings.before_after_line(result["before_after"]))
        print(findings.reliability_line("cleaning"))
    if out is not None:
        write_json(out / "scan.json", result)
        example, _ = frame_images(bundle, data, 1)
        save_triggers(triggers, example[0], out / "inverted_triggers.png")
        print(f"wrote {out / 'scan.json'} and {out / 'inverted_triggers.png'}")
    return 0
