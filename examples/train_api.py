# %% [markdown]
# # Training DeepLabv3 from Python
#
# A notebook-style tour of the training API (run it as a script, or cell by cell in an editor
# that understands `# %%`). It needs no downloads: it draws a small data set of coloured shapes,
# trains the tiny test architecture on the CPU for about a minute, interrupts and resumes a run,
# fine-tunes for a new class list, and bootstraps hard images. For the paper's real recipe, swap
# in `data_root="data/VOCdevkit"` and the defaults of `TrainConfig` (see paper_recipe.toml).
#
#     python examples/train_api.py

# %%
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from deeplabcli import TrainConfig, bootstrap_split, finetune, load_model, predict, train
from deeplabcli.training.run_dir import MetricsLog

work = Path(tempfile.mkdtemp(prefix="deeplab-example-"))
print("working in", work)


# %% [markdown]
# ## A custom data set: images/, masks/ (class indices, 255 = ignore) and classes.txt


# %%
def draw(rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Noise with some of: a red square (class 1), a green disc (2), a blue bar (3)."""
    image = rng.normal(128, 40, (size, size, 3))
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    colours = {1: (220, 40, 40), 2: (40, 200, 60), 3: (50, 70, 230)}
    for cls in rng.permutation([1, 2, 3])[: rng.integers(1, 4)]:
        r = int(rng.integers(size // 8, size // 4))
        cy, cx = rng.integers(r, size - r, 2)
        if cls == 1:
            region = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        elif cls == 2:
            region = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            region = (abs(yy - cy) <= r // 3) & (abs(xx - cx) <= r)
        mask[region] = cls
        image[region] = colours[cls]
    return image.clip(0, 255).astype(np.uint8), mask


data = work / "shapes"
for sub in ("images", "masks", "splits"):
    (data / sub).mkdir(parents=True)
(data / "classes.txt").write_text("background\nsquare 220 40 40\ndisc 40 200 60\nbar 50 70 230\n")
rng = np.random.default_rng(0)
for split, count in (("train", 64), ("val", 16)):
    names = [f"{split}_{i:03d}" for i in range(count)]
    for name in names:
        image, mask = draw(rng)
        Image.fromarray(image).save(data / "images" / f"{name}.png")
        Image.fromarray(mask).save(data / "masks" / f"{name}.png")
    (data / "splits" / f"{split}.txt").write_text("\n".join(names) + "\n")

# %% [markdown]
# ## Train
#
# `TrainConfig` holds every option of `deeplab train`; its defaults are the paper's first stage
# (ResNet-101, OS 16, crop 513, batch 16, lr 0.007, 30K iterations). Here: the tiny test
# architecture, random initialisation, 60 short iterations. A run this short needs a faster
# BN momentum than the paper's 0.0003, or the running statistics used at evaluation would
# barely move.

# %%
config = TrainConfig(
    dataset="folder",
    data_root=str(data),
    split="train",
    arch="deeplabv3_tiny",
    init="none",
    output_stride=8,
    crop_size=96,
    batch_size=8,
    lr=0.05,
    iters=60,
    bn_momentum=0.1,
    val_split="val",
    val_every=30,
    log_every=10,
    workers=0,
    device="cpu",
    out=str(work / "run"),
)
result = train(config)
print(f"loss {result.loss:.3f}, val mIoU {result.val_miou:.3f}")
for record in MetricsLog(result.out).records():
    print(record)

# %% [markdown]
# The run directory is a checkpoint: load it like any model and predict.

# %%
model = load_model(result.out)
image, truth = draw(np.random.default_rng(1))
prediction = predict(model, image)  # uint8 (H, W) class indices
print("pixel accuracy on a new image:", float((prediction == truth).mean()))

# %% [markdown]
# ## Resume
#
# `train_state.pt` holds everything needed to continue bit-exactly (optimizer, RNG states,
# iteration). Extending a finished run is a new run; continuing an interrupted one is
# `config.replace(resume=True)` (or `deeplab train --out RUN --resume`).

# %%
again = train(config.replace(resume=True))
print("already finished:", again.iteration)

# %% [markdown]
# ## Fine-tune for other classes
#
# A checkpoint trained for 4 classes, fine-tuned on a data set with 3 (a new classes file):
# only the classifier is re-initialised, everything else is loaded. The defaults are the
# paper's second stage (BN frozen, OS 8, lr 0.001).

# %%
merged = work / "merged"
(merged / "images").mkdir(parents=True)
(merged / "masks").mkdir()
(merged / "classes.txt").write_text("background\nred\nnot-red\n")
for path in sorted((data / "masks").glob("train_*.png")):
    mask = np.asarray(Image.open(path))
    Image.fromarray(np.where(mask >= 2, 2, mask).astype(np.uint8)).save(
        merged / "masks" / path.name
    )
    (merged / "images" / path.name).write_bytes((data / "images" / path.name).read_bytes())
tuned = finetune(
    str(result.out),
    dataset="folder",
    data_root=str(merged),
    split="all",
    num_classes=3,
    crop_size=96,
    batch_size=8,
    lr=0.01,
    iters=20,
    workers=0,
    device="cpu",
    out=str(work / "merged-run"),
)
print("fine-tuned:", tuned)

# %% [markdown]
# ## Hard-image bootstrapping
#
# Duplicate the training images that contain the hard classes (the paper: bicycle, chair,
# diningtable, pottedplant, sofa); the new list is a split like any other.

# %%
boot = bootstrap_split(data, "train", ["bar"], copies=2, dataset="folder")
print(boot.images_per_class, boot.original_length, "→", boot.new_length, "entries in", boot.output)
