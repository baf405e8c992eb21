#!/usr/bin/env bash
# The paper's full training protocol on PASCAL VOC 2012, end to end.
#   VOC=data/VOCdevkit SBD=data/benchmark_RELEASE/dataset bash examples/train_voc.sh
# On one GPU this takes days; on 8 GPUs, replace `deeplab train|finetune` with
#   torchrun --nproc-per-node 8 -m deeplabcli train|finetune
# (the batch of 16 is split over the processes; SyncBN computes BN statistics over all 16).
set -euo pipefail
VOC=${VOC:-data/VOCdevkit}
SBD=${SBD:-data/benchmark_RELEASE/dataset}
HERE=$(dirname "$0")

# 0. The 10,582-image trainaug split from the SBD annotations.
deeplab data prepare-voc --sbd "$SBD" --voc "$VOC"

# 1. Stage 1: ResNet-101 from ImageNet, trainaug, OS 16, lr 0.007, 30K iterations.
#    Interrupted (Ctrl-C, SIGTERM, a crash)? `deeplab train --out runs/r101-stage1 --resume`
#    continues exactly where the last checkpoint left off.
deeplab train --config "$HERE/paper_recipe.toml" --data-root "$VOC"

# 2. Hard-image bootstrapping: duplicate trainval images with bicycle, chair, diningtable,
#    pottedplant or sofa (writes ImageSets/Segmentation/trainval_bootstrap.txt).
deeplab bootstrap --data-root "$VOC" --split trainval

# 3. Stage 2: BN frozen, OS 8, lr 0.001, 30K iterations on the bootstrapped trainval list.
deeplab finetune runs/r101-stage1 --config "$HERE/paper_recipe.toml" --data-root "$VOC"

# 4. Evaluate like the paper's Table 6: OS 8, six scales, left-right flips.
#    (Stage 2 trains on trainval, which contains val; use the stage-1 run for an honest val
#    number, or submit stage 2 to the test server.)
deeplab eval --data-root "$VOC" --split val --model runs/r101-stage1 --os 8 \
    --scales 0.5,0.75,1,1.25,1.5,1.75 --flip
