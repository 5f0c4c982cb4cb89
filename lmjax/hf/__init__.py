"""Hugging Face interop for GPT-2 and the decoder families of lmjax.hf.configs.FAMILIES (Llama,
Mistral, Qwen 2/3, Gemma 2/3 and more): import, export, and `--model=` specs.

  load_hf(DIR)                    local HF model directory -> lmjax Run (cfg, model, params, tokenizer)
  save_hf(cfg, params, OUT, tok)  lmjax parameters -> a directory transformers loads
  load_model("hf:DIR" | WORKDIR)  either of the above or a training workdir / lmjax-export directory
"""
from lmjax.errors import UsageError
from lmjax.hf.load import hf_model_config, import_params, load_hf
from lmjax.hf.save import save_hf

HF_PREFIX = "hf:"


def load_model(spec: str, step: int | None = None):
    """A Run from `hf:DIR` (Hugging Face), or from a training workdir or export directory."""
    if not spec:
        raise UsageError("--model is empty; give a training workdir, an lmjax-export directory "
                         "or hf:DIR")
    if spec.startswith(HF_PREFIX):
        if step is not None:
            raise UsageError("--step applies to training workdirs, not to hf: models")
        return load_hf(spec[len(HF_PREFIX):])
    import os
    from lmjax.infer import restore
    if not os.path.isdir(spec):
        raise UsageError(f"--model={spec}: no such directory; give a training workdir, an "
                         "lmjax-export directory or hf:DIR")
    return restore.load_run(spec, step)


__all__ = ["load_hf", "save_hf", "load_model", "import_params", "hf_model_config", "HF_PREFIX"]
