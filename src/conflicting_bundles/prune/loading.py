"""Models for ``cbundles prune``: model specs (the data to score with is in inputs.py).

Model specs (:func:`load_model`):
- ``package.module:callable`` (``torchvision.models:resnet18``): the callable is called with
  ``model_kwargs`` (fresh weights: nothing is fetched from a hub);
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, **model_kwargs)``;
- ``hf:PATH`` (or a directory with ``config.json``): a Hugging Face model saved with
  ``save_pretrained``; the class named in ``config.architectures`` (else ``AutoModel``);
- a run directory of this project (``arch.json`` + ``checkpoints/last.pt``, the checkpoint every
  command reads by default);
- a directory written by ``save_pruned`` (``pruned.json`` records how to build its base);
- a state-dict file (or a checkpoint with a "model"/"state_dict" entry) plus ``arch=`` one of
  the specs above; loaded with ``weights_only=True``;
- a file written by ``torch.save(model)`` (a pickled module: loading it runs code from the
  file, so only with ``trust_pickle=True``);
- a registered model name of this project (fresh weights).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .surgery import load_pruned, read_meta

__all__ = ["load_model", "build_spec", "require", "imports_code"]


# ------------------------------------------------------------------------------ models
SETUP_REAL = (
    "run `make setup-real` in the repository (it creates .venv-vision with torch==2.14.1 "
    "torchvision==0.29.1, timm and transformers) and use .venv-vision/bin/cbundles "
    "(docs/prune.md)"
)


def require(module: str):
    """Import an optional dependency, or say how to get it: the one install story for
    torchvision/timm/transformers is the second environment of ``make setup-real`` (torchvision
    does not import beside the pinned CPU torch of .venv)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        known = module.split(".")[0] in ("torchvision", "timm", "transformers")
        how = SETUP_REAL if known else "install it in this environment or put it on PYTHONPATH"
        raise ValueError(f"{module} is not importable here ({e}); {how}.") from e


def _hf_model(path: str, map_location: str) -> nn.Module:
    transformers = require("transformers")
    try:
        cfg = transformers.AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"hf:{path}: not a Hugging Face model directory ({e}).") from e
    names = getattr(cfg, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names else None
    cls = cls or transformers.AutoModel
    model = cls.from_pretrained(path)
    return model.to(map_location)


def build_spec(spec: str, model_kwargs: dict | None = None, map_location: str = "cpu"):
    """A fresh model from an import-path, ``timm:`` or ``hf:`` spec (see the module doc)."""
    kw = dict(model_kwargs or {})
    if spec.startswith("hf:"):
        return _hf_model(spec[3:], map_location)
    if spec.startswith("timm:"):
        timm = require("timm")
        try:
            return timm.create_model(spec[5:], pretrained=False, **kw)
        except RuntimeError as e:  # unknown model name
            raise ValueError(f"{spec}: {e}") from e
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"{spec!r} is not an import path of the form package.module:callable.")
    mod = require(mod_name)
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ValueError(f"{mod_name} has no callable {attr!r}.")
    model = fn(**kw)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec}() returned a {type(model).__name__}, not an nn.Module.")
    return model


def imports_code(spec) -> bool:
    """Whether model spec ``spec`` is an import path (package.module:callable) that imports
    and calls the code it names: such a spec is taken from the command line or Python only,
    never from a config file or a pruned.json (timm:NAME and hf:PATH name no code)."""
    if not isinstance(spec, str):
        return False  # None (no spec); other types are refused by the type check
    module = spec.partition(":")[0]
    return ":" in spec and not spec.startswith(("hf:", "timm:")) and "/" not in module


def _is_spec(spec: str) -> bool:
    return spec.startswith(("hf:", "timm:")) or (
        ":" in spec and not Path(spec).exists() and "/" not in spec.partition(":")[0]
    )


def _state_dict(obj) -> dict:
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(torch.is_tensor(v) for v in obj.values()):
            return obj
    raise ValueError("the file holds no state dict (a dict of tensors, or one under 'model').")


def _load_file(path: Path, arch: str | None, kw: dict, map_location: str, trust_pickle: bool):
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a pickled module (or garbage): weights_only refuses it
        if not trust_pickle:
            raise ValueError(
                f"{path} is not a plain state dict ({type(e).__name__}); it may be a pickled "
                "nn.Module, and loading one runs code stored in the file. Pass --trust-pickle "
                "(trust_pickle=True) only for files you trust, or save a state dict and pass "
                "--arch."
            ) from e
        # explicit opt-in only (--trust-pickle / trust_pickle=True): this runs code from the file
        obj = torch.load(path, map_location=map_location, weights_only=False)
        if isinstance(obj, nn.Module):
            return obj.eval(), None
        raise ValueError(f"{path} holds a {type(obj).__name__}, not an nn.Module.") from e
    if arch is None:
        raise ValueError(
            f"{path} holds a state dict (weights only): pass --arch (arch=) a model spec that "
            "builds the architecture, e.g. torchvision.models:resnet18."
        )
    model = _from_spec_or_name(arch, kw, map_location)[0]
    try:
        model.load_state_dict(_state_dict(obj))
    except RuntimeError as e:
        raise ValueError(
            f"{path}: the weights do not fit {arch} ({str(e).splitlines()[0]})."
        ) from e
    return model.eval(), {"spec": arch, "kwargs": kw}


