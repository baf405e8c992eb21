"""Data: PASCAL VOC 2012 (+ SBD trainaug), custom folders, paired transforms, palettes."""
