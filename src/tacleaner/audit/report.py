"""The audit's report: one content (``report.json``) rendered as ``report.md`` and as
``report.html``, a single self-contained file (pictures embedded, no script, no network) that
opens offline in a browser. It leads with the decision in one sentence; every finding carries
how reliable it is (the measured rates of ``configs/reliability.json``) and the command that
reproduces it."""
from __future__ import annotations

import base64
import html
import shlex
import time
from pathlib import Path
from typing import Any

from PIL import Image

from .. import findings
from ..data.pairs import load_image
from ..fileio import atomic_path, write_json, write_text
from ..selection import CaBudget
from .cleaning import Candidate

THUMB = 96  # pixels, the suspicious pairs' thumbnails


def q(path: Any) -> str:
    return shlex.quote(str(path))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(lo_hi: list[float]) -> str:
    return f"[{100 * lo_hi[0]:.1f}, {100 * lo_hi[1]:.1f}]"


def scan_finding(inputs, split: dict[str, str], scan: dict[str, Any]) -> dict[str, Any]:
    d = scan["decision"]
    ref = scan.get("reference") is not None
    rows = [[c["name"], _pct(c["attraction"]), *([_pct(c["reference_attraction"])] if ref else []), f"{c['anomaly']:.1f}"]
            for c in scan["classes"][:5]]
    base = f" --reference {q(scan['reference'])}" if ref else ""
    text = [f"Decision: {d['sentence']}.",
            "Adversarial probes (small perturbations and free patches of the validation images) are drawn toward a "
            "backdoor's target far more than toward other classes. The anomaly index is the class's robust z-score "
            + ("of the attraction gained over the base model." if ref else "over all classes.")]
    return {"id": "scan", "title": "Does the model carry a backdoor?", "text": text,
            "table": {"header": ["class", "attraction", *(["on the base model"] if ref else []), "anomaly index"],
                      "rows": rows},
            "figures": [{"path": "scan/inverted_triggers.png",
                         "caption": f"The smallest trigger found that sends other images to {d['target']}: its mask, "
                                    "its pattern, and an example image with it applied."}],
            "reliability": findings.reliability_line("scan_reference" if ref else "scan"),
            "command": (f"tacleaner scan --checkpoint {q(inputs.checkpoint)} --data {q(split['validation'])} "
                        f"--classes {q(inputs.classes)} --param images={inputs.scan_images} --param top=1{base}")}


def detect_finding(inputs, detected: dict[str, Any], out: Path) -> dict[str, Any]:
    rows = detected["rows"]
    figures = [{"path": "detect/histogram.png",
                "caption": "Every pair's score; pairs right of the line were left out of detect/clean.csv."}]
    thumbs = thumbnails(detected["suspicious"], out, "detect/suspicious")
    text = [f"{detected['removed']:,} of {rows:,} training pairs score at or above the cut (robust z-score "
            f"{detected['z']:g} over all scores: no poison rate needed) and were left out of detect/clean.csv "
            f"({detected['kept']:,} kept).",
            "The score adds two signals: how long the image's feature is (triggers lengthen it) and how far the "
            "image is from its own caption (poisoned captions name the target, not what the image shows)."]
    groups = [{"title": "the 20 highest scores", "items": thumbs}]
    target = detected.get("target")
    if target is not None:
        text.append(f"{target['flagged_naming']:,} of the flagged pairs name the suspected class, {target['name']} "
                    f"({target['naming']:,} pairs name it in all): a poisoned caption names the target. The highest "
                    "scores among them are shown below the first 20.")
        groups.append({"title": f"the highest scores among flagged pairs naming {target['name']}",
                       "items": thumbnails(target["suspicious"], out, "detect/naming_target")})
    return {"id": "detect", "title": "Which training pairs look poisoned?", "text": text, "figures": figures,
            "thumbnails": [t for g in groups for t in g["items"]], "groups": groups,
            "reliability": findings.reliability_line("detect"),
            "command": f"tacleaner detect --checkpoint {q(inputs.checkpoint)} --data {q(inputs.data)} --out DIR"}


def thumbnails(pairs: list[dict[str, Any]], out: Path, folder: str) -> list[dict[str, Any]]:
    """Each pair's image as a small PNG under ``out/folder`` (written once), with its caption."""
    thumbs = []
    for k, s in enumerate(pairs):
        rel = f"{folder}/{k:02d}.png"
        if not (out / rel).is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            image = load_image(s["image"]).convert("RGB")
            image.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
            with atomic_path(out / rel) as tmp:
                image.save(tmp, format="PNG")
        thumbs.append({"path": rel, "caption": s["caption"], "row": s["row"], "score": s["score"]})
    return thumbs


