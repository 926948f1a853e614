"""The command line's contract, table-driven: every bad invocation exits non-zero with exactly
one line on stderr, no traceback, and leaves every existing file as it was."""
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from tacleaner_cli import main

GOOD_RUN = {
    "name": "c", "model": {"name": "tacleaner-tiny-rn"},
    "data": {"synth": {"pretrain": 64, "implant": 64, "clean": 32, "zeroshot_per_class": 1}},
    "attacks": [{"name": "blended", "target": "red circle", "num": 4}],
    "defenses": [{"name": "finetune"}],
}


def with_(**changes):
    cfg = json.loads(json.dumps(GOOD_RUN))
    for dotted, value in changes.items():
        node, *path, last = dotted.split("__")
        target = cfg[node] if path or last else cfg
        for p in path:
            target = target[p] if not isinstance(target, list) else target[int(p)]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return cfg


CONFIGS = {
    "unknown_key": {**GOOD_RUN, "bogus": 1},
    "defense_type": with_(defenses__0__params={"w_inmodal": "abc"}),
    "defense_bool": {**GOOD_RUN, "defenses": [{"name": "cleanclip", "params": {"eda_redraw": "maybe"}}]},
    "unknown_defense": {**GOOD_RUN, "defenses": [{"name": "nope"}]},
    "attack_param": {**GOOD_RUN, "attacks": [{"name": "blended", "target": "red circle", "num": 4,
                                             "params": {"alpha": "strong"}}]},
    "seeds_text": {**GOOD_RUN, "seeds": "0,1"},
    "seeds_key": {**GOOD_RUN, "seeds": {"implants": [0]}},
    "train_type": {**GOOD_RUN, "train": {"lr": "fast"}},
    "train_unknown": {**GOOD_RUN, "train": {"learning_rate": 1e-3}},
    "synth_type": {**GOOD_RUN, "data": {"synth": {"pretrain": "many"}}},
    "model_name": {**GOOD_RUN, "model": {"name": "no-such-model"}},
    "model_key": {**GOOD_RUN, "model": {"name": "tacleaner-tiny-rn", "weights": "x"}},
    "data_missing": {**GOOD_RUN, "data": {"implant": "nope.csv", "clean": "nope.csv", "zeroshot": "nope.csv",
                                          "classes": "imagenet"}},
    "tacleaner_k": {**GOOD_RUN, "defenses": [{"name": "tacleaner", "params": {"k": 11}}]},
    "reserved_id": {**GOOD_RUN, "defenses": [{"name": "finetune", "id": "none"}]},
    "eval_batch": {**GOOD_RUN, "eval_batch_size": 0},
    "attack_num_text": {**GOOD_RUN, "attacks": [{"name": "blended", "target": "red circle", "num": "many"}]},
    "attack_missing_target": {**GOOD_RUN, "attacks": [{"name": "blended", "num": 4}]},
    "defense_params_list": {**GOOD_RUN, "defenses": [{"name": "finetune", "params": [1, 2]}]},
    # names that become folders stay inside the run folder
    "attack_id_traversal": {**GOOD_RUN, "attacks": [{"name": "blended", "id": "../../escape", "target": "red circle",
                                                    "num": 4}]},
    "defense_id_slash": {**GOOD_RUN, "defenses": [{"name": "finetune", "id": "a/b"}]},
    "name_traversal": {**GOOD_RUN, "name": "../../escape"},
    "no_attacks": {**GOOD_RUN, "attacks": []},
    "train_lr_infinite": {**GOOD_RUN, "train": {"lr": float("inf")}},
    "seed_negative": {**GOOD_RUN, "seeds": [-1]},
    "model_seed_negative": {**GOOD_RUN, "model": {"name": "tacleaner-tiny-rn", "seed": -1}},
    "target_unknown": {**GOOD_RUN, "attacks": [{"name": "blended", "target": "purple elephant", "num": 4}]},
    "data_folder": {**GOOD_RUN, "data": {"implant": ".", "clean": ".", "zeroshot": ".", "classes": "imagenet"}},
    "num_beyond_data": {**GOOD_RUN, "attacks": [{"name": "blended", "target": "red circle", "num": 65}]},
    "train_device_missing": {**GOOD_RUN, "train": {"device": "cuda:99"}},
}

