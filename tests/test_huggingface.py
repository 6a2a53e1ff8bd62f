"""The published architectures in the course's classes: parity with Hugging Face's GPT-2 and BERT.

Small configurations built from ``transformers``' config classes, with every
parameter redrawn (layer norms and biases too, so that no zero or one hides
a mistake in the mapping), passed as models or saved to a temporary folder
in Hugging Face's layout. Nothing is downloaded. Run with ``-s`` to see the
largest difference of every case.
"""
import inspect
import json
import os
import sys

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach the network
transformers = pytest.importorskip("transformers")

from course_lib.attention import KVCache  # noqa: E402
from course_lib.generation import generate, left_pad  # noqa: E402
from course_lib.hub import BERTEncoder, from_huggingface, tokenizer_from_huggingface  # noqa: E402
from course_lib.models import BERT, GPT  # noqa: E402

TOLERANCE = 1e-4  # float32
VOCAB = 61


def redrawn(model, seed):
    """Every parameter drawn anew from N(0, 0.2^2), layer-norm weights from N(1, 0.2^2); eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            mean = 1.0 if "ln" in name.split(".")[-2].lower() and name.endswith("weight") else 0.0
            parameter.copy_(mean + 0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def gpt2():
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=40, n_embd=48, n_layer=3, n_head=4,
                                     bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    return redrawn(transformers.GPT2LMHeadModel(config), seed=0)


@pytest.fixture(scope="module")
def bert():
    config = transformers.BertConfig(vocab_size=VOCAB, max_position_embeddings=40, hidden_size=48,
                                     num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
                                     attn_implementation="eager")
    return redrawn(transformers.BertForMaskedLM(config), seed=1)


@pytest.fixture(scope="module")
def encoder():
    """A BERT-family encoder without a masked-LM head, shaped like all-MiniLM-L6-v2 but smaller."""
    config = transformers.BertConfig(vocab_size=VOCAB, max_position_embeddings=40, hidden_size=48,
                                     num_hidden_layers=2, num_attention_heads=6, intermediate_size=64,
                                     attn_implementation="eager")
    return redrawn(transformers.BertModel(config), seed=12)


def ids(batch, length, seed):
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def max_difference(case, ours, theirs):
    difference = (ours - theirs).abs().max().item()
    print(f"\n{case}: max |difference| = {difference:.2e} (values up to {theirs.abs().max().item():.1f})")
    assert difference < TOLERANCE, case
    return difference


def hf_positions(mask):
    """Hugging Face's position_ids for a left-padded batch (what its ``generate`` computes)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def hf_step(model, input_ids, cache, **kwargs):
    """One forward pass with Hugging Face's key/value cache, whatever this version calls it."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    output = model(input_ids, use_cache=True, **{name: cache}, **kwargs)
    return output.logits, getattr(output, name)


# -- what is copied ---------------------------------------------------------------------------------

def test_the_configuration_and_the_tied_embeddings_carry_over(gpt2, bert):
    ours_gpt, ours_bert = from_huggingface(gpt2), from_huggingface(bert)
    assert isinstance(ours_gpt, GPT) and isinstance(ours_bert, BERT)
    assert not ours_gpt.training and not ours_bert.training
    c = ours_gpt.config
    assert (c.vocab_size, c.max_len, c.d_model, c.n_heads, c.n_layers, c.d_ff) == (VOCAB, 40, 48, 4, 3, 192)
    assert (c.activation, c.layer_norm_eps) == ("gelu_tanh", 1e-5)
    assert (ours_bert.config.activation, ours_bert.config.layer_norm_eps) == ("gelu", 1e-12)
    assert ours_gpt.lm_head.weight is ours_gpt.body.token_embedding.weight
    assert ours_bert.mlm_head.token_embedding.weight is ours_bert.body.token_embedding.weight
    # Copies, not views: changing the course's model leaves Hugging Face's alone.
    with torch.no_grad():
        ours_gpt.body.token_embedding.weight.zero_()
    assert gpt2.transformer.wte.weight.abs().sum() > 0
    assert sum(p.numel() for p in ours_gpt.parameters()) == sum(p.numel() for p in gpt2.parameters())
    assert sum(p.numel() for p in ours_bert.parameters()) == sum(p.numel() for p in bert.parameters())


# -- GPT-2 ------------------------------------------------------------------------------------------

def test_gpt2_forward_matches(gpt2):
    ours, x = from_huggingface(gpt2), ids(3, 20, seed=2)
    with torch.no_grad():
        max_difference("GPT-2 forward", ours(x), gpt2(x).logits)


def test_gpt2_kv_cache_matches_step_by_step(gpt2):
    ours, x = from_huggingface(gpt2), ids(2, 16, seed=3)
    cache, their_cache = ours.new_cache(), None
    ours_logits, their_logits = [], []
    with torch.no_grad():
        for start, stop in [(0, 6)] + [(t, t + 1) for t in range(6, 16)]:  # the prompt, then one token at a time
            ours_logits.append(ours(x[:, start:stop], cache=cache))
            logits, their_cache = hf_step(gpt2, x[:, start:stop], their_cache)
            their_logits.append(logits)
        assert len(cache[0]) == 16
        max_difference("GPT-2 KV cache", torch.cat(ours_logits, 1), torch.cat(their_logits, 1))


def test_gpt2_left_padded_batch_matches(gpt2):
    ours = from_huggingface(gpt2)
    batch = left_pad([ids(1, n, seed=n)[0].tolist() for n in (12, 5, 9)], pad_id=0)
    x, mask = batch.input_ids, batch.attention_mask
    with torch.no_grad():
        mine = ours(x, mask)
        theirs = gpt2(x, attention_mask=mask.long(), position_ids=hf_positions(mask)).logits
        max_difference("GPT-2 left-padded batch", mine[mask], theirs[mask])
        alone = ours(x[1:2, -5:])  # the second row without its padding
        torch.testing.assert_close(mine[1, -5:], alone[0], atol=TOLERANCE, rtol=0)


def test_gpt2_left_padded_batch_with_kv_cache_matches(gpt2):
    ours = from_huggingface(gpt2)
    batch = left_pad([ids(1, n, seed=10 + n)[0].tolist() for n in (7, 3)], pad_id=0)
    x, mask = batch.input_ids, batch.attention_mask
    following = ids(2, 6, seed=4)
    cache, their_cache = ours.new_cache(), None
    ours_logits, their_logits = [ours(x, mask, cache=cache)[:, -1:]], []
    logits, their_cache = hf_step(gpt2, x, None, attention_mask=mask.long(), position_ids=hf_positions(mask))
    their_logits.append(logits[:, -1:])
    with torch.no_grad():
        for t in range(following.shape[1]):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.bool)], dim=1)
            ours_logits.append(ours(following[:, t:t + 1], mask, cache=cache))
            logits, their_cache = hf_step(gpt2, following[:, t:t + 1], their_cache, attention_mask=mask.long(),
                                          position_ids=hf_positions(mask)[:, -1:])
            their_logits.append(logits)
    max_difference("GPT-2 left-padded batch, KV cache", torch.cat(ours_logits, 1), torch.cat(their_logits, 1))


def test_greedy_generation_writes_what_hugging_face_writes(gpt2):
    ours = from_huggingface(gpt2)
    batch = left_pad([ids(1, n, seed=20 + n)[0].tolist() for n in (6, 2, 4)], pad_id=0)
    theirs = gpt2.generate(batch.input_ids, attention_mask=batch.attention_mask.long(), max_new_tokens=12,
                           do_sample=False, eos_token_id=0, pad_token_id=0)
    assert (theirs[:, 6:] == 0).any()  # a row ended early: both pad it with token 0 afterwards
    for use_cache in (True, False):
        mine = generate(ours, batch.input_ids, 12, greedy=True, use_cache=use_cache, eos_id=0,
                        attention_mask=batch.attention_mask)
        assert torch.equal(mine, theirs), use_cache


def test_attention_weights_of_a_head_match(gpt2, bert):
    """What notebook 11 draws: the course's stored weights are Hugging Face's attention probabilities."""
    for hf, x in ((gpt2, ids(2, 10, seed=5)), (bert, ids(2, 10, seed=6))):
        ours = from_huggingface(hf)
        attentions = [block.self_attention for block in ours.body.blocks]
        for attention in attentions:
            attention.store_attention_weights = True
        with torch.no_grad():
            ours(x)
            theirs = hf(x, output_attentions=True).attentions
        for layer, attention in enumerate(attentions):
            torch.testing.assert_close(attention.attention_weights, theirs[layer], atol=1e-5, rtol=0)


# -- BERT -------------------------------------------------------------------------------------------

def test_bert_forward_matches(bert):
    ours, x = from_huggingface(bert), ids(3, 20, seed=7)
    with torch.no_grad():
        max_difference("BERT forward", ours(x), bert(x).logits)


def test_bert_segments_match(bert):
    ours, x = from_huggingface(bert), ids(3, 20, seed=8)
    segments = torch.zeros_like(x)
    segments[:, 9:] = 1  # sentence B from position 9 on
    with torch.no_grad():
        mine = ours(x, segment_ids=segments)
        max_difference("BERT segments", mine, bert(x, token_type_ids=segments).logits)
        assert not torch.allclose(mine, ours(x))  # the segments do change the logits


def test_bert_padded_batches_match(bert):
    ours, x = from_huggingface(bert), ids(3, 14, seed=9)
    right = torch.ones_like(x, dtype=torch.bool)
    right[1, 8:], right[2, 4:] = False, False
    left = right.flip(1)
    with torch.no_grad():
        theirs = bert(x, attention_mask=right.long()).logits
        max_difference("BERT right-padded batch", ours(x, right)[right], theirs[right])
        theirs = bert(x, attention_mask=left.long(), position_ids=hf_positions(left)).logits
        max_difference("BERT left-padded batch", ours(x, left)[left], theirs[left])


# -- a BERT-family encoder without a masked-LM head (BertModel) ---------------------------------------

def test_an_encoder_without_a_head_matches_its_hidden_states(encoder):
    ours, x = from_huggingface(encoder), ids(3, 16, seed=13)
    assert isinstance(ours, BERTEncoder) and not ours.training
    assert not hasattr(ours, "mlm_head")
    pooler = sum(p.numel() for name, p in encoder.named_parameters() if name.startswith("pooler."))
    assert pooler > 0 and count(ours) == count(encoder) - pooler  # everything but the pooler is carried over
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, 10:], mask[2, 5:] = False, False
    segments = torch.zeros_like(x)
    segments[:, 8:] = 1
    with torch.no_grad():
        max_difference("encoder hidden states", ours(x), encoder(x).last_hidden_state)
        theirs = encoder(x, attention_mask=mask.long(), token_type_ids=segments).last_hidden_state
        max_difference("encoder, padded, two segments", ours(x, mask, segments)[mask], theirs[mask])


def test_the_encoder_computes_what_bert_encode_computes(bert):
    """BertForMaskedLM's body is a BertModel: the course's encoder of it is the course's BERT without its head."""
    ours_bert, ours_encoder, x = from_huggingface(bert), from_huggingface(bert.bert), ids(2, 12, seed=14)
    with torch.no_grad():
        torch.testing.assert_close(ours_encoder(x), ours_bert.encode(x), atol=0, rtol=0)


