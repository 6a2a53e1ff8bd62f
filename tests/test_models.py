"""Blocks and models: parity with PyTorch, masks, shapes, BERT and GPT contracts."""
import pytest
import torch
from torch import nn

from course_lib.attention import causal_mask
from course_lib.layers import DecoderBlock, EncoderBlock, FeedForward
from course_lib.models import BERT, GPT, Decoder, Encoder, EncoderDecoder, TransformerConfig


def copy_into_torch_layer(ours, theirs):
    """Copy an EncoderBlock's weights into nn.TransformerEncoderLayer (or a decoder layer)."""
    def copy_attention(mine, torch_mha):
        torch_mha.in_proj_weight.data.copy_(torch.cat([mine.q_proj.weight, mine.k_proj.weight, mine.v_proj.weight]))
        torch_mha.in_proj_bias.data.copy_(torch.cat([mine.q_proj.bias, mine.k_proj.bias, mine.v_proj.bias]))
        torch_mha.out_proj.weight.data.copy_(mine.out_proj.weight)
        torch_mha.out_proj.bias.data.copy_(mine.out_proj.bias)

    copy_attention(ours.self_attention, theirs.self_attn)
    theirs.linear1.load_state_dict(ours.feed_forward.linear1.state_dict())
    theirs.linear2.load_state_dict(ours.feed_forward.linear2.state_dict())
    theirs.norm1.load_state_dict(ours.norm1.state_dict())
    if ours.cross_attention is not None:
        copy_attention(ours.cross_attention, theirs.multihead_attn)
        theirs.norm2.load_state_dict(ours.norm_cross.state_dict())
        theirs.norm3.load_state_dict(ours.norm2.state_dict())
    else:
        theirs.norm2.load_state_dict(ours.norm2.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_block_equals_pytorch(norm_first, activation):
    torch.manual_seed(0)
    ours = EncoderBlock(32, 4, 64, dropout=0.1, norm_first=norm_first, activation=activation).eval()
    theirs = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, activation=activation, batch_first=True,
                                        norm_first=norm_first).eval()
    copy_into_torch_layer(ours, theirs)
    x = torch.randn(3, 7, 32)
    real = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4]).bool()
    mask = real[:, None, None, :]
    expected = theirs(x, src_key_padding_mask=~real)
    got = ours(x, mask=mask)
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_equals_pytorch(norm_first):
    torch.manual_seed(1)
    ours = DecoderBlock(32, 4, 64, norm_first=norm_first, activation="relu").eval()
    theirs = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    copy_into_torch_layer(ours, theirs)
    x, memory = torch.randn(2, 6, 32), torch.randn(2, 9, 32)
    expected = theirs(x, memory, tgt_mask=~causal_mask(6))  # PyTorch: True = may NOT attend
    torch.testing.assert_close(ours(x, memory=memory), expected, atol=1e-5, rtol=1e-5)


def test_feed_forward_acts_on_each_position_alone():
    ff = FeedForward(8, 16)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(ff(x)[:, 2], ff(x[:, 2:3])[:, 0])
    with pytest.raises(ValueError, match="activation"):
        FeedForward(8, 16, activation="tanh")


def tiny_config(**overrides):
    settings = dict(vocab_size=50, max_len=16, d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0)
    settings.update(overrides)
    return TransformerConfig(**settings)


