"""Import: a local HF model directory -> lmjax config + parameters placed in their mesh shardings.

Tensors stream one at a time from the safetensors files (memory-mapped), are reshaped to the
lmjax layout on the host and handed to `jax.make_array_from_callback`, which copies to each
device only its own shard. The host holds one HF tensor (one stacked parameter with
model.scan_layers) at a time, never a second copy of the model.
"""
import os

import jax
import numpy as np

from lmjax import config as config_lib, io
from lmjax.parallel import mesh as mesh_lib
from lmjax.parallel import shardings as sharding
from lmjax.train import state as state_lib
from lmjax.errors import UsageError
from lmjax.hf import configs, tensors
from lmjax.model import build_model

INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"


def read_config(directory: str) -> dict:
    if not os.path.isdir(directory):
        raise UsageError(f"hf:{directory}: no such directory; give a local Hugging Face model "
                         "directory (config.json + *.safetensors)")
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"hf:{directory}: no config.json; a Hugging Face model directory holds "
                         "config.json and model.safetensors")
    return io.read_json(path)


class SafetensorsReader:
    """Tensors by name over model.safetensors or the shards its index names."""

    def __init__(self, directory: str):
        from safetensors import safe_open
        index = os.path.join(directory, INDEX_FILE)
        if os.path.isfile(index):
            payload = io.read_json(index)
            weight_map = payload.get("weight_map") if isinstance(payload, dict) else None
            if not isinstance(weight_map, dict):
                raise UsageError(f"{index}: has no weight_map; save the model again with "
                                 "transformers' save_pretrained")
        elif os.path.isfile(os.path.join(directory, WEIGHTS_FILE)):
            weight_map = None
        else:
            others = sorted(n for n in os.listdir(directory) if n.endswith((".bin", ".pt", ".h5")))
            hint = (f" ({', '.join(others)} are not read: convert to safetensors with "
                    "transformers' save_pretrained(..., safe_serialization=True))" if others else "")
            raise UsageError(f"hf:{directory}: no {WEIGHTS_FILE} or {INDEX_FILE}{hint}")
        files = sorted(set(weight_map.values())) if weight_map else [WEIGHTS_FILE]
        self.handles = {}
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                raise UsageError(f"{index}: names shard {name}, which is missing from {directory}")
            try:
                self.handles[name] = safe_open(path, framework="np")
            except Exception as e:  # safetensors raises its own error type for damaged files
                raise UsageError(f"{path}: not a readable safetensors file ({e}); download or "
                                 "save the weights again") from None
        if weight_map is None:
            weight_map = {k: WEIGHTS_FILE for k in self.handles[WEIGHTS_FILE].keys()}
        self.weight_map, self.directory = weight_map, directory
        self.used = set()

    def names(self):
        return self.weight_map.keys()

    def shape(self, name: str) -> tuple:
        return tuple(self.handles[self.weight_map[name]].get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        self.used.add(name)
        return self.handles[self.weight_map[name]].get_tensor(name)


def _prefix(reader: SafetensorsReader, family: str) -> str:
    probe = "wte.weight" if family == configs.GPT2 else "embed_tokens.weight"
    for prefix in ("transformer.", "model.", ""):
        if prefix + probe in reader.weight_map:
            return prefix
    raise UsageError(f"hf:{reader.directory}: tensor {probe!r} missing (looked for it with "
                     "prefixes transformer., model. and none); is the checkpoint complete?")


def _leaf_entry(path: tuple, by_path: dict):
    """(entry, layer index or None, stacked?) for an lmjax parameter path."""
    if path[0] == "layers":
        return by_path[(True, path[1:])], None, True
    if path[0].startswith("layer_"):
        return by_path[(True, path[1:])], int(path[0][len("layer_"):]), False
    return by_path[(False, path)], None, False


def _host_value(reader, entry, layer, shape, where):
    if entry.hf is None:
        return np.zeros(shape, np.float32)
    if entry.expert:  # one HF tensor per expert, stacked on lmjax's leading expert axis
        return np.stack([_one_tensor(reader, entry, entry.name(layer, e), shape[1:], where)
                         for e in range(shape[0])])
    return _one_tensor(reader, entry, entry.name(layer), shape, where)


def _one_tensor(reader, entry, name, shape, where):
    if name not in reader.weight_map:
        raise UsageError(f"hf:{where}: tensor {name!r} missing from the safetensors files; "
                         "is the checkpoint complete and its config.json the right one?")
    expected = entry.hf_shape(shape)
    got = reader.shape(name)
    if got != expected:
        raise UsageError(f"hf:{where}: tensor {name!r} has shape {got}, but config.json implies "
                         f"{expected}; the weights and config.json do not belong together")
    return entry.to_lmjax(reader.get(name), shape)


def import_params(directory: str, cfg, hf_cfg: dict, family: str, mesh, rules):
    """Parameters of the HF checkpoint in `directory` for model cfg.model, sharded on `mesh`."""
    reader = SafetensorsReader(directory)
    prefix = _prefix(reader, family)
    by_path = {(e.layer, e.path): e for e in tensors.entries(family, cfg.model, hf_cfg, prefix)}
    model = build_model(cfg.model)
    param_dtype = np.dtype(jax.numpy.dtype(cfg.model.param_dtype))
    with jax.set_mesh(mesh):
        boxed = state_lib.abstract_params(model, cfg)
        shardings = sharding.logical_to_sharding(boxed, mesh, rules)
    shapes = state_lib.strip_boxes(boxed)
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    flat_sh = treedef.flatten_up_to(shardings)
    leaves = []
    for (key_path, abstract), leaf_sh in zip(flat, flat_sh):
        path = tuple(k.key for k in key_path)
        entry, layer, stacked = _leaf_entry(path, by_path)
        if stacked:
            host = np.empty(abstract.shape, param_dtype)
            for i in range(abstract.shape[0]):
                host[i] = _host_value(reader, entry, i, abstract.shape[1:], directory)
        else:
            host = _host_value(reader, entry, layer, abstract.shape, directory).astype(param_dtype)
        leaves.append(jax.make_array_from_callback(abstract.shape, leaf_sh,
                                                   lambda index, h=host: h[index]))
        del host
    unused = [n for n in reader.names() if n not in reader.used and not tensors.ignorable(n)
              and not (cfg.model.tie_embeddings and n == "lm_head.weight")]
    if unused:
        raise UsageError(f"hf:{directory}: tensor {unused[0]!r} ({len(unused)} unused in all) has "
                         f"no place in lmjax's {family} model; the checkpoint uses a feature "
                         "lmjax does not implement")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def hf_model_config(directory: str, overrides: dict | None = None):
    """(family, lmjax config, HF config dict); overrides set non-architecture fields."""
    hf_cfg = read_config(directory)
    family, cfg = configs.to_lmjax(hf_cfg, f"hf:{directory}/config.json")
    if overrides:
        config_lib.apply_overrides(cfg, overrides)
    return family, cfg, hf_cfg


def load_hf(directory: str, overrides: dict | None = None, with_tokenizer: bool = True):
    """An lmjax Run (cfg, model, params, tokenizer, step=0) from a local HF model directory."""
    from lmjax.data.hf_tokenizer import load_hf_tokenizer
    from lmjax.infer.restore import Run
    family, cfg, hf_cfg = hf_model_config(directory, overrides)
    # Read the tokenizer first: a mismatch is reported before any weight is read.
    tokenizer = load_hf_tokenizer(directory, hf_cfg) if with_tokenizer else None
    if tokenizer is not None and tokenizer.vocab_size > cfg.model.vocab_size:
        raise UsageError(f"hf:{directory}: the tokenizer has {tokenizer.vocab_size} tokens but "
                         f"config.json vocab_size={cfg.model.vocab_size}; they do not belong "
                         "together")
    mesh = mesh_lib.make_mesh(cfg)
    params = import_params(directory, cfg, hf_cfg, family, mesh, sharding.rules(cfg))
    return Run(cfg, build_model(cfg.model), params, tokenizer, 0)