def test_the_encoder_s_attention_weights_match(encoder):
    ours, x = from_huggingface(encoder), ids(2, 9, seed=15)
    attentions = [block.self_attention for block in ours.body.blocks]
    for attention in attentions:
        attention.store_attention_weights = True
    with torch.no_grad():
        ours(x)
        theirs = encoder(x, output_attentions=True).attentions
    for layer, attention in enumerate(attentions):
        torch.testing.assert_close(attention.attention_weights, theirs[layer], atol=1e-5, rtol=0)


def count(model):
    return sum(p.numel() for p in model.parameters())


# -- by name, and what it refuses -------------------------------------------------------------------

def test_a_saved_model_loads_from_its_folder(gpt2, bert, encoder, tmp_path):
    x = ids(2, 8, seed=11)
    for hf, expected in ((gpt2, GPT), (bert, BERT), (encoder, BERTEncoder)):
        folder = tmp_path / type(hf).__name__
        hf.save_pretrained(folder)
        assert (folder / "model.safetensors").is_file()
        ours = from_huggingface(folder)
        assert type(ours) is expected
        with torch.no_grad():
            theirs = hf(x)
            theirs = theirs.logits if expected is not BERTEncoder else theirs.last_hidden_state
            torch.testing.assert_close(ours(x), theirs, atol=TOLERANCE, rtol=0)