def cleaning_findings(inputs, split: dict[str, str], cleaned: dict[str, Any]) -> list[dict[str, Any]]:
    change = cleaned["scan_after"]["before_after"]
    fell = change["attraction_after"] < change["attraction_before"]
    pick = Candidate(cleaned["defense"], cleaned["lr"])
    rows = []
    for sel in cleaned["selections"]:
        for c in sel["candidates"]:
            rows.append([c["id"], f"{100 * c['mean']:+.1f}", "chosen" if c["id"] == cleaned["chosen"] else ""])
    within = CaBudget(inputs.ca_budget).keeps(cleaned["val_ca_change"])
    reason = ("the strongest rate, tried from the strongest down, whose validation accuracy stayed within "
              f"{inputs.ca_budget:g} points of the audited model's" if within else
              f"no rate kept validation accuracy within {inputs.ca_budget:g} points of the audited model's, so the "
              "weakest")
    text = [f"The defender's rule chose {pick.defense} at lr {pick.lr:g}: {reason}. Between defenses: "
            f"{cleaned['why_defense']}.",
            f"{change['target']}: attraction {_pct(change['attraction_before'])} -> {_pct(change['attraction_after'])}, "
            f"anomaly index {change['anomaly_before']:.1f} -> {change['anomaly_after']:.1f}: the measure "
            + ("fell." if fell else "did not fall: the cleaning left the pull toward it in place."),
            "The rule reads validation accuracy only; the measure is the scan's and never sees a trigger. A measure "
            "that does not fall is strong evidence the cleaning failed; one that falls is not proof it worked."]
    clean = {"id": "cleaning", "title": "Did cleaning remove it?", "text": text,
             "table": {"header": ["candidate", "validation CA change (points)", ""], "rows": rows},
             "figures": [{"path": f"scan_after/{pick.id}/inverted_triggers.png",
                          "caption": f"After cleaning: the smallest trigger found toward "
                                     f"{cleaned['scan_after']['decision']['target']}."}],
             "reliability": findings.reliability_line("cleaning"),
             "command": pick.command(inputs.checkpoint, inputs.clean_data, "CLEANED", inputs.epochs,
                                     inputs.batch_size)
             + f" && tacleaner scan --checkpoint CLEANED/model.safetensors --data {q(split['validation'])} "
               f"--classes {q(inputs.classes)} --param images={inputs.scan_images} --param top=1 --before SCAN.json"}
    t = cleaned["test_ca"]
    acc = {"id": "accuracy", "title": "What did cleaning cost?",
           "text": [f"Clean zero-shot accuracy on the {t['images']} test-half images (not read by the rule): "
                    f"{_pct(t['before'])} {_ci(t['before_ci'])} before, {_pct(t['after'])} {_ci(t['after_ci'])} after, "
                    f"change {100 * t['change']:+.1f} points {_ci(t['change_ci'])} (95% intervals, a paired "
                    "bootstrap over the images)."],
           "reliability": "exact on these images; the interval is their sampling spread",
           "command": (f"tacleaner evaluate --checkpoint {q(inputs.checkpoint)} --data {q(split['test'])} "
                       f"--classes {q(inputs.classes)}  # and --checkpoint CLEANED/model.safetensors")}
    return [clean, acc]


def lead(scan: dict[str, Any], detected: dict[str, Any] | None, cleaned: dict[str, Any] | None) -> str:
    sentence = scan["decision"]["sentence"]
    parts = [sentence[0].upper() + sentence[1:]]
    if detected is not None:
        named = detected.get("target")
        parts.append(f"{detected['removed']:,} of {detected['rows']:,} training pairs flagged as suspicious"
                     + (f", {named['flagged_naming']:,} of them naming {named['name']}" if named else ""))
    if cleaned is not None:
        change = cleaned["scan_after"]["before_after"]
        t = cleaned["test_ca"]
        verb = "fell" if change["attraction_after"] < change["attraction_before"] else "did not fall"
        parts.append(f"after {cleaned['defense']} at lr {cleaned['lr']:g} the pull toward {change['target']} {verb} "
                     f"({_pct(change['attraction_before'])} -> {_pct(change['attraction_after'])} of the probes) at "
                     f"a clean-accuracy change of {100 * t['change']:+.1f} points")
    return "; ".join(parts) + "."


