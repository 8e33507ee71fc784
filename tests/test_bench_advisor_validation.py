"""bench.advisor_validation: the top-N-groups model computes what the backbone computes, and a tiny run writes its results."""

import json

import torch

from bench import advisor_validation as av


def test_top_groups_on_cached_lower_output_match_the_backbone():
    from tlkit.models.vision import load_image_backbone

    backbone = load_image_backbone("efficientnet_lite0", pretrained=False)
    groups = av.backbone_groups(backbone)
    assert len(groups) == 9, "Lite0 has 9 backbone layer groups (stem, 7 stages, final conv)"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = backbone.forward_features(x).mean(dim=(2, 3))
        for n in (0, 1, 4, 9):
            model = av.TopGroups(groups, n, num_classes=3).eval()
            maps = av.lower_output(groups, n, x, torch.device("cpu"))
            for stage in model.stages:
                maps = stage(maps)
            pooled = maps.mean(dim=(2, 3)) if maps.ndim == 4 else maps
            assert torch.allclose(pooled, expected, atol=1e-4), f"top {n} groups on cached maps differ from the full backbone"
            assert [name for name, _ in model.layer_groups()][-1] == "head" and len(model.layer_groups()) == n + 1


def test_tiny_run_writes_json_and_markdown(tmp_path):
    result = av.main(["--datasets", "animals", "--sizes", "3", "--seeds", "0", "--steps", "2", "--image-size", "32",
                      "--eval-per-class", "3", "--threads", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "advisor_validation-cpu.json").read_text())
    cell = saved["cells"][0]
    assert cell["recommended"] in cell["variants"] and set(cell["mean_test_acc"]) == {str(n) for n in cell["variants"]}
    assert 0.0 <= result["hit_rate"] <= 1.0
    text = (tmp_path / "advisor_validation-cpu.md").read_text()
    assert "heuristics" in text and "| animals | 3 |" in text
