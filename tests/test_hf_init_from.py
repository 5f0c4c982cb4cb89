"""init_from: training starts from imported (hf:) or earlier-run (workdir:) weights."""
import jax
import numpy as np
import pytest

from lmjax.config import apply_overrides, load_config
from lmjax.errors import UsageError
from tests.helpers import EXPERIMENT

SMALL = {"model.num_layers": 1, "model.d_model": 32, "model.num_heads": 2, "model.d_ff": 64,
         "model.max_seq_len": 32, "train.seq_len": 32, "train.batch_size": 4, "train.steps": 2,
         "train.eval_steps": 0, "train.checkpoint_every": 2, "train.sample_tokens": 0,
         "train.progress": False, "metrics.tensorboard": False}


def trainer_for(init_from, workdir, extra=None):
    from lmjax.hf.init_from import adopt_architecture
    from lmjax.train.loop import Trainer
    cfg = load_config(EXPERIMENT)
    apply_overrides(cfg, {**SMALL, **(extra or {}), "init_from": init_from})
    adopt_architecture(cfg, log=lambda _: None)
    return Trainer(cfg, str(workdir))


def assert_same(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def test_init_from_hf_uses_the_imported_weights(tmp_path):
    pytest.importorskip("torch", reason="needs torch to build the HF model")
    pytest.importorskip("transformers", reason="needs transformers")
    from lmjax.hf import load_hf
    from tests.test_hf import build_hf_model
    build_hf_model(tmp_path / "hf", "llama", False)  # vocab 256 >= the 65 characters
    trainer = trainer_for(f"hf:{tmp_path / 'hf'}", tmp_path / "run",
                          {"model.scan_layers": True})
    assert trainer.cfg.model.positions == "rope" and trainer.cfg.model.d_model == 64
    state, step = trainer.init_or_restore()
    assert step == 0
    reference = load_hf(str(tmp_path / "hf"), overrides={"model.scan_layers": True},
                        with_tokenizer=False)
    assert_same(state.params, reference.params)


@pytest.mark.slow
def test_init_from_workdir_adopts_its_architecture_and_weights(tmp_path):
    from lmjax.train.loop import train
    cfg = load_config(EXPERIMENT)
    apply_overrides(cfg, {**SMALL, "model.d_model": 48})
    train(cfg, str(tmp_path / "a"))
    from lmjax.infer.restore import load_run
    source = load_run(str(tmp_path / "a")).params
    trainer = trainer_for(f"workdir:{tmp_path / 'a'}", tmp_path / "b")
    assert trainer.cfg.model.d_model == 48  # adopted from the source
    state, _ = trainer.init_or_restore()
    assert_same(state.params, source)
    with pytest.raises(UsageError, match="write hf:DIR"):
        trainer_for("somewhere", tmp_path / "c")


def test_init_from_refuses_a_different_tokenizer(tmp_path):
    pytest.importorskip("tokenizers")
    pytest.importorskip("torch", reason="needs torch to build the HF model")
    from tests.test_hf import build_hf_model
    from tests.test_hf_tokenizer import write_bpe_tokenizer
    build_hf_model(tmp_path / "hf", "gpt2", True, vocab_size=320)
    write_bpe_tokenizer(tmp_path / "hf", vocab_size=320)
    trainer = trainer_for(f"hf:{tmp_path / 'hf'}", tmp_path / "run")
    with pytest.raises(UsageError, match="its tokenizer .* differs from the data's"):
        trainer.init_or_restore()
