"""`--split random-image`: the DeepChest authors' split by image, built so that its only difference
from the patient-wise split is whether a test image's patient has images in training.

The authors' released code (DeepChest-MTL, multitask_learning/MTL_training/train.py) splits the
whole table 80/10/10 with `torch.utils.data.random_split`, by image: images of one patient land in
training and in test, and the test score rewards recognising the patient. Compared naively with a
patient-wise run, that protocol would also change the test images and the training-set size. Here:

* test: a seeded half of the patient-wise test split's images (`HELD_OUT_FRACTION`), chosen by image;
* the pool: every other image of the dataset (patient-wise train and val, and the rest of the
  test split, whose patients are the held-out images' patients);
* train and val: drawn by image from the pool, as many as the patient-wise train and val hold.

So a run of each protocol trains on the same number of images and can be scored on the same test
images (the patient-wise run stores predictions for all of them: the report restricts it to the
random-image run's test images), and the difference between the two is the leak.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from mtlbench.datasets.base import DatasetBundle, Split
from mtlbench.datasets.split_checks import label_warnings
from mtlbench.errors import UserError

HELD_OUT_FRACTION = 0.5  # of the patient-wise test images, kept as the random-image test split
INFO_KEY = "image_split"  # the data info's entry for the split's sizes and leak (chestmnist's "split" is prose)
SEED_SALT = 0x5EED_1EAC  # the split's RNG stream is its own, apart from the data seed's other uses


def random_image_split(bundle: DatasetBundle, data_seed: int) -> DatasetBundle:
    """`bundle` re-split by image (see the module's docstring), its info saying how much leaks."""
    pixels = bundle.train.pixels
    if any(split.pixels is not pixels for split in bundle.splits().values()):
        raise UserError(
            f"--split random-image: {bundle.name}'s splits are not rows of one image store, so they cannot be "
            "re-split by image; use --split official"
        )
    rng = np.random.default_rng([data_seed, SEED_SALT])
    test = bundle.test
    held_out = np.sort(rng.choice(len(test), size=max(1, round(HELD_OUT_FRACTION * len(test))), replace=False))
    returned = np.setdiff1d(np.arange(len(test)), held_out)
    pool = _concat([bundle.train, bundle.val, _subset(test, returned)])
    n_train, n_val = len(bundle.train), len(bundle.val)
    drawn = rng.permutation(len(pool))
    train, val = _subset(pool, np.sort(drawn[:n_train])), _subset(pool, np.sort(drawn[n_train : n_train + n_val]))
    new_test = _subset(test, held_out)
    splits = {"train": train, "val": val, "test": new_test}
    before = set(label_warnings(bundle.name, bundle.splits(), bundle.task_names))  # said of the official split
    warnings = [w for w in bundle.info.get("warnings", []) if w not in before]
    info: dict[str, Any] = {
        **bundle.info,
        "warnings": warnings + label_warnings(bundle.name, splits, bundle.task_names),
        INFO_KEY: {
            "protocol": "random-image",
            "test_images": len(new_test),
            "patient_split_test_images": len(test),
            "pool_images": len(pool),
            "leaked_test_fraction": leaked_fraction(train.patient_ids, new_test.patient_ids),
            "leaked_val_fraction": leaked_fraction(train.patient_ids, val.patient_ids),
        },
    }
    return replace(bundle, train=train, val=val, test=new_test, info=info)


def leaked_fraction(train_patients: np.ndarray, other_patients: np.ndarray) -> float:
    """The fraction of `other_patients`' images (one entry per image) whose patient has an image in training."""
    if len(other_patients) == 0:
        return 0.0
    return float(np.isin(other_patients, np.unique(train_patients)).mean())


def _subset(split: Split, positions: np.ndarray) -> Split:
    """The images of `split` at `positions`, in that order."""
    return Split(
        split.pixels,
        split.rows[positions],
        split.labels[positions],
        split.image_ids[positions],
        split.patient_ids[positions],
    )


def _concat(splits: list[Split]) -> Split:
    """One split of all images of `splits` (rows of the same image store), in order."""
    return Split(
        splits[0].pixels,
        np.concatenate([s.rows for s in splits]),
        np.concatenate([s.labels for s in splits]),
        np.concatenate([s.image_ids for s in splits]),
        np.concatenate([s.patient_ids for s in splits]),
    )
