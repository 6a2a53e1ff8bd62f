"""Growing a pretrained vocabulary (notebook 09): new rows at the end, the old ids and what they compute unchanged."""
import pytest
import torch

from course_lib.hub import load_pretrained
from course_lib.lab.asking.vocabulary import add_words, grow_tokenizer

from tiny_checkpoints import save_tiny_checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


def test_grown_tokenizer_keeps_every_old_id():
    tokenizer = load_pretrained("tiny-bert").tokenizer
    grown = grow_tokenizer(tokenizer, ["where", "?", "alice", "where"])
    assert grown.id_to_token == tokenizer.id_to_token + ["where", "?"]
    assert grown.encode("where did alice go ?") == [tokenizer.vocab_size, grown.unk_id, tokenizer.token_to_id["alice"],
                                                    grown.unk_id, tokenizer.vocab_size + 1]
    with pytest.raises(ValueError, match="single tokens"):
        grow_tokenizer(tokenizer, ["two words"])
    with pytest.raises(TypeError, match="list of words"):
        grow_tokenizer(tokenizer, "where")


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt"])
def test_old_inputs_give_the_same_outputs_and_the_head_stays_tied(name, checkpoints):
    original, grown = load_pretrained(name, checkpoints), load_pretrained(name, checkpoints)
    tokenizer = add_words(grown.model, grown.tokenizer, ["where", "?"], seed=3)
    ids = torch.tensor([original.tokenizer.encode("alice went to the park to swim in the morning .")])
    V = original.tokenizer.vocab_size
    with torch.no_grad():
        before, after = original.model(ids), grown.model(ids)
    assert after.shape == (1, ids.shape[1], V + 2)
    torch.testing.assert_close(after[..., :V], before)        # old words: exactly as before
    assert grown.model.config.vocab_size == tokenizer.vocab_size == V + 2
    embedding = grown.model.body.token_embedding.weight
    head = grown.model.mlm_head.token_embedding.weight if name == "tiny-bert" else grown.model.lm_head.weight
    assert head is embedding                                   # one tensor: training one trains the other
    new_rows = embedding[V:].detach()
    assert not torch.equal(new_rows[0], new_rows[1])           # the noise makes the new words different
    torch.testing.assert_close(new_rows.mean(dim=0), embedding[:V].detach().mean(dim=0), atol=0.05, rtol=0)


def test_add_words_refuses_a_tokenizer_of_another_model(checkpoints):
    bert = load_pretrained("tiny-bert", checkpoints)
    add_words(bert.model, bert.tokenizer, ["where"])
    with pytest.raises(ValueError, match="do not belong together"):
        add_words(bert.model, bert.tokenizer, ["what"])


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt"])
def test_grown_rows_train_when_the_model_trains_and_stay_frozen_when_it_is_frozen(name, checkpoints):
    trainable, frozen = load_pretrained(name, checkpoints), load_pretrained(name, checkpoints)
    frozen.model.requires_grad_(False)
    for pretrained in (trainable, frozen):
        add_words(pretrained.model, pretrained.tokenizer, ["where", "?"])
    assert all(p.requires_grad for p in trainable.model.parameters())
    assert not any(p.requires_grad for p in frozen.model.parameters())
    ids = torch.tensor([[trainable.tokenizer.vocab_size, 5, 6]])  # the first new word, then two old ones
    trainable.model(ids).sum().backward()
    gradient = trainable.model.body.token_embedding.weight.grad
    assert gradient is not None and gradient[trainable.tokenizer.vocab_size].abs().sum() > 0
