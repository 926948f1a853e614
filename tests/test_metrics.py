"""CA and ASR@k on hand-computed cases, and target exclusion on a real evaluation."""
import math

import pytest
import torch

from tacleaner.attacks import create_attack
from tacleaner.data.zeroshot import read_classes, read_zeroshot
from tacleaner.evaluate import attack_success_rate, build_classifier, evaluate, top1_accuracy


def test_top1_accuracy_hand_computed():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.0, 0.0, 1.0]])
    assert top1_accuracy(logits, torch.tensor([0, 1, 2, 2])) == 0.75


def test_asr_counts_target_in_top_k():
    target = 2
    logits = torch.tensor([
        [0.1, 0.2, 0.9, 0.0],  # target first
        [0.9, 0.1, 0.5, 0.0],  # target second
        [0.9, 0.8, 0.1, 0.7],  # target last
        [0.3, 0.9, 0.2, 0.1],  # target third
    ])
    assert attack_success_rate(logits, target, 1) == 0.25
    assert attack_success_rate(logits, target, 2) == 0.5
    assert attack_success_rate(logits, target, 3) == 0.75
    assert attack_success_rate(logits, target, 10) == 1.0  # k capped at the class count
    assert math.isnan(attack_success_rate(torch.empty(0, 4), target, 1))


def test_classifier_is_normalised_template_mean(world, tiny):
    classes = read_classes(world / "classes.json")
    w = build_classifier(tiny, classes, torch.device("cpu"))
    assert w.shape == (128, len(classes.classnames))
    assert torch.allclose(w.norm(dim=0), torch.ones(w.shape[1]), atol=1e-5)
    tokens = tiny.tokenizer([t.format(classes.classnames[3]) for t in classes.templates])
    with torch.no_grad():
        e = tiny.model.encode_text(tokens, normalize=True).mean(0)
    assert torch.allclose(w[:, 3], e / e.norm(), atol=1e-5)


def test_evaluate_excludes_target_images(world, tiny):
    classes = read_classes(world / "classes.json")
    data = read_zeroshot(world / "zeroshot.csv", classes)
    res = evaluate(tiny, data, classes, attack=create_attack("badnet"), target="yellow star")
    n_target = sum(1 for y in data.labels if y == classes.index("yellow star"))
    assert n_target == 2
    assert res["num_asr_images"] == len(data) - n_target
    assert res["target"] == "yellow star" and res["target_index"] == classes.index("yellow star")
    for key in ("clean_acc", "asr_at_1", "asr_at_10"):
        assert 0.0 <= res[key] <= 1.0
    assert res["asr_at_10"] >= res["asr_at_1"]


def test_numbered_image_folders_sort_as_numbers(tmp_path):
    """ImageNet-V2 names its class folders 0..999: folder "10" is class 10, not the third in
    text order ("0", "1", "10", "11", "2", ...)."""
    from PIL import Image

    from tacleaner.data.zeroshot import Classes

    classes = Classes([f"class {i}" for i in range(12)], ["a photo of a {}."])
    for i in range(12):
        (tmp_path / str(i)).mkdir()
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / str(i) / f"img{i}.png")
    data = read_zeroshot(tmp_path, classes)
    by_file = {p.name: label for p, label in zip(data.images, data.labels)}
    assert by_file == {f"img{i}.png": i for i in range(12)}


def test_evaluation_matches_per_image_classification_and_workers(world, trained):
    """The one-decode pass gives, image by image, the logits of classifying the clean image and
    its triggered version separately; decoding in worker processes changes nothing."""
    from tacleaner.data.pairs import load_image

    classes = read_classes(world / "classes.json")
    data = read_zeroshot(world / "zeroshot.csv", classes)
    attack = create_attack("badnet", patch_frac=0.25, location="bottom-right")
    res = evaluate(trained, data, classes, attack=attack, target="yellow star", batch_size=16)
    assert evaluate(trained, data, classes, attack=attack, target="yellow star", batch_size=16,
                    num_workers=2) | {"images_per_s": None} == res | {"images_per_s": None}
    w = build_classifier(trained, classes, torch.device("cpu"))
    t = classes.index("yellow star")
    with torch.no_grad():
        correct = hits = n = 0
        for i, (path, y) in enumerate(zip(data.images, data.labels)):
            image = load_image(path)
            clean = trained.model.encode_image(trained.preprocess(image)[None], normalize=True) @ w
            correct += int(clean.argmax() == y)
            if y != t:
                trig = trained.model.encode_image(trained.preprocess(attack.apply(image, i, 32))[None], normalize=True) @ w
                hits += int(trig.argmax() == t)
                n += 1
    assert res["clean_acc"] == pytest.approx(correct / len(data))
    assert res["asr_at_1"] == pytest.approx(hits / n)
    assert res["images_per_s"] > 0


def test_wordnet_id_folders_map_to_imagenet_indices_whole_or_subset(tmp_path):
    """ImageNet-A / -R keep 200 of the 1,000 WordNet-id folders: each folder gets its own
    ImageNet-1K index (the shipped id list agrees with open_clip's class names), and
    present_classes narrows the classifier to the classes the data has."""
    from PIL import Image

    from tacleaner.data.zeroshot import imagenet_classes, imagenet_wnids, present_classes

    classes = imagenet_classes()
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and classes.classnames[wnids["n07753592"]] == "banana" == classes.classnames[954]
    assert classes.classnames[wnids["n01443537"]] == "goldfish"
    for w in ("n01443537", "n07753592", "n15075141"):
        (tmp_path / w).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / w / "a.jpg")
    data = read_zeroshot(tmp_path, classes)
    assert data.labels == [1, 954, 999]
    sub, sub_classes = present_classes(data, classes)
    assert sub.labels == [0, 1, 2] and sub_classes.classnames[1] == "banana"
    assert sub_classes.templates == classes.templates


def test_a_duplicated_class_is_named_with_both_places(tmp_path):
    import json

    from tacleaner.data.zeroshot import read_classes
    from tacleaner.errors import TacleanerError

    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"classnames": ["cat", "dog", "red star", "dog"]}))
    with pytest.raises(TacleanerError, match=r"classes.json: class names are not unique: 'dog' is class 1 and class 3"):
        read_classes(path)