def build_report(inputs, split: dict[str, str], scan: dict[str, Any], detected: dict[str, Any] | None,
                 cleaned: dict[str, Any] | None, out: Path, device: str) -> dict[str, Any]:
    from ..environment import cpu_model, package_versions

    found = [scan_finding(inputs, split, scan)]
    if detected is not None:
        found.append(detect_finding(inputs, detected, out))
    if cleaned is not None:
        found.extend(cleaning_findings(inputs, split, cleaned))
    return {"title": f"Audit of {Path(inputs.checkpoint).name}", "decision": lead(scan, detected, cleaned),
            "suspected": scan["decision"]["suspected"], "target": scan["decision"]["target"],
            "model": inputs.checkpoint, "base": inputs.base, "labelled_images": inputs.zeroshot,
            "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{cpu_model()} ({device}); torch {package_versions().get('torch')}",
            "version": package_versions().get("tacleaner"), "findings": found,
            "scan": scan, "detect": detected, "cleaning": cleaned}


def _reliability(finding: dict[str, Any]) -> str:
    """``reliability (WHERE): LINE`` as ``LINE (WHERE)``; other text as it is."""
    line = finding["reliability"]
    if line.startswith("reliability (") and "): " in line:
        where, rest = line.removeprefix("reliability (").split("): ", 1)
        return f"{rest} ({where})"
    return line


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['title']}", "", f"**{report['decision']}**", "",
             f"Model `{report['model']}`; made {report['made']} on {report['machine']}.", ""]
    for f in report["findings"]:
        lines += [f"## {f['title']}", ""]
        for t in f["text"]:
            lines += [t, ""]
        if f.get("table"):
            h = f["table"]["header"]
            lines += ["| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in f["table"]["rows"]] + [""]
        for fig in f.get("figures", []):
            lines += [f"![{fig['caption']}]({fig['path']})", "", f"*{fig['caption']}*", ""]
        for g in f.get("groups", []):
            lines += [f"{g['title'][0].upper() + g['title'][1:]}:", "", "| pair | score | caption |", "|---|---|---|"]
            lines += [f"| ![row {t['row']}]({t['path']}) row {t['row']} | {t['score']:.2f} | "
                      f"{t['caption'].replace('|', '/')} |" for t in g["items"]] + [""]
        lines += [f"Reliability: {_reliability(f)}", "", f"Reproduce: `{f['command']}`", ""]
    return "\n".join(lines)


STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
.decision{font-size:1.25rem;padding:1rem;border-left:.4rem solid #b00;background:#fdf2f2}
.decision.clear{border-color:#070;background:#f2fbf2}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}
figure{margin:1rem 0}figure img{max-width:100%;image-rendering:pixelated}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(10rem,1fr));gap:.5rem}
.thumbs figure{margin:0}.thumbs img{width:96px;height:96px;object-fit:contain}
.meta,.reliability{color:#555;font-size:.9rem}code{background:#f4f4f4;padding:.1rem .3rem;word-break:break-all}"""


def _img(out: Path, rel: str, alt: str) -> str:
    data = base64.b64encode((out / rel).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def html_page(report: dict[str, Any], out: Path) -> str:
    e = html.escape
    cls = "decision" if report["suspected"] else "decision clear"
    body = [f"<h1>{e(report['title'])}</h1>", f'<p class="{cls}" id="decision">{e(report["decision"])}</p>',
            f'<p class="meta">Model <code>{e(report["model"])}</code>; made {e(report["made"])} on '
            f"{e(report['machine'])}.</p>"]
    for f in report["findings"]:
        body.append(f'<section id="{e(f["id"])}"><h2>{e(f["title"])}</h2>')
        body += [f"<p>{e(t)}</p>" for t in f["text"]]
        if f.get("table"):
            body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in f["table"]["header"]) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in f["table"]["rows"]]
            body.append("</table>")
        for fig in f.get("figures", []):
            body.append(f"<figure>{_img(out, fig['path'], fig['caption'])}<figcaption>{e(fig['caption'])}"
                        "</figcaption></figure>")
        for g in f.get("groups", []):
            body.append(f"<h3>{e(g['title'][0].upper() + g['title'][1:])}</h3><div class=\"thumbs\">")
            body += [f"<figure>{_img(out, t['path'], t['caption'])}<figcaption>row {t['row']}, score "
                     f"{t['score']:.2f}: {e(t['caption'])}</figcaption></figure>" for t in g["items"]]
            body.append("</div>")
        body.append(f'<p class="reliability">Reliability: {e(_reliability(f))}</p>')
        body.append(f"<p>Reproduce: <code>{e(f['command'])}</code></p></section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(report['title'])}</title><style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def write_reports(report: dict[str, Any], out: Path) -> None:
    """report.json, report.md and report.html, each written atomically."""
    write_json(out / "report.json", report)
    write_text(out / "report.md", markdown(report))
    write_text(out / "report.html", html_page(report, out))
