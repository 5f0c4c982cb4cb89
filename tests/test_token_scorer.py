"""TokenScorer, the lm-eval backend's scoring: a row's values are the model's log-probabilities of
its targets (checked against one unpadded forward pass), and they are bit for bit the same
whatever the batch size and whichever rows share its batch."""
import jax
import numpy as np

from lmjax.infer.token_scorer import TokenScorer
from lmjax.model import build_model
from lmjax.train.state import abstract_params
from tests import helpers

LENGTHS = (5, 30, 1, 17, 9)  # length buckets 16, 32, 16, 32, 16


def test_values_are_the_models_and_do_not_depend_on_batching():
    cfg = helpers.tiny_config({"model.max_seq_len": 32})
    model = build_model(cfg.model)
    params = helpers.randomize(helpers.strip_boxes(abstract_params(model, cfg)), seed=3, std=0.1)
    # Every row is a prefix of one sequence, so one causal forward pass is the reference for all.
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, size=max(LENGTHS) + 1)
    logits = np.asarray(jax.jit(model.apply)({"params": params}, tokens[None, :-1]))[0]
    logp = jax.nn.log_softmax(logits.astype(np.float64), axis=-1)
    rows = [(tokens[:n].tolist(), tokens[1:n + 1].tolist()) for n in LENGTHS]

    batched = TokenScorer(cfg, model, params, batch_size=16).score(rows)
    alone = TokenScorer(cfg, model, params, batch_size=1)
    for (inputs, targets), (row_logp, row_greedy) in zip(rows, batched):
        n = len(targets)
        np.testing.assert_allclose(row_logp, logp[np.arange(n), targets], rtol=0, atol=2e-5)
        np.testing.assert_array_equal(row_greedy, logits[:n].argmax(-1) == np.asarray(targets))
        one_logp, one_greedy = alone.score([(inputs, targets)])[0]
        np.testing.assert_array_equal(one_logp, row_logp)  # bit for bit
        np.testing.assert_array_equal(one_greedy, row_greedy)
