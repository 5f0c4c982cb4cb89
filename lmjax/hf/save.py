"""Export: lmjax parameters -> a directory transformers loads (config.json + safetensors).

Tensors are gathered one HF tensor at a time and written shard by shard (at most
`max_shard_bytes` per file, with model.safetensors.index.json when there are several), so the
host holds one shard's worth of weights at a time. The directory is written under a temporary
name and renamed when complete.
"""
import json
import math
import os
import shutil

import jax
import numpy as np

from lmjax.train import state as state_lib
from lmjax.errors import UsageError
from lmjax.hf import configs, tensors
from lmjax.hf.load import INDEX_FILE, WEIGHTS_FILE
from lmjax.model import build_model
from lmjax.model.moe import is_moe_layer

LMJAX_TOKENIZER_DIR = "lmjax_tokenizer"  # lmjax's own tokenizer, when it has no HF form


def _check_output(output: str):
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise UsageError(f"--output={output}: already exists and is not an empty directory; "
                         "pick a new directory (nothing was written)")


def _full_shapes(cfg):
    """lmjax parameter shapes of this model with every bias, so absent ones export as zeros.

    Per-layer shapes are keyed ("layer", path...) from whichever layer holds that path (MoE and
    dense layers of one model hold different MLP parameters)."""
    m = cfg.model.copy_and_resolve_references()
    with m.unlocked():
        m.use_bias, m.scan_layers = True, False
    shapes = state_lib.strip_boxes(state_lib.abstract_params(build_model(m), cfg))
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        keys = tuple(k.key for k in path)
        if keys[0].startswith("layer_"):
            keys = ("layer",) + keys[1:]
        out[keys] = leaf.shape
    return out


class _ParamSource:
    """lmjax values by (path, layer), copying one stacked leaf to the host at a time."""

    def __init__(self, params, scanned: bool):
        self.params, self.scanned = params, scanned
        self._held = (None, None)

    def get(self, path: tuple, layer):
        node = self.params
        if layer is None:
            keys = path
        elif self.scanned:
            keys = ("layers",) + path
        else:
            keys = (f"layer_{layer}",) + path
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        if layer is not None and self.scanned:
            if self._held[0] != keys:
                self._held = (keys, np.asarray(jax.device_get(node)))
            return self._held[1][layer]
        return np.asarray(jax.device_get(node))


def hf_tensors(cfg, params, family: str, hf_cfg: dict):
    """Yields (HF name, numpy array) in file order, one at a time."""
    m = cfg.model
    prefix = "transformer." if family == configs.GPT2 else "model."
    entries = tensors.entries(family, m, hf_cfg, prefix)
    shapes = _full_shapes(cfg)
    source = _ParamSource(params, m.scan_layers)
    groups = {}  # HF template -> its entries in part order
    for e in entries:
        if e.hf is not None:
            groups.setdefault(e.hf, []).append(e)
    for template, parts in groups.items():
        parts.sort(key=lambda e: e.part[0])
        layers = range(m.num_layers) if parts[0].layer else [None]
        wanted = parts[0].moe_layers
        for layer in layers:
            if wanted is not None and is_moe_layer(m, layer) != wanted:
                continue
            values = []
            for e in parts:
                shape = shapes[(e.path if layer is None else ("layer",) + e.path)]
                value = source.get(e.path, layer)
                values.append(np.zeros(shape, np.float32) if value is None else value)
            if parts[0].expert:  # stacked experts -> one HF tensor each
                for j in range(values[0].shape[0]):
                    yield parts[0].name(layer, j), parts[0].to_hf([v[j] for v in values])
            else:
                yield parts[0].name(layer), parts[0].to_hf(values)


def _special_ids(tokenizer) -> dict:
    if tokenizer is None:
        return {}
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id}


def save_hf(cfg, params, output: str, tokenizer=None, max_shard_bytes: int = 2 * 2**30,
            log=print) -> str:
    """Writes `output` for transformers' AutoModelForCausalLM.from_pretrained; returns family."""
    family = configs.family_for_export(cfg.model)
    _check_output(output)
    dtypes = {np.dtype(x.dtype).name for x in jax.tree.leaves(params)}
    dtype = "bfloat16" if dtypes == {"bfloat16"} else "float32"
    hf_cfg = configs.to_hf(cfg.model, family, dtype, _special_ids(tokenizer))
    tmp = os.path.abspath(output).rstrip("/") + ".lmjax-hf-tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    written = _write_weights(hf_tensors(cfg, params, family, hf_cfg), tmp, max_shard_bytes)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    if tokenizer is not None:
        if hasattr(tokenizer, "save_hf"):
            tokenizer.save_hf(tmp)
        else:
            # char/bytes/lmjax SentencePiece tokenizers have no HF form; lmjax reads them back.
            tokenizer.save(os.path.join(tmp, LMJAX_TOKENIZER_DIR))
    if os.path.isdir(output):
        os.rmdir(output)
    os.replace(tmp, output)
    log(f"wrote {family} model ({written:,} parameters) to {output}")
    return family


def _write_weights(named_tensors, directory: str, max_shard_bytes: int) -> int:
    from safetensors.numpy import save_file
    shards, current, size, total, total_bytes = [], {}, 0, 0, 0

    def flush():
        nonlocal current, size
        if current:
            name = f"part-{len(shards):05d}.safetensors"
            save_file(current, os.path.join(directory, name), metadata={"format": "pt"})
            shards.append((name, list(current)))
            current, size = {}, 0

    for name, value in named_tensors:
        nbytes = value.nbytes
        if current and size + nbytes > max_shard_bytes:
            flush()
        current[name] = np.ascontiguousarray(value)
        size += nbytes
        total += math.prod(value.shape)
        total_bytes += nbytes
    flush()
    if len(shards) == 1:
        os.rename(os.path.join(directory, shards[0][0]), os.path.join(directory, WEIGHTS_FILE))
        return total
    weight_map = {}
    for i, (name, names) in enumerate(shards):
        final = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        os.rename(os.path.join(directory, name), os.path.join(directory, final))
        weight_map.update({n: final for n in names})
    with open(os.path.join(directory, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total_bytes}, "weight_map": weight_map}, f, indent=2)
    return total