@pytest.mark.parametrize("model_class", [GPT, lambda c: Decoder(c, cross_attention=False)])
def test_causal_outputs_never_depend_on_later_tokens(model_class):
    torch.manual_seed(2)
    model = model_class(tiny_config()).eval()
    ids = torch.randint(0, 50, (3, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(0, 50, (3, 5))
    before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_encoder_and_bert_see_both_sides():
    torch.manual_seed(3)
    for model in (Encoder(tiny_config()).eval(), BERT(tiny_config()).eval()):
        ids = torch.randint(7, 50, (2, 10))
        changed = ids.clone()
        changed[:, -1] = (ids[:, -1] + 1) % 43 + 7
        assert not torch.allclose(model(ids)[:, 0], model(changed)[:, 0])


def test_bert_padding_never_influences_real_tokens():
    torch.manual_seed(4)
    bert = BERT(tiny_config()).eval()
    ids = torch.randint(7, 50, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    other = ids.clone()
    other[1, 6:] = torch.randint(7, 50, (4,))
    torch.testing.assert_close(bert(ids, mask)[1, :6], bert(other, mask)[1, :6])
    torch.testing.assert_close(bert(ids, mask)[1, :6], bert(ids[1:, :6])[0])
    assert bert.encode(ids).shape == (2, 10, 32)


def test_contract_shapes_and_tied_heads():
    config = tiny_config()
    gpt, bert = GPT(config), BERT(config)
    ids = torch.randint(0, 50, (2, 9))
    assert gpt(ids).shape == (2, 9, 50) and bert(ids).shape == (2, 9, 50)
    assert gpt.lm_head.weight is gpt.body.token_embedding.weight
    assert bert.mlm_head.token_embedding.weight is bert.body.token_embedding.weight
    # The three visible differences between the two.
    assert gpt.body.causal and not bert.body.causal
    assert gpt.body.norm_first and not bert.body.norm_first


def test_clear_errors_for_bad_input():
    gpt = GPT(tiny_config())
    with pytest.raises(ValueError, match="max_len=16"):
        gpt(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^input_ids holds id 50, outside the vocabulary \(0 to 49\)"):
        gpt(torch.tensor([[1, 2, 50]]))
    with pytest.raises(ValueError, match=r"^input_ids holds id -1, outside the vocabulary"):
        BERT(tiny_config())(torch.tensor([[1, -1, 3]]))
    with pytest.raises(ValueError, match=r"^attention_mask has shape \(1, 4\), expected \(B, T\) = \(1, 3\)"):
        gpt(torch.tensor([[1, 2, 3]]), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^attention_mask must be bool or hold only 0 and 1"):
        BERT(tiny_config())(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 0]]))
    with pytest.raises(TypeError, match="integer tensor"):
        gpt(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(d_model=30)
    with pytest.raises(ValueError, match="memory"):
        Decoder(tiny_config())(torch.zeros(1, 3, dtype=torch.long))


def test_kv_cache_gives_the_same_logits_as_a_full_pass():
    torch.manual_seed(5)
    gpt = GPT(tiny_config()).eval()
    ids = torch.randint(0, 50, (2, 10))
    full = gpt(ids)
    cache = gpt.new_cache()
    pieces = [gpt(ids[:, :4], cache=cache)] + [gpt(ids[:, t:t + 1], cache=cache) for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_encoder_decoder_shapes_and_greedy_decoding():
    torch.manual_seed(6)
    source, target = tiny_config(vocab_size=40), tiny_config(vocab_size=30, max_len=12)
    model = EncoderDecoder(source, target).eval()
    src = torch.randint(7, 40, (3, 9))
    tgt = torch.randint(7, 30, (3, 5))
    assert model(src, tgt).shape == (3, 5, 30)
    out = model.greedy_decode(src, bos_id=5, eos_id=6, max_len=12)
    assert out.shape[0] == 3 and out.shape[1] <= 12 and (out[:, 0] == 5).all()
    # Greedy decoding is teacher forcing on its own output: each token is the argmax there.
    logits = model(src, out[:, :-1])
    finished_before = torch.cumsum(out[:, 1:] == 6, dim=1) - (out[:, 1:] == 6).long() > 0
    predicted = logits.argmax(-1)
    assert (predicted[~finished_before] == out[:, 1:][~finished_before]).all()


def test_is_causal_fast_path_equals_explicit_causal_mask():
    from course_lib.attention import MultiHeadAttention

    torch.manual_seed(7)
    mha = MultiHeadAttention(32, 4).eval()
    x = torch.randn(2, 9, 32)
    expected = mha(x, mask=causal_mask(9), need_weights=True)
    torch.testing.assert_close(mha(x, is_causal=True), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mha(x, is_causal=True, need_weights=True), expected)
    assert (mha.attention_weights.triu(1) == 0).all()
    real = torch.ones(2, 9, dtype=torch.bool)
    real[1, 6:] = False
    both = mha(x, mask=real[:, None, None, :], is_causal=True)
    torch.testing.assert_close(both, mha(x, mask=real[:, None, None, :] & causal_mask(9)))


def test_a_query_without_keys_is_no_error_in_the_models():
    """Contract: a padded position whose mask row allows no key is not an error; its output is unused."""
    torch.manual_seed(8)
    gpt, bert = GPT(tiny_config()).eval(), BERT(tiny_config()).eval()
    ids = torch.randint(7, 50, (2, 6))
    left_padded = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    assert torch.isfinite(gpt(ids, left_padded)[left_padded]).all()  # positions 0-1 of row 0 see no real token
    padding_only = torch.tensor([[True] * 6, [False] * 6])
    torch.testing.assert_close(bert(ids, padding_only)[0], bert(ids[:1])[0])


def test_layer_norm_placement_belongs_to_the_model():
    # BERT is post-norm and GPT pre-norm, whatever the config says: the config has no such field.
    with pytest.raises(TypeError, match="norm_first"):
        tiny_config(norm_first=True)
    assert not Encoder(tiny_config()).norm_first and Encoder(tiny_config(), norm_first=True).norm_first
    translator = EncoderDecoder(tiny_config(), tiny_config(), norm_first=True)
    assert translator.encoder.norm_first and translator.decoder.norm_first



# -- what the published models need, with the tiny models unchanged ----------------------------------

def reference_logits(model, ids, mask=None):
    """The tiny models' forward pass as it was before the configuration grew, in torch.nn.functional calls.

    Exact GELU and layer norms with eps 1e-5 everywhere: the defaults must
    keep computing exactly this, bit for bit.
    """
    import torch.nn.functional as F

    bert = isinstance(model, BERT)
    body, (B, T) = model.body, ids.shape
    norm = lambda x, ln: F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, 1e-5)  # noqa: E731
    x = F.embedding(ids, body.token_embedding.weight)
    if bert:
        x = x + F.embedding(torch.zeros_like(ids), model.segment_embedding.weight)
    x = x + F.embedding(torch.arange(T), body.position.embedding.weight)
    if bert:
        x = norm(x, body.embedding_norm)
    key_mask = None if mask is None else mask.bool()[:, None, None, :]
    if not bert and key_mask is not None:
        key_mask = key_mask & causal_mask(T)

    def attend(h, mha):
        heads = [F.linear(h, p.weight, p.bias).reshape(B, T, mha.n_heads, -1).transpose(1, 2)
                 for p in (mha.q_proj, mha.k_proj, mha.v_proj)]
        out = F.scaled_dot_product_attention(*heads, attn_mask=key_mask, dropout_p=0.0,
                                             is_causal=not bert and key_mask is None)
        out = out.transpose(1, 2).reshape(B, T, -1)
        return F.linear(out, mha.out_proj.weight, mha.out_proj.bias)

    def feed_forward(h, ff):
        return F.linear(F.gelu(F.linear(h, ff.linear1.weight, ff.linear1.bias)), ff.linear2.weight, ff.linear2.bias)

    for block in body.blocks:
        if bert:
            x = norm(x + attend(x, block.self_attention), block.norm1)
            x = norm(x + feed_forward(x, block.feed_forward), block.norm2)
        else:
            x = x + attend(norm(x, block.norm1), block.self_attention)
            x = x + feed_forward(norm(x, block.norm2), block.feed_forward)
    if bert:
        head = model.mlm_head
        h = norm(F.gelu(F.linear(x, head.dense.weight, head.dense.bias)), head.norm)
        return h @ head.token_embedding.weight.T + head.bias
    return F.linear(norm(x, body.final_norm), model.lm_head.weight)


@pytest.mark.parametrize("name", ["tiny-gpt", "tiny-bert"])
def test_the_shipped_models_compute_exactly_what_they_did(name):
    import json

    from course_lib.hub import CHECKPOINT_DIR, load_pretrained

    stored = json.loads((CHECKPOINT_DIR / name / "config.json").read_text())["model"]
    assert "layer_norm_eps" not in stored  # the files are unchanged: the new fields take their defaults
    pretrained = load_pretrained(name)
    assert pretrained.config == TransformerConfig(**stored)
    assert (pretrained.config.activation, pretrained.config.layer_norm_eps) == ("gelu", 1e-5)
    ids = torch.randint(7, pretrained.config.vocab_size, (4, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 12:], mask[3, 5:] = False, False
    with torch.no_grad():
        assert torch.equal(pretrained.model(ids), reference_logits(pretrained.model, ids))
        assert torch.equal(pretrained.model(ids, mask)[mask], reference_logits(pretrained.model, ids, mask)[mask])


def test_the_published_models_settings():
    config = tiny_config(activation="gelu_tanh", layer_norm_eps=1e-12)
    bert, gpt = BERT(config).eval(), GPT(config)
    assert bert.mlm_head.activation.approximate == "tanh"  # the head uses the configured activation too
    assert all(block.feed_forward.activation.approximate == "tanh" for block in gpt.body.blocks)
    norms = [m for m in bert.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 2 and all(m.eps == 1e-12 for m in norms)
    x = torch.randn(5)
    torch.testing.assert_close(gpt.body.blocks[0].feed_forward.activation(x),
                               0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3))))
    with pytest.raises(ValueError, match="activation must be 'gelu', 'gelu_tanh' or 'relu', got 'silu'"):
        tiny_config(activation="silu")
    for bad in (0, -1e-5, "1e-5", True):
        with pytest.raises(ValueError, match="layer_norm_eps must be a small positive number"):
            tiny_config(layer_norm_eps=bad)


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_left_padded_rows_get_the_logits_they_get_alone(positional):
    torch.manual_seed(9)
    gpt, bert = GPT(tiny_config(positional=positional)).eval(), BERT(tiny_config(positional=positional)).eval()
    ids = torch.randint(7, 50, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, :4] = False  # row 1 is five tokens, padded on the left
    for model in (gpt, bert):
        torch.testing.assert_close(model(ids, mask)[1, 4:], model(ids[1:, 4:])[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(ids, mask)[0], model(ids[:1])[0], atol=1e-5, rtol=1e-5)
    cache = gpt.new_cache()  # the same with a cache, the mask covering cached tokens too
    first = gpt(ids[:, :6], mask[:, :6], cache=cache)
    rest = gpt(ids[:, 6:], mask, cache=cache)
    torch.testing.assert_close(torch.cat([first, rest], 1)[mask], gpt(ids, mask)[mask], atol=1e-5, rtol=1e-5)


def test_attention_maps_of_a_left_padded_batch_are_no_error():
    torch.manual_seed(10)
    gpt = GPT(tiny_config()).eval()
    ids, mask = torch.randint(7, 50, (2, 6)), torch.tensor([[False, False, True, True, True, True], [True] * 6])
    fast = gpt(ids, mask)
    for block in gpt.body.blocks:
        block.self_attention.store_attention_weights = True
    readable = gpt(ids, mask)  # the readable path, which keeps the weights for plotting
    torch.testing.assert_close(readable[mask], fast[mask], atol=1e-5, rtol=1e-5)
    weights = gpt.body.blocks[0].self_attention.attention_weights  # (B, n_heads, T, T)
    assert (weights[0, :, :2] == 0).all()  # the padded queries attend to nothing
    torch.testing.assert_close(weights.transpose(1, 2)[mask].sum(-1), torch.ones(10, 4))  # real queries: sum 1
