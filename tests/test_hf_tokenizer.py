"""HF tokenizer files behind lmjax's Tokenizer interface, checked against transformers' own."""
import io
import json

import pytest

from lmjax.data.hf_tokenizer import load_hf_tokenizer
from tests.helpers import SHAKESPEARE

tokenizers = pytest.importorskip("tokenizers", reason="tokenizer.json needs `tokenizers`")

TEXT = open(SHAKESPEARE, encoding="utf-8").read()[:20000]


def write_bpe_tokenizer(directory, vocab_size=320, bos=False):
    """A byte-level BPE tokenizer.json trained offline on Tiny Shakespeare (GPT-2 style)."""
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<s>"]
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "bos_token": "<s>"}))
    return tok


def test_tokenizer_json_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    write_bpe_tokenizer(tmp_path)
    ours = load_hf_tokenizer(str(tmp_path))
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    sample = TEXT[:3000] + " naïve ünïcode ✓"
    ids = ours.encode(sample)
    assert ids == theirs.encode(sample, add_special_tokens=False)
    assert ours.decode(ids) == sample
    assert ours.vocab_size == len(theirs) == 320
    assert ours.eos_id == theirs.convert_tokens_to_ids("<|endoftext|>") and not ours.add_bos


def test_bos_from_post_processor_and_ids_from_config(tmp_path):
    write_bpe_tokenizer(tmp_path, bos=True)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    tok = load_hf_tokenizer(str(tmp_path), {"bos_token_id": 1, "eos_token_id": [0, 1]})
    assert tok.add_bos and tok.bos_id == 1 and tok.eos_ids == [0, 1]


def test_sentencepiece_model_encodes_whole_text(tmp_path):
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT.split("\n")), model_writer=model,
                                   vocab_size=400, model_type="bpe", byte_fallback=True,
                                   minloglevel=2)
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    tok = load_hf_tokenizer(str(tmp_path))
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    sample = TEXT[:2000]
    # The whole text at once (as HF's LLaMA tokenizer does), special ids from the model file.
    assert tok.encode(sample) == processor.encode(sample)
    assert tok.decode(tok.encode(sample)) == processor.decode(processor.encode(sample))
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.vocab_size) == (1, 2, True, 400)
