"""Dataset names users already ask for whose loaders have not landed yet."""

from __future__ import annotations

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.errors import UserError
from mtlbench.registry import register_dataset


def _pending(name: str, what: str):
    def load(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
        raise UserError(
            f"dataset {name!r} is not available yet ({what} has not landed); "
            "use --dataset cxr14-synth for now"
        )

    load.__doc__ = f"Placeholder for {name}: fails with a clear message until {what} lands."
    return load


register_dataset("nih-cxr14")(_pending("nih-cxr14", "the NIH ChestX-ray14 loader"))
register_dataset("chestmnist")(_pending("chestmnist", "the ChestMNIST loader"))