def _from_spec_or_name(spec: str, kw: dict, map_location: str):
    if _is_spec(spec):
        return build_spec(spec, kw, map_location), {"spec": spec, "kwargs": kw}
    from ..models import create_model, list_models

    if spec in list_models():
        arch = {"name": spec, **kw}
        return create_model(**arch), {"arch": arch}
    raise ValueError(
        f"{spec!r} is neither an existing path (run directory, pruned directory, model file), "
        "an import path (package.module:callable), timm:NAME, hf:PATH, nor a registered model "
        f"({', '.join(list_models())})."
    )


def _base_factory(
    base: dict, map_location: str, path: Path, arch: str | None = None
) -> Callable[[], nn.Module]:
    """How to build a pruned directory's base. An import path recorded in pruned.json is
    imported only when the caller names it again (``arch=`` / --arch): a folder handed on
    never chooses code to run."""
    if base.get("arch"):
        from ..models import create_model

        return lambda: create_model(**base["arch"])
    spec = base.get("spec")
    if spec:
        if imports_code(spec) and arch != spec:
            raise ValueError(
                f"{path / 'pruned.json'} says its base is built by {spec!r}, an import path: "
                f"name it to rebuild the model (--arch {spec}, or arch=...); code named by a "
                "pruned directory is never imported on its own."
            )
        return lambda: build_spec(spec, base.get("kwargs"), map_location)
    raise ValueError("pruned.json has no base (arch or spec)")


def load_model(
    spec: str,
    map_location: str = "cpu",
    arch: str | None = None,
    trust_pickle: bool = False,
    model_kwargs: dict | None = None,
) -> tuple[nn.Module, dict | None]:
    """(model in eval mode, base) for a model spec (see the module doc). ``base`` says how to
    rebuild the unpruned architecture (``{"arch": ...}`` or ``{"spec": ..., "kwargs": ...}``),
    recorded by :func:`save_pruned` so that the pruned directory is itself a spec."""
    kw = dict(model_kwargs or {})
    path = Path(spec)
    if path.is_dir():
        from ..autotune import final_run_dir

        path = final_run_dir(path)  # an auto-tune folder stands for its final step
        if (path / "pruned.json").is_file():
            base = read_meta(path).get("base") or {}
            if not (base.get("arch") or base.get("spec")):
                raise ValueError(
                    f"{path} is a pruned model without a base in pruned.json: rebuild it in "
                    "Python with load_pruned(factory, path)."
                )
            factory = _base_factory(base, map_location, path, arch)
            model = load_pruned(factory, path, map_location)
            return model.eval(), base
        if (path / "arch.json").is_file():
            return _load_run_dir(path, map_location)
        if (path / "config.json").is_file():  # after arch.json: our run dirs have one too
            return _hf_model(str(path), map_location).eval(), {"spec": f"hf:{path}"}
        from ..runs import runs_inside

        inside = runs_inside(path)
        hint = f" It holds runs: {', '.join(map(str, inside[:6]))}." if inside else ""
        raise ValueError(
            f"{path} is a directory without arch.json (a run directory), pruned.json (a pruned "
            f"model) or config.json (a Hugging Face model); cannot load a model from it.{hint}"
        )
    if path.is_file():
        return _load_file(path, arch, kw, map_location, trust_pickle)
    model, base = _from_spec_or_name(spec, kw, map_location)
    return model.eval(), base


def _load_run_dir(path: Path, map_location: str) -> tuple[nn.Module, dict]:
    """A run directory of ``cbundles train``: arch.json + checkpoints/last.pt (the one default
    of every command on a run: measure, lesion, search and prune read the same weights).
    A damaged file is named, with how to recover, instead of a pickle/zip traceback."""
    from .. import runs
    from ..models import create_model

    arch_d = runs.load_arch(path)  # RunDirError naming arch.json when it is damaged
    if not isinstance(arch_d, dict) or not arch_d.get("name"):
        raise ValueError(
            f"{path / 'arch.json'} holds no model architecture (a JSON object with 'name'); "
            "the run directory is damaged: train it again with --force."
        )
    try:
        model = create_model(**arch_d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path / 'arch.json'} does not describe a model this program builds "
                         f"({e}); the run directory is damaged.") from e  # fmt: skip
    ckpt_file = _checkpoint(path)
    try:
        ckpt = runs.load_checkpoint(path, ckpt_file.stem, map_location=map_location)
    except runs.RunDirError as e:
        raise ValueError(str(e)) from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{ckpt_file} has no 'model' entry (a state dict); it is damaged.")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(
            f"{ckpt_file} does not fit the architecture in {path / 'arch.json'} "
            f"({str(e).splitlines()[0]}); the run directory is damaged."
        ) from e
    epoch = ckpt.get("epoch")
    return model.eval(), {"arch": arch_d, "checkpoint": ckpt_file.name, "epoch": epoch}


def _checkpoint(run_dir: Path) -> Path:
    p = run_dir / "checkpoints" / "last.pt"
    if p.is_file():
        return p
    raise FileNotFoundError(
        f"{run_dir} has arch.json but no checkpoints/last.pt: was the run trained to its first "
        "checkpoint?"
    )
