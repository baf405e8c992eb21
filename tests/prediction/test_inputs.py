"""deeplabcli.prediction.inputs: a mask path that is one of the inputs is never planned (issue
13 §1), whatever name leads to it; planning itself writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from support.hashes import tree_hashes

from deeplabcli.prediction.inputs import plan_outputs


def photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def replaces(source: Path, out: Path, other: Path) -> str:
    return (
        f"{source}: its mask {out} would replace the input {other}, which is never "
        "overwritten. Choose another output location with -o."
    )


def itself(source: Path) -> str:
    return (
        f"{source}: its mask would replace the image itself. Choose another output location "
        "with -o."
    )


def test_a_mask_in_an_output_folder_that_is_another_input(tmp_path: Path) -> None:
    q = tmp_path / "q"
    jpg, png = photo(q / "x.jpg"), photo(q / "x.png", seed=1)
    before = tree_hashes(tmp_path)
    jobs, problems = plan_outputs([str(jpg), str(png)], str(q))
    assert jobs == []
    assert problems == [(str(jpg), replaces(jpg, q / "x.png", png)), (str(png), itself(png))]
    assert tree_hashes(tmp_path) == before


def test_a_mask_next_to_its_image_that_is_another_input(tmp_path: Path) -> None:
    q2 = tmp_path / "q2"
    a, mask = photo(q2 / "a.jpg"), photo(q2 / "a_mask.png", seed=1)
    jobs, problems = plan_outputs([str(a), str(mask)], None)
    assert [(j.source, j.output) for j in jobs] == [(mask, q2 / "a_mask_mask.png")]
    assert problems == [(str(a), replaces(a, mask, mask))]


def test_links_and_other_spellings_of_an_input_are_that_input(tmp_path: Path) -> None:
    a = photo(tmp_path / "in" / "a.jpg")
    (tmp_path / "alias.png").symlink_to(a)
    os.link(a, tmp_path / "hard.png")
    for name in ("alias.png", "hard.png"):
        _, problems = plan_outputs([str(a)], str(tmp_path / name))
        assert problems == [(str(a), itself(a))], name
    photo(tmp_path / "in" / "a.png", seed=2)
    spelled = tmp_path / "in" / ".." / "in" / "a.png"
    jobs, problems = plan_outputs([str(a), str(spelled)], str(tmp_path / "in"))
    assert jobs == []
    assert problems == [(str(a), replaces(a, tmp_path / "in" / "a.png", spelled)),
                        (str(spelled), itself(spelled))]  # fmt: skip


def test_an_existing_file_that_is_not_an_input_may_be_replaced(tmp_path: Path) -> None:
    a = photo(tmp_path / "a.jpg")
    old = photo(tmp_path / "out" / "a.png", seed=3)  # an earlier mask: --overwrite may replace it
    jobs, problems = plan_outputs([str(a)], str(tmp_path / "out"))
    assert [(j.source, j.output) for j in jobs] == [(a, old)] and problems == []
