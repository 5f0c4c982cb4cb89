"""A Chinchilla-style scaling study at CPU scale (Hoffmann et al. 2022, approach 3).

experiments/chinchilla_tiny.py redoes this study properly: held-out books, WSD cooldown
branches giving IsoFLOP profiles, both of the paper's fits with bootstrap intervals.

Five model sizes x three token budgets on SentencePiece-tokenized Tiny Shakespeare, every run
with its own cosine schedule ending at its budget (the paper's point: a schedule longer than the
run overstates the loss). lmjax-scaling then fits L(N, D) = E + A/N^alpha + B/D^beta with the
paper's Huber-on-log-loss objective and L-BFGS from its grid of initialisations, prints the fit
beside the paper's (alpha 0.34, beta 0.28) with the compute-optimal tokens per parameter it
implies, and draws iso-FLOP curves to ROOT/scaling.png.

  lmjax-prepare --input=lmjax/data/tinyshakespeare.txt --output=data/shakespeare_sp1024 \\
      --tokenizer=sentencepiece --vocab_size=1024
  lmjax-sweep --config=experiments/scaling_tiny.py --workdir=runs/scaling_tiny
  lmjax-scaling --workdir=runs/scaling_tiny

Budget: designed for about an hour on a quiet 2-core CPU, one point at a time (XLA uses both
cores): 6.0e13 training FLOPs (6ND summed over the points) plus ~10 s of start-up and compile
per point. `:quick` runs the same 15 points with 1/10 of the tokens, to check the pipeline.
A larger corpus (anything lmjax-prepare reads, e.g. --input='corpus/*.txt') goes in
--config.data.path; Tiny Shakespeare's 422k training tokens are seen up to 2.9 times by the
largest budget, which the paper's formula does not model (Muennighoff et al. 2023 find up to
~4 epochs cost little).

Sizes (parameters include embeddings, as Chinchilla counts them; vocab 1024, context 128):
  2 x 64, 2 x 96, 3 x 128, 4 x 160, 4 x 192 (layers x d_model, d_ff = 4 d_model, heads of 32)
Budgets: 150, 300, 600 steps of 16 x 128 tokens = 0.31M, 0.61M, 1.23M tokens.

Measured here (`lmjax-sweep` then `lmjax-scaling`, 2-core CPU): the 15 points took 62 min of
wall time, 32 min of it running (the sweep was paused meanwhile) and with other jobs sharing
the machine. Eval losses, by (layers x d_model, parameters), at 150 / 300 / 600 steps:
  2 x 64   (174k)  4.704 4.430 4.128
  2 x 96   (335k)  4.831 4.558 4.351
  3 x 128  (743k)  4.574 4.271 3.906
  4 x 160  (1.42M) 4.635 4.325 3.874
  4 x 192  (2.00M) 4.867 4.592 4.343
lmjax-scaling fit (Huber objective 4.3e-4):   E 1.7e-14 (paper 1.69), A 2081 (406.4),
B 16.6 (410.7), alpha 0.81 (0.34), beta 0.10 (0.28); compute-optimal tokens per parameter at
the study's largest budget 1.12e3 (the paper's formula: 8.75).
The fit is not Chinchilla's law: at 150-600 steps every run is far from converged, and the loss
is not monotonic in N (the d_model 96 and 192 models learn more slowly than their neighbours
at this learning rate), so E collapses to 0 and the data term carries the fit. It shows the
pipeline end to end at CPU scale; a faithful reproduction needs budgets of thousands of steps
per point and a learning rate tuned per width. `:quick` (the same points with 1/10 of the
tokens) ran in 14 min and gave a similar degenerate fit.
"""
from lmjax.config import base_config

SIZES = [(2, 64), (2, 96), (3, 128), (4, 160), (4, 192)]  # (layers, d_model)
STEPS = [150, 300, 600]
DATA = "data/shakespeare_sp1024"  # written by the lmjax-prepare command above


def get_config(arg=None):
    if arg not in (None, "quick"):
        raise ValueError(f"unknown variant {arg!r}; use :quick or nothing")
    c = base_config()
    m = c.model
    m.num_layers, m.d_model, m.num_heads, m.d_ff = 2, 64, 2, 256
    m.vocab_size = 1024
    m.max_seq_len = 128
    m.positions, m.norm, m.mlp = "learned", "layernorm", "gelu"
    t = c.train
    t.batch_size, t.seq_len = 16, 128
    t.steps = STEPS[0]
    t.eval_every = 150
    t.eval_steps = 16  # 16 x 16 x 128 = 33k tokens: the whole validation split
    t.log_every = 10
    t.checkpoint_every = 150
    t.sample_tokens = 0
    o = c.optim
    o.lr, o.min_lr = 3e-3, 3e-4
    o.warmup_steps = 15
    o.decay_steps = 0  # each run's cosine ends at its own budget
    o.weight_decay = 0.1
    o.b2 = 0.99
    c.metrics.tensorboard = False
    c.data.path = DATA
    c.data.tokenizer = "sentencepiece"
    if arg == "quick":
        t.eval_every = t.checkpoint_every = 15
        t.eval_steps = 4
        o.warmup_steps = 3
    return c


def sweep(add, arg=None):
    scale = 10 if arg == "quick" else 1
    for layers, d_model in SIZES:
        for steps in STEPS:
            add(**{"model.num_layers": layers, "model.d_model": d_model,
                   "model.num_heads": d_model // 32, "model.d_ff": 4 * d_model,
                   "train.steps": steps // scale})
