"""The lm-evaluation-harness model `lmjax`: any lmjax workdir, export or hf:DIR under lm-eval.

  lm_eval --model lmjax --model_args model=runs/x[,step=N,batch_size=16,max_length=N] \\
      --tasks lmjax_cloze --include_path lmjax/eval_tasks

Requests are handled as lm-eval's own HF backend handles them, so the numbers are comparable:
  loglikelihood          the text pair encoded whole and split (TemplateLM), context + continuation
                         truncated from the left to max_length + 1 tokens, batches sorted longest
                         first (lm-eval's Collator) and right-padded; is_greedy = every
                         continuation token is the argmax.
  loglikelihood_rolling  lm-eval's rolling windows: the text led by the prefix token, disjoint
                         windows of max_length predictions, the last one with a full context.
  generate_until         the KV-cache Generator, greedy or sampled, at most max_gen_toks tokens,
                         cut at the first stop sequence (a batch ends once all rows hold
                         one); contexts keep their last max_length - max_gen_toks tokens.
Each request's values do not depend on the batch it shares. Requests that had to be truncated
are counted in one warning per call.
"""
import logging

import jax
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (Collator, handle_stop_sequences, normalize_gen_kwargs,
                                  postprocess_generated_text)
from tqdm import tqdm

from lmjax.errors import UsageError
from lmjax.infer.generate import Generator, Sampling, eos_ids
from lmjax.infer.token_scorer import TokenScorer

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256
SAMPLING_KEYS = ("do_sample", "temperature", "top_k", "top_p")


def _positive_int(name: str, value, default):
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--model_args {name}={value!r}: must be a positive integer") from None
    if number <= 0:
        raise UsageError(f"--model_args {name}={value}: must be a positive integer")
    return number


