"""Sweep files: TOML -> validated variants (one dict of parameters per variant).

    experiment = "benign_overfitting"
    seeds = 4                       # int n (seeds 0..n-1) or a list
    [fixed]   ...                   # values shared by every variant
    [grid]    ...                   # axes expanded as a Cartesian product
    [zip]     ...                   # optional: equal-length lists varied together
    [presets.smoke] / [presets.default] / [presets.paper]   # override seeds/fixed/grid/zip

Every problem is a `SweepError` whose message is one line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from pathlib import Path
from types import ModuleType

from jaxbench import experiments

SCALES = ("smoke", "default", "paper")
_TOP_KEYS = {"experiment", "description", "seeds", "fixed", "grid", "zip", "presets"}
_SECTION_KEYS = ("fixed", "grid", "zip")


class SweepError(ValueError):
    """Bad sweep input: the message is the one line the CLI prints."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep: ``variants[i]`` is the full parameter dict of variant i."""

    path: Path
    name: str
    experiment: str
    scale: str
    description: str
    config: dict
    variants: tuple

    @property
    def module(self) -> ModuleType:
        return experiments.get(self.experiment, self.path.parent)


# ----------------------------------------------------------------------------- loading

def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SweepError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})") from None
    except OSError as e:
        raise SweepError(f"{path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: malformed TOML: {e}") from None


def _merge_preset(raw: dict, preset: dict, where: str) -> dict:
    unknown = set(preset) - {"seeds", *_SECTION_KEYS}
    if unknown:
        raise SweepError(f"unknown key {sorted(unknown)[0]!r} in [{where}] (allowed: seeds, fixed, grid, zip)")
    merged = {k: dict(raw.get(k, {})) for k in _SECTION_KEYS}
    merged["seeds"] = raw.get("seeds", 1)
    for section in _SECTION_KEYS:
        for key, value in preset.get(section, {}).items():
            for other in _SECTION_KEYS:
                merged[other].pop(key, None)  # a preset may move a key between sections
            merged[section][key] = value
    if "seeds" in preset:
        merged["seeds"] = preset["seeds"]
    return merged


def _seeds(value) -> list[int]:
    if isinstance(value, bool):
        raise SweepError(f"seeds = {value!r}: expected a positive int or a list of ints")
    if isinstance(value, int):
        if value <= 0:
            raise SweepError(f"seeds = {value}: must be > 0")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        return list(value)
    raise SweepError(f"seeds = {value!r}: expected a positive int or a non-empty list of ints >= 0")


class _Variant(dict):
    """A variant's parameters, readable as ``v["width"]`` or ``v.width``."""

    __getattr__ = dict.__getitem__


def load(path, scale: str = "default") -> Sweep:
    """Reads and validates a sweep file at a scale. Raises `SweepError` with one clear line."""
    path = Path(path)
    raw = _read_toml(path)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise SweepError(f"{path.name}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    if "experiment" not in raw:
        raise SweepError(f"{path.name}: missing 'experiment = \"...\"'")
    try:
        module = experiments.get(raw["experiment"], path.parent)
    except ValueError as e:
        raise SweepError(f"{path.name}: {e}") from None
    presets = raw.get("presets", {})
    if scale not in SCALES and scale not in presets:
        raise SweepError(f"{path.name}: unknown scale {scale!r} (available: {', '.join(sorted({*SCALES, *presets}))})")
    if scale != "default" and scale not in presets:
        raise SweepError(f"{path.name}: no [presets.{scale}] section")
    merged = _merge_preset(raw, presets.get(scale, {}), f"presets.{scale}")
    seeds = _seeds(merged["seeds"])

    params = module.PARAMS
    values: dict[str, list] = {}
    for section in _SECTION_KEYS:
        for key, value in merged[section].items():
            if key == "seed":
                raise SweepError(f"{path.name}: set seeds with the top-level 'seeds' key, not in [{section}]")
            if key not in params:
                raise SweepError(
                    f"{path.name}: unknown key {key!r} in [{section}] "
                    f"(experiment {raw['experiment']} accepts: {', '.join(sorted(params))})")
            if section == "fixed":
                if isinstance(value, list):
                    raise SweepError(f"{path.name}: [fixed] {key} is a list; put swept values in [grid]")
                value = [value]
            elif not isinstance(value, list) or not value:
                raise SweepError(f"{path.name}: [{section}] {key} must be a non-empty list")
            try:
                values[key] = [params[key].validate(key, v) for v in value]
            except ValueError as e:
                raise SweepError(f"{path.name}: {e}") from None
    zip_lens = {len(merged["zip"][k]) for k in merged["zip"]}
    if len(zip_lens) > 1:
        raise SweepError(f"{path.name}: [zip] lists have different lengths {sorted(zip_lens)}")
    missing = [k for k, p in params.items() if p.required and k not in values]
    if missing:
        raise SweepError(f"{path.name}: missing required parameter {missing[0]!r}")

    defaults = {k: p.default for k, p in params.items() if not p.required}
    fixed = {k: values[k][0] for k in merged["fixed"]}
    grid_keys = list(merged["grid"])
    zip_keys = list(merged["zip"])
    zip_rows = list(zip(*(values[k] for k in zip_keys))) if zip_keys else [()]
    variants = []
    for g in itertools.product(*(values[k] for k in grid_keys)):
        for z in zip_rows:
            for s in seeds:
                variants.append({**defaults, **fixed, **dict(zip(grid_keys, g)), **dict(zip(zip_keys, z)), "seed": s})
    check = getattr(module, "check", None)  # cross-parameter constraints, e.g. m <= m_max
    for v in variants if check else ():
        try:
            check(_Variant(v))
        except ValueError as e:
            raise SweepError(f"{path.name}: {e}") from None
    config = {"seeds": seeds, **{s: merged[s] for s in _SECTION_KEYS}}
    return Sweep(path, path.stem, raw["experiment"], scale, raw.get("description", ""), config, tuple(variants))