CASES = {
    # typed and validated parameters
    "param_not_a_number": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                          "--classes {w}/classes.json --param patch_frac=abc",
    "param_not_a_bool": "clean --defense cleanclip --checkpoint {s}/none.safetensors --data {w}/clean.csv "
                        "--out {s}/c1 --param eda_redraw=maybe",
    "param_float_text": "clean --defense cleanclip --checkpoint {s}/none.safetensors --data {w}/clean.csv "
                        "--out {s}/c1 --param w_inmodal=abc",
    "param_unknown": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                     "--classes {w}/classes.json --param bogus=1",
    "param_no_equals": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                       "--classes {w}/classes.json --param patch_frac",
    "param_out_of_range": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                          "--classes {w}/classes.json --param patch_frac=5",
    "param_bad_choice": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                        "--classes {w}/classes.json --param location=nowhere",
    "tacleaner_k_count_as_fraction": "clean --defense tacleaner --checkpoint {s}/none.safetensors "
                                     "--data {w}/clean.csv --out {s}/c1 --param k=5",
    "negative_source": "clean --defense tacleaner --checkpoint {s}/none.safetensors --data {w}/clean.csv "
                       "--out {s}/c1 --param negative_sources=bogus",
    "int_option_text": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 --epochs abc",
    "float_option_text": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 --lr x",
    "synth_size_text": "synth --out {s}/w1 --image-size big",
    "train_config_missing": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 "
                            "--config {s}/missing.yaml",
    "train_config_unknown": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 "
                            "--config {s}/train_unknown.yaml",
    "train_config_type": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 "
                         "--config {s}/train_type.yaml",
    # no silently ignored input
    "trigger_with_attack": "evaluate --checkpoint {s}/none.safetensors --data {w}/zeroshot.csv "
                           "--classes {w}/classes.json --trigger {s}/poisoned --attack sig",
    "trigger_with_param": "evaluate --checkpoint {s}/none.safetensors --data {w}/zeroshot.csv "
                          "--classes {w}/classes.json --trigger {s}/poisoned --param bogus=1",
    "param_without_attack": "evaluate --checkpoint {s}/none.safetensors --data {w}/zeroshot.csv "
                            "--classes {w}/classes.json --param alpha=0.3",
    "target_without_attack": "evaluate --checkpoint {s}/none.safetensors --data {w}/zeroshot.csv "
                             "--classes {w}/classes.json --target 1",
    "attack_without_target": "evaluate --model tacleaner-tiny-rn --data {w}/zeroshot.csv "
                             "--classes {w}/classes.json --attack blended",
    "init_and_pretrained": "train --data {w}/pretrain.csv --init {s}/none.safetensors --pretrained openai "
                           "--out {s}/t1",
    "train_without_model": "train --data {w}/pretrain.csv --out {s}/t1",
    "pretrained_with_checkpoint": "evaluate --checkpoint {s}/none.safetensors --pretrained openai "
                                  "--data {w}/zeroshot.csv --classes {w}/classes.json",
    "resume_and_overwrite": "clean --defense finetune --checkpoint {s}/none.safetensors --data {w}/clean.csv "
                            "--out {s}/c1 --resume --overwrite",
    "clean_model_unused": "poison --data {w}/implant.csv --attack blended --target 1 --num 2 --out {s}/p1 "
                          "--classes {w}/classes.json --clean-model {s}/none.safetensors",
    "model_without_clean_model": "poison --data {w}/implant.csv --attack blended --target 1 --num 2 --out {s}/p1 "
                                 "--classes {w}/classes.json --model RN50",
    "show_trigger_run_with_target": "show-trigger --trigger {s}/poisoned --data {w}/zeroshot.csv --out {s}/x.png "
                                    "--target 1",
    # values out of range
    "epochs_zero": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 --epochs 0",
    "batch_of_one": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 --batch-size 1",
    "negative_lr": "clean --defense finetune --checkpoint {s}/none.safetensors --data {w}/clean.csv --out {s}/c1 "
                   "--lr -1",
    "bad_device": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 --device gpu0",
    "eval_batch_zero": "evaluate --model tacleaner-tiny-rn --data {w}/zeroshot.csv --classes {w}/classes.json "
                       "--batch-size 0",
    "show_num_zero": "show-trigger --attack blended --data {w}/zeroshot.csv --out {s}/x.png --num 0",
    "subtexts_negative_m": "subtexts --captions {s}/mine/notes.txt --m -1",
    "synth_tiny_images": "synth --out {s}/w2 --image-size 4",
    "lr_infinite": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 --lr inf",
    "lr_overflow": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 --lr 1e999",
    "param_infinite": "clean --defense cleanclip --checkpoint {s}/none.safetensors --data {w}/clean.csv "
                      "--out {s}/c1 --param w_inmodal=inf",
    "param_empty_value": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                         "--classes {w}/classes.json --param patch_frac=",
    "param_twice": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                   "--classes {w}/classes.json --param patch_frac=0.1 --param patch_frac=0.2",
    "seed_negative_poison": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                            "--classes {w}/classes.json --seed -1",
    "device_bogus": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                    "--classes {w}/classes.json --device bogus",
    "device_missing": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 --device cuda:99",
    "config_duplicate_key": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 "
                            "--config {s}/dup.yaml",
    "config_not_utf8": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/t1 --config {s}/latin1.yaml",
    "param_yaml_syntax": "poison --data {w}/implant.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                         "--classes {w}/classes.json --param 'patch_frac={{'",
    "weight_negative": "clean --defense finetune --checkpoint {s}/none.safetensors --data {w}/clean.csv "
                       "--out {s}/c1 --param w_clip=-1",
    "synth_huge_images": "synth --out {s}/w3 --image-size 100000",
    "resume_user_folder": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/mine --resume",
    "overwrite_own_input": "poison --data {s}/poisoned/data.csv --attack blended --target 1 --num 2 "
                           "--out {s}/poisoned --classes {w}/classes.json --overwrite",
    "show_amplify_infinite": "show-trigger --attack blended --data {w}/zeroshot.csv --out {s}/x.png --amplify inf",
    # messages that name the actual problem
    "checkpoint_missing": "clean --defense finetune --checkpoint {s}/none.safetensors --data {w}/clean.csv "
                          "--out {s}/c1",
    "checkpoint_is_folder": "evaluate --checkpoint {s}/mine --data {w}/zeroshot.csv --classes {w}/classes.json",
    "csv_missing": "poison --data {s}/nope.csv --attack badnet --target 1 --num 2 --out {s}/p1 "
                   "--classes {w}/classes.json",
    "csv_wrong_columns": "train --data {w}/zeroshot.csv --model tacleaner-tiny-rn --out {s}/t1",
    "target_unknown": "poison --data {w}/implant.csv --attack badnet --target 'purple elephant' --num 2 "
                      "--out {s}/p1 --classes {w}/classes.json",
    "negative_num": "poison --data {w}/implant.csv --attack badnet --target 1 --num -1 --out {s}/p1 "
                    "--classes {w}/classes.json",
    "attack_unknown": "poison --data {w}/implant.csv --attack nope --target 1 --num 2 --out {s}/p1 "
                      "--classes {w}/classes.json",
    "defense_unknown": "clean --defense nope --checkpoint {s}/none.safetensors --data {w}/clean.csv --out {s}/c1",
    "classes_missing": "evaluate --model tacleaner-tiny-rn --data {w}/zeroshot.csv --classes {s}/nope.json",
    "zeroshot_missing": "evaluate --model tacleaner-tiny-rn --data {s}/nope.csv --classes {w}/classes.json",
    "captions_missing": "subtexts --captions {s}/nope.txt",
    "show_trigger_out_folder": "show-trigger --attack blended --data {w}/zeroshot.csv --out {s}/mine",
    "command_unknown": "bogus",
    "option_unknown": "defenses --bogus",
    "option_abbreviated": "evaluate --check {s}/none.safetensors --data {w}/zeroshot.csv --classes {w}/classes.json",
    "jobs_zero": "run {s}/good.yaml --out {s}/r1 --jobs 0",
    # a safe --overwrite and folders that are never reused silently
    "overwrite_user_folder_poison": "poison --data {w}/implant.csv --attack blended --target 1 --num 2 "
                                    "--out {s}/mine --classes {w}/classes.json --overwrite",
    "overwrite_user_folder_train": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/mine "
                                   "--overwrite --epochs 1",
    "overwrite_user_folder_synth": "synth --out {s}/mine --overwrite --pretrain 8 --implant 8 --clean 8",
    "overwrite_user_folder_run": "run {s}/good.yaml --out {s}/mine --overwrite",
    "poison_exists": "poison --data {w}/implant.csv --attack blended --target 1 --num 2 --out {s}/poisoned "
                     "--classes {w}/classes.json",
    "out_is_a_file": "train --data {w}/pretrain.csv --model tacleaner-tiny-rn --out {s}/mine/notes.txt",
    "evaluate_out_user_file": "evaluate --model tacleaner-tiny-rn --data {w}/zeroshot.csv --classes {w}/classes.json "
                              "--out {s}/mine/notes.txt",
    "evaluate_overwrite_without_out": "evaluate --model tacleaner-tiny-rn --data {w}/zeroshot.csv "
                                      "--classes {w}/classes.json --overwrite",
    "show_trigger_out_user_file": "show-trigger --attack blended --data {w}/zeroshot.csv --out {s}/mine/notes.txt",
    "export_over_its_checkpoint": "export --checkpoint {s}/mine/notes.txt --out {s}/mine/notes.txt --overwrite",
    # experiment configs validated before any stage starts
    "run_missing": "run {s}/missing.yaml",
    **{f"run_{name}": f"run {{s}}/{name}.yaml --out {{s}}/r_{name}" for name in CONFIGS},
}


def snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for f in sorted(root.rglob("*")):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def sandbox(world, tmp_path_factory):
    s = tmp_path_factory.mktemp("contract")
    (s / "mine").mkdir()
    (s / "mine" / "notes.txt").write_text("a user's own file\n")
    (s / "mine" / "data.csv").write_text("image,caption\n")
    assert main(["--quiet", "poison", "--data", str(world / "implant.csv"), "--attack", "blended", "--target", "1",
                 "--num", "4", "--out", str(s / "poisoned"), "--classes", str(world / "classes.json")]) == 0
    (s / "good.yaml").write_text(yaml.safe_dump(GOOD_RUN))
    for name, cfg in CONFIGS.items():
        (s / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    (s / "train_unknown.yaml").write_text("learning_rate: 0.1\n")
    (s / "train_type.yaml").write_text("lr: fast\n")
    (s / "dup.yaml").write_text("lr: 0.1\nlr: 0.2\n")
    (s / "latin1.yaml").write_bytes("lr: 0.1 # caf\xe9\n".encode("latin-1"))
    return s


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_invocation_is_one_clean_line(case, sandbox, world, capsys):
    import shlex

    before = snapshot(sandbox, world)
    argv = shlex.split(CASES[case].format(s=sandbox, w=world))
    code = main(argv)
    err = capsys.readouterr().err
    assert code not in (0, 1), (case, code, err)  # 1 would be an unexpected error
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
    assert "Traceback" not in err and ".py" not in err.replace(".yaml", ""), (case, err)
    assert snapshot(sandbox, world) == before, case


def test_overwrite_replaces_our_own_folder_only(sandbox, world, tmp_path):
    poisoned = tmp_path / "p"
    args = ["--quiet", "poison", "--data", str(world / "implant.csv"), "--attack", "blended", "--target", "1",
            "--num", "4", "--out", str(poisoned), "--classes", str(world / "classes.json")]
    assert main(args) == 0 and (poisoned / ".tacleaner").is_file()
    assert main(args + ["--overwrite", "--seed", "3"]) == 0
    assert json.loads((poisoned / "manifest.json").read_text())["seed"] == 3
    assert (sandbox / "mine" / "notes.txt").read_text() == "a user's own file\n"


def test_interrupted_poisoning_leaves_no_folder(world, tmp_path, capsys):
    """A bad image stops poisoning; the output folder is absent, the error names row and file."""
    lines = (world / "implant.csv").read_text().splitlines()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    rows = [lines[0]] + [f"{(world / line.split(',')[0]).resolve()},{line.split(',', 1)[1]}" for line in lines[1:20]]
    rows.append(f"{broken},a red circle")
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "poison"
    code = main(["--quiet", "poison", "--data", str(data), "--attack", "blended", "--target", "1", "--num", "20",
                 "--out", str(out), "--classes", str(world / "classes.json")])
    err = capsys.readouterr().err
    assert code == 2 and "row 21" in err and "broken.png" in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".poison")]  # no staging leftovers