def test_a_folder_with_pytorch_model_bin_loads_too(encoder, tmp_path):
    encoder.config.save_pretrained(tmp_path)
    torch.save(encoder.state_dict(), tmp_path / "pytorch_model.bin")
    x = ids(1, 7, seed=16)
    with torch.no_grad():
        torch.testing.assert_close(from_huggingface(str(tmp_path))(x), encoder(x).last_hidden_state,
                                   atol=TOLERANCE, rtol=0)


def test_a_bert_checkpoint_loads_with_its_head_only_when_it_has_one(bert, encoder, tmp_path):
    """config.json's architectures decide; a checkpoint that lacks a weight it claims is refused, never filled at random."""
    def saved_as(name, architecture):
        encoder.save_pretrained(tmp_path / name)
        config = json.loads((tmp_path / name / "config.json").read_text())
        (tmp_path / name / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
        return tmp_path / name

    assert isinstance(from_huggingface(saved_as("classifier", "BertForSequenceClassification")), BERTEncoder)
    with pytest.raises(ValueError, match=r"claims_a_head' holds no weights for cls\.predictions.*BertForMaskedLM"):
        from_huggingface(saved_as("claims_a_head", "BertForMaskedLM"))
    bert.save_pretrained(tmp_path / "mlm")
    assert isinstance(from_huggingface(tmp_path / "mlm"), BERT)


def test_a_folder_that_is_not_in_hugging_face_s_layout_is_refused_clearly(encoder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"'.*empty' is a folder without config\.json \(it holds nothing\); "
                                                r"expected a folder in Hugging Face's layout"):
        from_huggingface(empty)
    (tmp_path / "weights_only").mkdir()
    torch.save(encoder.state_dict(), tmp_path / "weights_only" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"without config\.json \(it holds \['pytorch_model\.bin'\]\)"):
        from_huggingface(tmp_path / "weights_only")
    encoder.config.save_pretrained(tmp_path / "config_only")
    with pytest.raises(FileNotFoundError, match=r"without weights \(it holds \['config\.json'\]\); expected .*"
                                                r"config\.json with model\.safetensors or pytorch_model\.bin"):
        from_huggingface(tmp_path / "config_only")


def test_other_models_are_refused_clearly(tmp_path):
    small = dict(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    with pytest.raises(TypeError, match="GPT2LMHeadModel, BertForMaskedLM or BertModel.*got GPT2Model"):
        from_huggingface(transformers.GPT2Model(transformers.GPT2Config(**small)))
    with pytest.raises(TypeError, match="got int"):
        from_huggingface(42)
    other = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                                   num_attention_heads=2, max_position_embeddings=16, word_embed_proj_dim=16)
    transformers.OPTForCausalLM(other).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'opt' model; from_huggingface knows the GPT-2 and BERT families"):
        from_huggingface(str(tmp_path))
    untied = transformers.GPT2LMHeadModel(transformers.GPT2Config(**small, tie_word_embeddings=False))
    with torch.no_grad():
        untied.lm_head.weight.normal_()
    with pytest.raises(ValueError, match="not tied"):
        from_huggingface(untied)
    with pytest.raises(ValueError, match="activation 'silu'"):
        from_huggingface(transformers.GPT2LMHeadModel(transformers.GPT2Config(**small, activation_function="silu")))


def test_without_the_extra_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    with pytest.raises(ImportError, match=r"optional extra 'hf'.*pip install -e \"\.\[hf\]\""):
        from_huggingface("gpt2")
    with pytest.raises(ImportError, match="optional extra 'hf'"):
        tokenizer_from_huggingface("gpt2")


def test_a_name_that_is_not_on_this_machine_fails_without_the_network():
    with pytest.raises(OSError):
        from_huggingface("gpt2-this-model-does-not-exist")


def test_the_published_configurations_in_the_course_s_terms():
    from course_lib.hub import config_from_huggingface
    from course_lib.models import TransformerConfig

    assert config_from_huggingface(transformers.GPT2Config()) == TransformerConfig(
        vocab_size=50257, max_len=1024, d_model=768, n_heads=12, n_layers=12, d_ff=3072, dropout=0.1,
        activation="gelu_tanh", layer_norm_eps=1e-5)
    assert config_from_huggingface(transformers.BertConfig()) == TransformerConfig(
        vocab_size=30522, max_len=512, d_model=768, n_heads=12, n_layers=12, d_ff=3072, dropout=0.1,
        activation="gelu", layer_norm_eps=1e-12)
    with torch.device("meta"):  # shapes only: the published sizes without any weight in memory
        assert sum(p.numel() for p in GPT(config_from_huggingface(transformers.GPT2Config())).parameters()) \
            == 124_439_808  # GPT-2 small, as Hugging Face counts it
    with pytest.raises(ValueError, match="'opt' configuration"):
        config_from_huggingface(transformers.OPTConfig())


def test_the_tokenizer_adapter_speaks_like_the_course_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    words = "[PAD] [UNK] [CLS] [SEP] [MASK] the cat sat on mat ##s".split()
    backend = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.Whitespace(), decoders.WordPiece()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    wordpiece = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer = tokenizer_from_huggingface(wordpiece)
    assert tokenizer.encode("the cats sat") == [5, 6, 10, 7]
    ids = tokenizer.encode("the cats sat on the [MASK]", style="bert")
    assert ids == [2, 5, 6, 10, 7, 8, 5, 4, 3]
    assert (tokenizer.mask_id, tokenizer.pad_id, tokenizer.vocab_size) == (4, 0, 11)
    assert tokenizer.decode(ids) == "the cats sat on the"
    assert tokenizer.convert_ids_to_tokens(torch.tensor(ids[:4])) == ["[CLS]", "the", "cat", "##s"]
    assert tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=True) == ["the", "cat", "##s", "sat", "on", "the"]
    with pytest.raises(TypeError, match="got int"):
        tokenizer_from_huggingface(3)


def test_a_tokenizer_loads_from_its_folder(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = "[PAD] [UNK] [CLS] [SEP] [MASK] the cat sat".split()
    backend = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                         mask_token="[MASK]").save_pretrained(tmp_path)
    tokenizer = tokenizer_from_huggingface(tmp_path)
    assert tokenizer.encode("the cat sat") == [5, 6, 7]
    assert (tokenizer.mask_id, tokenizer.vocab_size) == (4, 8)