@register_model("lmjax")
class LmjaxLM(TemplateLM):
    """model=WORKDIR|EXPORT_DIR|hf:DIR (or run=a loaded Run, mesh=its mesh, from Python)."""

    def __init__(self, model=None, step=None, batch_size=None, max_length=None,
                 max_gen_toks=None, seed=0, run=None, mesh=None, max_batch_size=None,
                 device=None, **unknown):
        super().__init__()
        if unknown:
            raise UsageError(f"--model_args {sorted(unknown)[0]}=...: unknown to the lmjax "
                             "model; it takes model, step, batch_size, max_length, "
                             "max_gen_toks, seed")
        if run is None:
            if not model:
                raise UsageError("--model_args model=...: missing; give a training workdir, "
                                 "an lmjax-export directory or hf:DIR")
            from lmjax.hf import load_model
            run = load_model(str(model), None if step in (None, "") else
                             _positive_int("step", step, None))
        if run.tokenizer is None:
            raise UsageError(f"--model_args model={model}: has no tokenizer, so text cannot be "
                             "scored")
        self.run, self.tokenizer_ = run, run.tokenizer
        self.spec = model
        limit = run.cfg.model.max_seq_len
        self._max_length = _positive_int("max_length", max_length, limit)
        if self._max_length > limit:
            raise UsageError(f"--model_args max_length={self._max_length}: the model's context "
                             f"is model.max_seq_len={limit}; give at most that")
        if batch_size == "auto" or str(batch_size).startswith("auto"):
            log.warning("lmjax: batch_size=auto is not supported; using %d", DEFAULT_BATCH_SIZE)
            batch_size = None
        self._batch_size = _positive_int("batch_size", batch_size, DEFAULT_BATCH_SIZE)
        self._max_gen_toks = _positive_int("max_gen_toks", max_gen_toks, DEFAULT_MAX_GEN_TOKS)
        self.seed = int(seed)
        self.scorer = TokenScorer(run.cfg, run.model, run.params, mesh, self._batch_size)
        self.generator = Generator(run.cfg, run.params, self.scorer.mesh)
        self.truncated = {"loglikelihood": 0, "generate_until": 0}

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        """--model_args win over lm-eval's own flags (its --batch_size defaults to 1)."""
        extra = {k: v for k, v in (additional_config or {}).items()
                 if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        return cls.create_from_arg_obj(lm_eval_utils.simple_parse_args_string(arg_string),
                                       additional_config)

    def set_params(self, params, step=None):
        """New parameters of the same model (training-time evals), compiled functions kept."""
        self.scorer.params = self.generator.params = self.run.params = params
        self.run.step = step

    # -- what lm-eval asks of a model ------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer_.eos_id

    @property
    def prefix_token_id(self) -> int:
        for token in (self.tokenizer_.bos_id, self.tokenizer_.eos_id):
            if token >= 0:
                return token
        raise UsageError(f"the {self.tokenizer_.kind} tokenizer has no BOS or EOS token to lead "
                         "an empty context or a rolling window; use tasks with contexts")

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return f"lmjax-{self.tokenizer_.kind}"

    def get_model_info(self) -> dict:
        return {"model": str(self.spec), "step": self.run.step, "max_length": self.max_length}

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        """As an HF tokenizer encodes: BOS first when the tokenizer's models expect it."""
        ids = list(self.tokenizer_.encode(string))
        add = True if add_special_tokens is None else add_special_tokens
        if add and getattr(self.tokenizer_, "add_bos", False) and self.tokenizer_.bos_id >= 0:
            ids = [self.tokenizer_.bos_id] + ids
        return ids

    def tok_decode(self, tokens) -> str:
        return self.tokenizer_.decode(tokens)

    # -- scoring ---------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        def longest_first(request):
            tokens = request[1] + request[2]
            return -len(tokens), tuple(tokens)

        ordered = Collator(requests, sort_fn=longest_first)
        limit, results, truncated = self.max_length, [], 0
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                   desc="Running loglikelihood requests")
        for chunk in ordered.get_batched(n=self.batch_size):
            rows = []
            for (pair, context, continuation) in chunk:
                if not continuation:
                    raise UsageError(f"loglikelihood request {pair!r}: the continuation encodes "
                                     "to no tokens")
                if len(continuation) > limit:
                    raise UsageError(f"loglikelihood request {pair!r}: the continuation is "
                                     f"{len(continuation)} tokens, more than max_length={limit}")
                whole = (context + continuation)
                truncated += len(whole) > limit + 1
                whole = whole[-(limit + 1):]
                rows.append((whole[:-1], whole[1:]))
            for (_, _, continuation), (logp, greedy) in zip(chunk, self.scorer.score(rows)):
                n = len(continuation)
                results.append((float(logp[-n:].astype("float64").sum()),
                                bool(greedy[-n:].all())))
                bar.update(1)
        bar.close()
        self._warn_truncated("loglikelihood", truncated, len(requests),
                             f"context + continuation longer than max_length + 1 = {limit + 1} "
                             "tokens; their contexts were truncated from the left")
        return ordered.get_original(results)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for index, (text,) in enumerate(tqdm([r.args for r in requests],
                                             disable=disable_tqdm or self.rank != 0)):
            for context, continuation in map(
                    lm_eval_utils.make_disjoint_window,
                    lm_eval_utils.get_rolling_token_windows(
                        token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                        max_seq_len=self.max_length, context_len=1)):
                windows.append(((None, None), list(context), list(continuation)))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logp, _) in zip(owners, self._loglikelihood_tokens(windows, True)):
            totals[owner] += logp
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # -- generation ------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        def longest_first(request):
            return -len(self.tok_encode(request[0])), request[0]

        ordered = Collator([r.args for r in requests], sort_fn=longest_first,
                           group_by="gen_kwargs", group_fn=lambda request: request[1])
        results, truncated = [], 0
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                   desc="Running generate_until requests")
        stop_ids = eos_ids(self.tokenizer_)
        for chunk in ordered.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=None)
            max_gen_toks = int(kwargs.pop("max_gen_toks"))
            sampling = self._sampling(kwargs)
            max_context = self.max_length - max_gen_toks
            if max_context <= 0:
                raise UsageError(f"max_gen_toks={max_gen_toks} leaves no room for a context in "
                                 f"max_length={self.max_length}; lower it")
            prompts = []
            for context in contexts:
                ids = self.tok_encode(context)
                truncated += len(ids) > max_context
                prompts.append(ids[-max_context:])
            stops = [s for s in until if s]
            new = self.generator.generate(
                prompts, max_gen_toks, sampling, self.seed, stop_ids,
                complete=lambda ids: any(s in self.tok_decode(ids) for s in stops))
            for context, tokens in zip(contexts, new):
                text = postprocess_generated_text(self.tok_decode(tokens), until, None)
                results.append(text)
                self.cache_hook.add_partial("generate_until", (context, all_kwargs[0]), text)
                bar.update(1)
        bar.close()
        self._warn_truncated("generate_until", truncated, len(requests),
                             "contexts longer than max_length - max_gen_toks tokens; they were "
                             "truncated from the left")
        return ordered.get_original(results)

    @staticmethod
    def _sampling(kwargs) -> Sampling:
        ignored = sorted(k for k in kwargs if k not in SAMPLING_KEYS)
        if ignored:
            log.warning("lmjax: generation arguments %s are not supported and are ignored",
                        ", ".join(ignored))
        if not kwargs.get("do_sample") or not float(kwargs.get("temperature") or 0.0):
            return Sampling()
        return Sampling(temperature=float(kwargs["temperature"]),
                        top_k=int(kwargs.get("top_k") or 0),
                        top_p=float(kwargs.get("top_p") or 1.0))

    def _warn_truncated(self, kind: str, count: int, total: int, what: str):
        self.truncated[kind] += count
        if count and jax.process_index() == 0:
            log.warning("lmjax: %d of %d %s requests had %s", count, total, kind, what)