def test_global_options_before_or_after_the_command(capsys):
    assert main(["attacks", "--quiet"]) == 0 and main(["--quiet", "attacks"]) == 0
    assert "badnet" in capsys.readouterr().out


def test_help_shows_every_default():
    from tacleaner_cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    checked = 0
    for name, p in sub.choices.items():
        formatter = p._get_formatter()
        for action in p._actions:
            if action.option_strings and not action.required and action.dest not in ("help", "quiet", "resume",
                                                                                       "overwrite"):
                text = formatter._get_help_string(action) or ""
                if action.const is None:  # options that take a value say their default
                    assert "default" in text, (name, action.option_strings[-1], text)
                    checked += 1
    assert checked > 80


def test_yaml_paths_resolve_against_the_yaml_folder(world, tmp_path, monkeypatch):
    from tacleaner.experiment import load_config

    sub = tmp_path / "cfg"
    sub.mkdir()
    import shutil

    for name in ("implant.csv", "clean.csv", "zeroshot.csv", "classes.json"):
        shutil.copy(world / name, sub / name)
    raw = {**GOOD_RUN, "data": {"implant": "implant.csv", "clean": "clean.csv", "zeroshot": "zeroshot.csv",
                                "classes": "classes.json"}}
    (sub / "grid.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    cfg, saved = load_config("cfg/grid.yaml")
    assert Path(cfg.data["implant"]) == (sub / "implant.csv").resolve()
    assert saved["data"]["classes"] == str((sub / "classes.json").resolve())


def test_warnings_are_one_line_without_source_paths(capsys):
    from tacleaner.console import show_warning

    show_warning(UserWarning("ASR@10 over 3 classes says little\nsecond line"), UserWarning, "/x/evaluate.py", 104)
    err = capsys.readouterr().err
    assert err == "warning: ASR@10 over 3 classes says little\n"
