"""Packed artifacts: a compressed model written as what it stores, at its bit-widths, in one
safetensors file, and read back into a runnable model with the same outputs.

Why: a size is only honest if something of that size exists. A fake-quantized model is still a
float file, so a record's stored size is measured here, on disk, from the artifact
(:func:`artifact_cost`), and the bit-count formula of :mod:`riembench.sizing.cost` is kept beside it.

What the file holds (``FORMAT``):

* per compressed layer (the ``layers`` map of the metadata: name -> kind and how to decode):
  layers of this project's own compressed classes pack themselves
  (:class:`~riembench.compression.packing.PackedLayer`: RieM/Lp-norm embeddings, SVD factor pairs);
  plain Linear/Conv2d layers that a method changed in place get a
  :class:`~riembench.compression.packing.LayerFormat` chosen from the method's record (``bits_by_param``
  -> integer codes with scales and zero points, packed below a byte; unstructured pruning ->
  a bitmask and the kept values);
* every other persistent tensor as it is (``state.*``: BatchNorm statistics, uncompressed
  layers, activation ranges), at its dtype;
* a skeleton of the plain modules whose shape differs from the architecture the file is loaded
  onto (folded BatchNorms, a bias added by folding, pruned channels), the neuron chains, the
  input quantizers' bits, and where quantizers sit inside the traced graph (both inputs of
  every residual add under ``act_scope: reference``: the reader traces the architecture again
  and puts them back at the same nodes); plus ``method`` and ``bits`` for the reader.

Every metadata byte and the safetensors header count in the measured size.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from riembench.compression.compact import (
    EmbeddedLayer,
    _chains_of,
    embedded_layers,
    materialize,
    tie_chain,
)
from riembench.compression.fake_quant import INPUT_QUANT, FakeQuantAct, attach_input_quant
from riembench.compression.methods.svd import FactorizedLayer
from riembench.compression.network import COMPRESSIBLE, set_module
from riembench.compression.packing import (
    ArtifactError,
    LayerFormat,
    Packed,
    PackedLayer,
    SparseWeight,
    UniformWeight,
    build_module,
    module_spec,
)
from riembench.compression.quantize import graph_quant_sites, restore_graph_quants
from riembench.core.errors import RiembenchError

log = logging.getLogger("riembench")

FORMAT = "riembench-artifact-v1"
SUFFIX = ".safetensors"

#: compressed layer classes by the kind they write (one entry per PackedLayer class)
PACKED_CLASSES: dict[str, type[PackedLayer]] = {EmbeddedLayer.pack_kind: EmbeddedLayer,
                                                FactorizedLayer.pack_kind: FactorizedLayer}


def _format_from_meta(meta: dict[str, Any]) -> LayerFormat:
    if meta["kind"] == UniformWeight.pack_kind:
        w = meta["weight"]
        return UniformWeight(int(w["bits"]), bool(w["per_channel"]), bool(w["symmetric"]))
    if meta["kind"] == SparseWeight.pack_kind:
        return SparseWeight()
    raise ArtifactError(f"unknown layer kind '{meta['kind']}' in artifact")


def plain_formats(model: nn.Module, info: dict[str, Any], layers: list[str]
                  ) -> dict[str, LayerFormat]:
    """How the plain Linear/Conv2d layers of ``model`` are stored, from the method's record:
    weights listed in ``info["bits_by_param"]`` below 32 bits as uniform codes (per channel /
    symmetric as ``info`` says, the settings of :func:`riembench.compression.quantize.quantize_model`);
    the selected layers of an unstructured pruning (``info["mode"]``) as sparse weights."""
    modules = dict(model.named_modules())
    formats: dict[str, LayerFormat] = {}
    for key, bits in (info.get("bits_by_param") or {}).items():
        owner = key.removesuffix(".weight")
        if key.endswith(".weight") and int(bits) < 32 and isinstance(modules.get(owner), COMPRESSIBLE):
            formats[owner] = UniformWeight(int(bits), bool(info.get("per_channel", False)),
                                           bool(info.get("symmetric", False)))
    if info.get("mode") == "unstructured":
        for name in layers:
            if isinstance(modules.get(name), COMPRESSIBLE) and name not in formats:
                formats[name] = SparseWeight()
    return formats


def _packed_layers(model: nn.Module) -> dict[str, PackedLayer]:
    found: dict[str, PackedLayer] = {}
    for name, module in model.named_modules():
        if isinstance(module, PackedLayer) and not any(name.startswith(p + ".") for p in found):
            found[name] = module
    return found


def _covered_keys(name: str, module: nn.Module, whole: bool) -> set[str]:
    """State-dict keys a packed layer writes itself (its input quantizer's range is not one)."""
    if whole:
        return {f"{name}.{k}" for k in module.state_dict() if not k.startswith(INPUT_QUANT + ".")}
    return {f"{name}.{k}" for k in ("weight", "bias") if getattr(module, k, None) is not None}


def _skeleton(model: nn.Module, reference: nn.Module | None, skip: set[str]) -> dict[str, Any]:
    """Specs of plain modules that differ from ``reference`` at the same name."""
    ref = dict(reference.named_modules()) if reference is not None else {}
    out: dict[str, Any] = {}
    for name, module in model.named_modules():
        if not name or any(name == s or name.startswith(s + ".") for s in skip):
            continue
        try:
            spec = module_spec(module)
        except ArtifactError:
            continue
        other = ref.get(name)
        try:
            same = other is not None and module_spec(other) == spec
        except ArtifactError:
            same = False
        if not same:
            out[name] = spec
    return out


def save_artifact(model: nn.Module, path: str | Path, info: dict[str, Any] | None = None,
                  layers: list[str] | None = None, reference: nn.Module | None = None,
                  meta: dict[str, Any] | None = None) -> int:
    """Write ``model`` as a packed artifact; returns its size in bytes (as on disk).

    ``info``: the method's record (decides the formats of plain layers, see
    :func:`plain_formats`); ``layers``: the selected layers; ``reference``: the architecture
    the artifact will be loaded onto (only modules that differ from it get a skeleton entry);
    ``meta``: extra JSON-able facts (method, bits) for the reader.
    """
    info = info or {}
    packed_layers = _packed_layers(model)
    formats = {n: f for n, f in plain_formats(model, info, list(layers or [])).items()
               if not any(n == p or n.startswith(p + ".") for p in packed_layers)}
    tensors: dict[str, torch.Tensor] = {}
    layer_map: dict[str, Any] = {}
    covered: set[str] = set()
    for name, layer in packed_layers.items():
        packed = layer.pack()
        layer_map[name] = packed.meta
        tensors.update({f"layer.{name}.{k}": v for k, v in packed.tensors.items()})
        covered |= _covered_keys(name, layer, whole=True)  # type: ignore[arg-type]
    for name, fmt in formats.items():
        module = model.get_submodule(name)
        packed = fmt.pack(module)
        layer_map[name] = packed.meta
        tensors.update({f"layer.{name}.{k}": v for k, v in packed.tensors.items()})
        covered |= _covered_keys(name, module, whole=False)
    for key, value in model.state_dict().items():
        if key not in covered:
            tensors[f"state.{key}"] = value.detach()
    tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
    _dedupe_storage(tensors)
    emb = embedded_layers(model)
    header = {
        "format": FORMAT,
        "layers": json.dumps(layer_map, separators=(",", ":")),
        "skeleton": json.dumps(_skeleton(model, reference, set(packed_layers)),
                               separators=(",", ":")),
        "chains": json.dumps(_chains_of(model, emb), separators=(",", ":")),
        "input_quant": json.dumps({n: int(getattr(m, INPUT_QUANT).bits)
                                   for n, m in model.named_modules() if hasattr(m, INPUT_QUANT)},
                                  separators=(",", ":")),
        "graph_quant": json.dumps(graph_quant_sites(model), separators=(",", ":")),
        "meta": json.dumps(meta or {}, separators=(",", ":"), default=str),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.stat().st_size


def _dedupe_storage(tensors: dict[str, torch.Tensor]) -> None:
    """safetensors refuses tensors sharing memory: give each its own copy (a tensor shared
    along a chain is written once already, by the layer that owns it)."""
    seen: set[int] = set()
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr()
        if v.numel() and ptr in seen:
            tensors[k] = v.clone()
        seen.add(ptr)


def read_artifact(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the decoded metadata of an artifact."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:
        raise ArtifactError(f"could not read artifact {path}: {exc}") from exc
    if header.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a riembench artifact ({FORMAT})")
    meta = {k: json.loads(header[k]) for k in ("layers", "skeleton", "chains", "input_quant", "meta")}
    # quantizers inside a traced graph (residual adds, the skip path): absent in older files
    meta["graph_quant"] = json.loads(header.get("graph_quant", "{}"))
    return tensors, meta


def load_artifact(path: str | Path, base: nn.Module) -> nn.Module:
    """Rebuild the compressed model on ``base`` (the original architecture, any weights)."""
    tensors, meta = read_artifact(path)
    try:
        return _rebuild(path, base, tensors, meta)
    except AttributeError as exc:  # get_submodule of a name this architecture lacks
        raise ArtifactError(f"artifact {path} does not fit {type(base).__name__} ({exc}): not "
                            "the architecture it was written for") from exc


def _rebuild(path: str | Path, base: nn.Module, tensors: dict[str, torch.Tensor],
             meta: dict[str, Any]) -> nn.Module:
    for name, spec in meta["skeleton"].items():
        set_module(base, name, build_module(spec))
    for name, lmeta in meta["layers"].items():
        head = f"layer.{name}."
        packed = Packed({k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}, lmeta)
        kind = lmeta["kind"]
        if kind in PACKED_CLASSES:
            set_module(base, name, PACKED_CLASSES[kind].unpack(packed, None))
        else:
            _format_from_meta(lmeta).unpack(packed, base.get_submodule(name))
    for chain in meta["chains"]:
        tie_chain([base.get_submodule(n) for n in chain])  # type: ignore[misc]
    for name, bits in meta["input_quant"].items():  # ranges come with the state below
        attach_input_quant(base.get_submodule(name), FakeQuantAct(0.0, 0.0, int(bits)))
    try:
        base = restore_graph_quants(base, meta["graph_quant"])
    except RiembenchError as exc:
        raise ArtifactError(f"artifact {path}: {exc}") from exc
    state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
    result = base.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ArtifactError(f"artifact {path} has tensors this model lacks: "
                            f"{result.unexpected_keys[:5]}")
    packed_names = list(meta["layers"])
    missing = [k for k in result.missing_keys
               if not any(k.startswith(n + ".") for n in packed_names)
               or k.split(".")[-2:-1] == [INPUT_QUANT]]
    if missing:
        raise ArtifactError(f"artifact {path} does not fill {missing[:5]}")
    return materialize(base.eval())


def artifact_cost(model: nn.Module, path: str | Path, info: dict[str, Any], layers: list[str],
                  reference: nn.Module | None, meta: dict[str, Any],
                  formula_bytes: float | None = None) -> dict[str, Any]:
    """Write the artifact and return its measured size for a record: ``stored_bytes`` /
    ``stored_mb`` (decimal) / ``stored_mib`` are the file on disk, ``artifact_mb`` the same in
    the tables' column, ``formula_*`` the bit count of :mod:`riembench.sizing.cost` beside it."""
    try:
        size = save_artifact(model, path, info, layers, reference, meta)
    except ArtifactError as exc:  # the seed is finished: keep it, say why it has no artifact
        log.warning("no artifact for %s: %s", path, exc)
        return {"artifact_error": str(exc)}
    out: dict[str, Any] = {"artifact_path": str(path), "artifact_bytes": size,
                           "artifact_mb": size / 1e6, "artifact_mib": size / 2 ** 20,
                           "stored_bytes": size, "stored_mb": size / 1e6,
                           "stored_mib": size / 2 ** 20}
    if formula_bytes is not None:
        out.update({"formula_bytes": formula_bytes, "formula_mb": formula_bytes / 1e6})
    return out
