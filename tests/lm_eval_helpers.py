"""Tiny GPT-2 / LLaMA HF directories (perturbed random weights, a BPE tokenizer trained offline on
Tiny Shakespeare) and lm-eval runs of them through the `hf` and `lmjax` backends."""
import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 320
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
TASKS = ("lmjax_cloze", "lmjax_choice", "lmjax_arithmetic", "lmjax_rolling")


def build_hf_dir(directory, kind: str, context: int, seed: int = 0, width: int = 64,
                 layers: int = 2):
    import transformers
    from tests.hf_parity import perturbed_hf_model
    from tests.test_hf_tokenizer import write_bpe_tokenizer
    write_bpe_tokenizer(directory, vocab_size=VOCAB, bos=kind == "llama")
    # The class named, so transformers reads tokenizer.json as it is (BOS from its post-processor).
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "bos_token": "<s>",
         "tokenizer_class": "PreTrainedTokenizerFast"}))
    ids = {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 0}
    if kind == "gpt2":
        config = transformers.GPT2Config(n_embd=width, n_layer=layers, n_head=4,
                                         n_positions=context, **ids)
    else:
        config = transformers.LlamaConfig(
            hidden_size=width, intermediate_size=width * 3 // 2, num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=context, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **ids)
    perturbed_hf_model(config, directory, seed)
    return str(directory)


_MANAGER = []


def task_manager():
    if not _MANAGER:
        from lmjax.infer import harness
        _MANAGER.append(harness.task_manager(TASKS))
    return _MANAGER[0]


def run_tasks(lm, tasks=TASKS, limit=None, batch_size=None):
    """(lm-eval results, {(task, doc_id): [response per request]}) for an LM or a backend name."""
    from lmjax.infer import harness
    results = harness.evaluate(lm, tasks, task_manager(), limit=limit, log_samples=True)
    responses = {(task, s["doc_id"]): [r[0] for r in s["resps"]]
                 for task, samples in results["samples"].items() for s in samples}
    return results, responses


def hf_lm(directory, batch_size=1, max_length=None):
    from lm_eval.models.huggingface import HFLM
    extra = {"max_length": max_length} if max_length else {}
    return HFLM(pretrained=directory, dtype="float32", device="cpu", batch_size=batch_size,
                **extra)


def lmjax_lm(directory, batch_size=16, max_length=None):
    from lmjax.infer.lm_eval_backend import LmjaxLM
    return LmjaxLM(model=f"hf:{directory}", batch_size=batch_size, max_length=max_length)


def assert_same_responses(ours, reference, atol=1e-4, rtol=1e-6):
    """Loglikelihoods within atol + rtol·|value| (float32 sums of hundreds of tokens), the rest
    (is_greedy, generated text) identical."""
    assert ours.keys() == reference.keys()
    worst = 0.0
    for key, responses in ours.items():
        for a, b in zip(responses, reference[key], strict=True):
            if isinstance(b, str):
                assert a == b, (key, a, b)
                continue
            value_a, value_b = (a[0], b[0]) if isinstance(b, (tuple, list)) else (a, b)
            if isinstance(b, (tuple, list)):
                assert bool(a[1]) == bool(b[1]), (key, a, b)
            assert abs(value_a - value_b) <= atol + rtol * abs(value_b), (key, a, b)
            worst = max(worst, abs(value_a - value_b))
    return worst


def accuracies(results):
    from lmjax.infer.harness import flat_metrics
    return {k: v for k, v in flat_metrics(results).items()
            if k.rsplit("/", 1)[1] in ("acc", "acc_norm", "exact_match")}
