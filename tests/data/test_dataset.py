"""Batches for training and evaluation: seeded order, worker determinism, clean worker errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.data_builders import make_folder, save_mask

from deeplabcli.config import Preprocessing
from deeplabcli.data import FolderDataset, Sample, SeededSampler, SegmentationLoader, sample_seed
from deeplabcli.data.transforms import EvalTransform, TrainTransform
from deeplabcli.errors import LabelValueError


@pytest.fixture
def folder(tmp_path: Path) -> FolderDataset:
    return FolderDataset(make_folder(tmp_path / "ds", [f"im{i}" for i in range(6)]))


def test_sample_seed_is_a_pure_mixing_function() -> None:
    assert sample_seed(0, 1, 5) == sample_seed(0, 1, 5)
    seeds = {sample_seed(s, k, p) for s in range(3) for k in range(2) for p in range(50)}
    assert len(seeds) == 300
    assert all(0 <= s < 2**63 for s in seeds)


def test_seeded_sampler_epochs_resume_and_ranks() -> None:
    full = list(SeededSampler(5, seed=3, total=23))
    assert len(full) == 23
    for epoch in range(4):
        assert sorted(i for i, _ in full[epoch * 5 : epoch * 5 + 5]) == list(range(5))
    assert [i for i, _ in full[:5]] != [i for i, _ in full[5:10]]  # reshuffled each epoch
    assert list(SeededSampler(5, seed=3, total=23, start=12)) == full[12:]
    ranks = [list(SeededSampler(5, seed=3, total=23, rank=r, world_size=2)) for r in (0, 1)]
    assert ranks[0] == full[0::2] and ranks[1] == full[1::2]
    resumed = list(SeededSampler(5, seed=3, total=23, start=8, rank=1, world_size=2))
    assert resumed == full[9::2]
    assert [i for i, _ in SeededSampler(3, seed=0, total=6, shuffle=False)] == [0, 1, 2, 0, 1, 2]
    assert list(SeededSampler(5, seed=4, total=23)) != full


def test_training_batches_are_identical_with_and_without_workers(folder: FolderDataset) -> None:
    train = folder.with_transform(TrainTransform(Preprocessing(), crop_size=16))
    assert folder.transform is None  # with_transform copies

    def batches(workers: int) -> list[dict]:
        loader = SegmentationLoader(
            train, batch_size=4, sampler=SeededSampler(len(train), 11, 12), num_workers=workers
        )
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert a["image"].shape == (4, 3, 16, 16) and a["mask"].dtype == torch.int64
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["index"], b["index"])


def test_transform_without_seed_is_refused(folder: FolderDataset) -> None:
    train = folder.with_transform(TrainTransform(Preprocessing(), crop_size=16))
    with pytest.raises(ValueError, match="index the data set with \\(index, seed\\)"):
        train[0]
    item = folder.with_transform(EvalTransform())[2]
    assert item["image"].shape == (3, 20, 30) and item["index"] == 2


def test_evaluation_batches_are_lists_of_whole_samples(folder: FolderDataset) -> None:
    loader = SegmentationLoader(folder, batch_size=4, num_workers=2)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 2]
    assert all(isinstance(s, Sample) for s in batches[0])
    assert [s.id for b in batches for s in b] == folder.ids


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_file_in_a_worker_stops_with_its_one_line_error(
    folder: FolderDataset, workers: int
) -> None:
    save_mask(folder.mask_paths[4], np.full((20, 30), 9, dtype=np.uint8), "L")
    loader = SegmentationLoader(folder, batch_size=2, num_workers=workers)
    seen = []
    with pytest.raises(LabelValueError) as error:
        for batch in loader:
            seen.extend(s.id for s in batch)
    assert str(error.value) == (
        f"{folder.mask_paths[4]} has label values outside 0..2 and 255: 9. "
        "Fix the mask, or check that the data set has 3 classes."
    )
    assert seen == ["im0", "im1", "im2", "im3"]
