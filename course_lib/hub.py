"""A tiny model hub: saving and loading the pretrained checkpoints shipped inside the package.

Real courses download BERT or GPT-2 from a hub. Ours must work offline, so
``course pretrain NAME`` (``lab.pretraining.pretrain``) trains the models
with this package's own code and saves them in ``course_lib/checkpoints/NAME/``:

    model.pt       the weights (a state dict)
    config.json    the TransformerConfig and the training recipe
    vocab.json     the tokenizer's vocabulary
    metrics.json   what the model reached when it was saved

``load_pretrained(NAME)`` loads them strictly: every weight must fit
today's classes exactly, so a renamed layer fails loudly instead of leaving
a randomly initialised one behind.

The published models come in too (notebook 11): ``from_huggingface`` copies
a Hugging Face GPT-2 or BERT into the course's ``GPT`` or ``BERT``,
``config_from_huggingface`` translates its configuration and
``tokenizer_from_huggingface`` gives its tokenizer the course tokenizer's
methods. They need the optional extra ``hf`` (``transformers``), which
only they import, and never download anything unless given a name that is
not yet on the machine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.tokenizer import Tokenizer

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
MODELS = {"tiny-bert": BERT, "tiny-gpt": GPT}
# BERT's masked-LM head reads the token embedding backwards: one tensor that
# state_dict() lists under two names. A checkpoint stores it once, under the
# embedding's name; loading gives the head's name the same tensor again.
TIED_WEIGHTS = {"mlm_head.token_embedding.weight": "body.token_embedding.weight"}


@dataclass
class Pretrained:
    """A loaded checkpoint: the model (in eval mode), its tokenizer, config and recorded metrics."""

    name: str
    model: nn.Module
    tokenizer: Tokenizer
    config: TransformerConfig
    metrics: dict[str, float]


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}")


def save_pretrained(name: str, model: nn.Module, tokenizer: Tokenizer, metrics: dict[str, float],
                    recipe: dict | None = None, directory: Path = CHECKPOINT_DIR) -> Path:
    """Write a checkpoint folder; returns its path."""
    _check_name(name)
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: weights for key, weights in model.state_dict().items() if key not in TIED_WEIGHTS}
    torch.save(state, folder / "model.pt")
    config = {"model": model.config.to_dict(), "recipe": recipe or {}}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save(folder / "vocab.json")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return folder


def load_pretrained(name: str, directory: Path = CHECKPOINT_DIR) -> Pretrained:
    """Load a shipped checkpoint strictly, in eval mode."""
    _check_name(name)
    folder = Path(directory) / name
    if not (folder / "model.pt").exists():
        raise FileNotFoundError(f"no checkpoint {name!r} in {folder.parent}; create it with `course pretrain {name}`")
    config = TransformerConfig(**json.loads((folder / "config.json").read_text())["model"])
    model = MODELS[name](config)
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    for tied, embedding in TIED_WEIGHTS.items():
        if tied in model.state_dict() and embedding in state:
            state[tied] = state[embedding]
    model.load_state_dict(state, strict=True)
    model.eval()
    tokenizer = Tokenizer.load(folder / "vocab.json")
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{name}: vocab.json has {tokenizer.vocab_size} tokens, the model {config.vocab_size}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return Pretrained(name, model, tokenizer, config, metrics)


# -- the published models, through Hugging Face's transformers (notebook 11) -----------------------

HF_EXTRA = 'pip install -e ".[hf]"  (or: pip install transformers)'
# transformers' names of the activations the course's classes have.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def _import_transformers():
    try:
        import transformers
    except ImportError as error:
        raise ImportError(f"the published GPT-2 and BERT need the optional extra 'hf' (transformers): "
                          f"{HF_EXTRA}") from error
    return transformers


def from_huggingface(model_or_name) -> nn.Module:
    """The course's ``GPT`` or ``BERT`` holding the weights of a ``transformers`` GPT-2 or BERT.

    model_or_name: a ``transformers.GPT2LMHeadModel`` or
        ``BertForMaskedLM`` instance, or a name such as ``"gpt2"`` or
        ``"bert-base-uncased"`` (or a local folder), which ``transformers``
        loads first: from its cache on this machine, or downloaded once
        when the machine is online.

    Returns the model in eval mode, in float32 on the CPU, with its
    ``TransformerConfig`` set from the published configuration (GPT-2's
    tanh GELU, BERT's layer-norm epsilon of 1e-12). Every weight is copied
    and the tied embeddings stay tied. GPT-2 stores its attention weights
    fused and transposed (one ``Conv1D`` computes x @ W with W of shape
    (d_model, 3 d_model)): they are split into the query, key and value
    projections and transposed into ``nn.Linear``'s (out, in) layout.
    """
    transformers = _import_transformers()
    model = _load_by_name(transformers, model_or_name) if isinstance(model_or_name, (str, Path)) else model_or_name
    if isinstance(model, transformers.GPT2LMHeadModel):
        return _gpt_from_gpt2(model)
    if isinstance(model, transformers.BertForMaskedLM):
        return _bert_from_bert(model)
    raise TypeError(f"model_or_name must be a transformers GPT2LMHeadModel or BertForMaskedLM, or the name of "
                    f"one, got {type(model).__name__}")


def _load_by_name(transformers, name):
    config = transformers.AutoConfig.from_pretrained(str(name))
    classes = {"gpt2": transformers.GPT2LMHeadModel, "bert": transformers.BertForMaskedLM}
    if config.model_type not in classes:
        raise ValueError(f"{str(name)!r} is a {config.model_type!r} model; from_huggingface knows the GPT-2 "
                         f"and BERT families ({', '.join(sorted(classes))})")
    return classes[config.model_type].from_pretrained(str(name))


def _activation(hf_name) -> str:
    if hf_name not in HF_ACTIVATIONS:
        raise ValueError(f"the model's activation {hf_name!r} is not one of the course's "
                         f"({', '.join(sorted(HF_ACTIVATIONS))})")
    return HF_ACTIVATIONS[hf_name]


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"this model differs from the course's classes: {what}")


def _check_tied(head_weight: torch.Tensor, embedding: torch.Tensor, family: str) -> None:
    _require(head_weight is embedding or torch.equal(head_weight, embedding),
             f"its output layer is not tied to its token embedding, as the course's {family} requires")


def config_from_huggingface(hf_config) -> TransformerConfig:
    """The ``TransformerConfig`` of a ``transformers`` ``GPT2Config`` or ``BertConfig``, in the course's terms.

    ``config_from_huggingface(transformers.GPT2Config())`` is GPT-2 small,
    ``config_from_huggingface(transformers.BertConfig())`` BERT-base: no
    weights are needed to know their shapes.
    """
    c, family = hf_config, getattr(hf_config, "model_type", None)
    if family == "gpt2":
        _require(not c.add_cross_attention, "GPT-2 with cross-attention")
        _require(c.scale_attn_weights and not c.scale_attn_by_inverse_layer_idx,
                 "attention scores not scaled by 1 / sqrt(d_head) alone")
        return TransformerConfig(vocab_size=c.vocab_size, max_len=c.n_positions, d_model=c.n_embd,
                                 n_heads=c.n_head, n_layers=c.n_layer, d_ff=c.n_inner or 4 * c.n_embd,
                                 dropout=c.resid_pdrop, activation=_activation(c.activation_function),
                                 layer_norm_eps=c.layer_norm_epsilon)
    if family == "bert":
        _require(not c.is_decoder and not c.add_cross_attention, "BERT used as a decoder")
        _require(getattr(c, "position_embedding_type", "absolute") == "absolute", "relative position embeddings")
        return TransformerConfig(vocab_size=c.vocab_size, max_len=c.max_position_embeddings, d_model=c.hidden_size,
                                 n_heads=c.num_attention_heads, n_layers=c.num_hidden_layers,
                                 d_ff=c.intermediate_size, dropout=c.hidden_dropout_prob,
                                 activation=_activation(c.hidden_act), n_segments=c.type_vocab_size,
                                 layer_norm_eps=c.layer_norm_eps)
    raise ValueError(f"hf_config is a {family!r} configuration; the course knows the GPT-2 and BERT families "
                     "('gpt2', 'bert')")


def _gpt_from_gpt2(hf) -> GPT:
    config = config_from_huggingface(hf.config)
    theirs = hf.state_dict()
    _check_tied(theirs["lm_head.weight"], theirs["transformer.wte.weight"], "GPT")
    d = config.d_model
    ours = {"body.token_embedding.weight": theirs["transformer.wte.weight"],
            "body.position.embedding.weight": theirs["transformer.wpe.weight"],
            "lm_head.weight": theirs["transformer.wte.weight"],
            "body.final_norm.weight": theirs["transformer.ln_f.weight"],
            "body.final_norm.bias": theirs["transformer.ln_f.bias"]}
    for i in range(config.n_layers):
        h, b = f"transformer.h.{i}.", f"body.blocks.{i}."
        # Conv1D: y = x @ W + b with W (in, out); nn.Linear: y = x @ W.T + b with W (out, in).
        for name, weight in zip(("q", "k", "v"), theirs[h + "attn.c_attn.weight"].split(d, dim=1)):
            ours[b + f"self_attention.{name}_proj.weight"] = weight.T
        for name, bias in zip(("q", "k", "v"), theirs[h + "attn.c_attn.bias"].split(d)):
            ours[b + f"self_attention.{name}_proj.bias"] = bias
        ours[b + "self_attention.out_proj.weight"] = theirs[h + "attn.c_proj.weight"].T
        ours[b + "self_attention.out_proj.bias"] = theirs[h + "attn.c_proj.bias"]
        ours[b + "feed_forward.linear1.weight"] = theirs[h + "mlp.c_fc.weight"].T
        ours[b + "feed_forward.linear1.bias"] = theirs[h + "mlp.c_fc.bias"]
        ours[b + "feed_forward.linear2.weight"] = theirs[h + "mlp.c_proj.weight"].T
        ours[b + "feed_forward.linear2.bias"] = theirs[h + "mlp.c_proj.bias"]
        for norm, their_norm in (("norm1", "ln_1"), ("norm2", "ln_2")):
            ours[b + f"{norm}.weight"] = theirs[h + f"{their_norm}.weight"]
            ours[b + f"{norm}.bias"] = theirs[h + f"{their_norm}.bias"]
    return _filled(GPT(config), ours)


def _bert_from_bert(hf) -> BERT:
    config = config_from_huggingface(hf.config)
    theirs = hf.state_dict()
    _check_tied(theirs["cls.predictions.decoder.weight"], theirs["bert.embeddings.word_embeddings.weight"], "BERT")
    _require(torch.equal(theirs["cls.predictions.decoder.bias"], theirs["cls.predictions.bias"]),
             "its output bias is not its prediction head's bias")
    e = "bert.embeddings."
    ours = {"body.token_embedding.weight": theirs[e + "word_embeddings.weight"],
            "mlm_head.token_embedding.weight": theirs[e + "word_embeddings.weight"],
            "body.position.embedding.weight": theirs[e + "position_embeddings.weight"],
            "segment_embedding.weight": theirs[e + "token_type_embeddings.weight"],
            "body.embedding_norm.weight": theirs[e + "LayerNorm.weight"],
            "body.embedding_norm.bias": theirs[e + "LayerNorm.bias"],
            "mlm_head.bias": theirs["cls.predictions.bias"]}
    # Layers with a weight and a bias: our name -> theirs. BERT's layers are nn.Linear too: no transposing.
    layers = {"mlm_head.dense": "cls.predictions.transform.dense",
              "mlm_head.norm": "cls.predictions.transform.LayerNorm"}
    block = {"self_attention.q_proj": "attention.self.query", "self_attention.k_proj": "attention.self.key",
             "self_attention.v_proj": "attention.self.value", "self_attention.out_proj": "attention.output.dense",
             "norm1": "attention.output.LayerNorm", "feed_forward.linear1": "intermediate.dense",
             "feed_forward.linear2": "output.dense", "norm2": "output.LayerNorm"}
    for i in range(config.n_layers):
        layers.update({f"body.blocks.{i}.{mine}": f"bert.encoder.layer.{i}.{their}" for mine, their in block.items()})
    for mine, their in layers.items():
        for kind in ("weight", "bias"):
            ours[f"{mine}.{kind}"] = theirs[f"{their}.{kind}"]
    return _filled(BERT(config), ours)


def _filled(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Copy every weight into ``model`` (strictly: a weight left out or left over is an error), in eval mode."""
    model.load_state_dict({key: value.detach().float().cpu() for key, value in state.items()}, strict=True)
    return model.eval()


class HFTokenizer:
    """A ``transformers`` tokenizer behind the few methods of the course's ``Tokenizer`` that notebooks use.

    ``encode(text, style="plain")``: ids of the text alone; any other style
    adds the special tokens the model was trained with (BERT's ``[CLS]``
    and ``[SEP]``; GPT-2 has none). ``decode``, ``convert_ids_to_tokens``
    (readable pieces, such as GPT-2's " the" or BERT's "##ing"),
    ``mask_id``, ``pad_id`` (GPT-2 has no padding token: its end-of-text
    token stands in, masked out anyway) and ``vocab_size``, as in ``Tokenizer``.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.tokenizer).__name__}, vocab_size={self.vocab_size})"

    vocab_size = property(lambda self: len(self.tokenizer))
    mask_id = property(lambda self: self.tokenizer.mask_token_id)
    pad_id = property(lambda self: self.tokenizer.eos_token_id if self.tokenizer.pad_token_id is None
                      else self.tokenizer.pad_token_id)
    special_ids = property(lambda self: list(self.tokenizer.all_special_ids))

    def encode(self, text: str, style: str = "plain") -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=style != "plain")["input_ids"])

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(_id_list(ids), skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> list[str]:
        special = set(self.special_ids)
        pieces = self.tokenizer.convert_ids_to_tokens(_id_list(ids))
        return [self.tokenizer.convert_tokens_to_string([piece]) for i, piece in zip(_id_list(ids), pieces)
                if not (skip_special_tokens and i in special)]


def _id_list(ids) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]


def tokenizer_from_huggingface(tokenizer_or_name) -> HFTokenizer:
    """``HFTokenizer`` around a ``transformers`` tokenizer, or around the one named (``"gpt2"``, a folder...)."""
    transformers = _import_transformers()
    if isinstance(tokenizer_or_name, (str, Path)):
        tokenizer_or_name = transformers.AutoTokenizer.from_pretrained(str(tokenizer_or_name))
    if not isinstance(tokenizer_or_name, transformers.PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer_or_name must be a transformers tokenizer or the name of one, "
                        f"got {type(tokenizer_or_name).__name__}")
    return HFTokenizer(tokenizer_or_name)
