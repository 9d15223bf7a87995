"""Packaging: every package folder of the tree is installed (setup.cfg lists packages by name)."""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> tuple[set[str], dict[str, str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    packages = {p.strip() for p in cfg["options"]["packages"].replace(",", "\n").split() if p.strip()}
    mapping = dict(line.split("=") for line in cfg["options"]["package_dir"].strip().splitlines())
    return packages, {k.strip(): v.strip() for k, v in mapping.items()}


def test_every_package_folder_is_listed_in_setup_cfg():
    packages, mapping = _declared()
    on_disk = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((name, *relative)))
    assert on_disk == packages, (
        f"not installed: {sorted(on_disk - packages)}; listed but absent: {sorted(packages - on_disk)}"
    )
