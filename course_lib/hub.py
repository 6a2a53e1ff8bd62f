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
a Hugging Face GPT-2 or BERT into the course's ``GPT`` or ``BERT`` (or, for
an encoder published without its masked-LM head, into ``BERTEncoder``),
``config_from_huggingface`` translates its configuration and
``tokenizer_from_huggingface`` gives its tokenizer the course tokenizer's
methods. They take a model, a hub name or a local folder in Hugging Face's
layout. They need the optional extra ``hf`` (``transformers``), which only
they import; a folder is read offline, and a hub name is downloaded only
when it is not yet on the machine and the machine is online.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from course_lib.models import BERT, GPT, TransformerBody, TransformerConfig
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
    """The course's ``GPT``, ``BERT`` or ``BERTEncoder`` holding the weights of a ``transformers`` GPT-2 or BERT.

    model_or_name: a ``transformers.GPT2LMHeadModel``, ``BertForMaskedLM``
        or ``BertModel`` (a BERT-family encoder without a masked-LM head,
        such as all-MiniLM-L6-v2) instance; or a local folder in Hugging
        Face's layout (``config.json`` with ``model.safetensors`` or
        ``pytorch_model.bin``), read offline; or a hub name such as
        ``"gpt2"`` or ``"bert-base-uncased"``, which ``transformers`` finds
        in its cache on this machine or downloads once when online. A
        checkpoint of the BERT family whose ``config.json`` names no
        masked-LM head loads as ``BERTEncoder``.

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
    if isinstance(model, transformers.BertModel):
        return _encoder_from_bert(model)
    raise TypeError(f"model_or_name must be a transformers GPT2LMHeadModel, BertForMaskedLM or BertModel, "
                    f"a folder or the name of one, got {type(model).__name__}")


# The weight files of a folder in Hugging Face's layout (one file, or an index of shards).
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
# Checkpoints of the BERT family that carry the masked-LM head; any other loads as the encoder alone.
HF_MASKED_LM_ARCHITECTURES = {"BertForMaskedLM", "BertForPreTraining"}


def _load_by_name(transformers, name):
    local = _is_model_folder(name)
    config = transformers.AutoConfig.from_pretrained(str(name), local_files_only=local)
    if config.model_type == "gpt2":
        model_class = transformers.GPT2LMHeadModel
    elif config.model_type == "bert":
        with_head = HF_MASKED_LM_ARCHITECTURES & set(config.architectures or ["BertForMaskedLM"])
        model_class = transformers.BertForMaskedLM if with_head else transformers.BertModel
    else:
        raise ValueError(f"{str(name)!r} is a {config.model_type!r} model; from_huggingface knows the GPT-2 "
                         "and BERT families ('bert', 'gpt2')")
    model, loading = model_class.from_pretrained(str(name), local_files_only=local, output_loading_info=True)
    if loading["missing_keys"]:  # transformers would fill them with random numbers: refuse instead
        raise ValueError(f"{str(name)!r} holds no weights for {', '.join(sorted(loading['missing_keys']))}, "
                         f"which its {model_class.__name__} needs")
    return model


def _is_model_folder(name) -> bool:
    """Whether ``name`` is a folder on this machine; one that is not in Hugging Face's layout is an error."""
    folder = Path(name)
    if not folder.is_dir():
        return False
    expected = "a folder in Hugging Face's layout: config.json with " + " or ".join(HF_WEIGHT_FILES[::2])
    found = sorted(path.name for path in folder.iterdir())
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model_or_name {str(name)!r} is a folder without config.json (it holds "
                                f"{found or 'nothing'}); expected {expected}")
    if not any((folder / weights).is_file() for weights in HF_WEIGHT_FILES):
        raise FileNotFoundError(f"model_or_name {str(name)!r} is a folder without weights (it holds {found}); "
                                f"expected {expected}")
    return True


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


class BERTEncoder(nn.Module):
    """BERT without its masked-LM head: what a published encoder such as all-MiniLM-L6-v2 holds.

    ``BERTEncoder(config)(input_ids, attention_mask=None, segment_ids=None)``
    returns the hidden states (B, T, d_model), the same numbers as
    ``BERT(config).encode``: the same body and segment embeddings, with no
    head on top. ``transformers.BertModel`` publishes such an encoder;
    its pooler (a layer on ``[CLS]`` trained for next-sentence prediction)
    is not carried over.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.body = TransformerBody(config, causal=False, norm_first=False)
        self.segment_embedding = nn.Embedding(config.n_segments, config.d_model)

    encode = BERT.encode  # tokens, positions and segments through the body, exactly as BERT does

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(input_ids, attention_mask, segment_ids)  # (B, T, d_model)


def _bert_from_bert(hf) -> BERT:
    config = config_from_huggingface(hf.config)
    theirs = hf.state_dict()
    _check_tied(theirs["cls.predictions.decoder.weight"], theirs["bert.embeddings.word_embeddings.weight"], "BERT")
    _require(torch.equal(theirs["cls.predictions.decoder.bias"], theirs["cls.predictions.bias"]),
             "its output bias is not its prediction head's bias")
    ours = _bert_body_weights(theirs, config, prefix="bert.")
    ours["mlm_head.token_embedding.weight"] = theirs["bert.embeddings.word_embeddings.weight"]
    ours["mlm_head.bias"] = theirs["cls.predictions.bias"]
    # BERT's layers are nn.Linear too: no transposing.
    for mine, their in (("mlm_head.dense", "cls.predictions.transform.dense"),
                        ("mlm_head.norm", "cls.predictions.transform.LayerNorm")):
        for kind in ("weight", "bias"):
            ours[f"{mine}.{kind}"] = theirs[f"{their}.{kind}"]
    return _filled(BERT(config), ours)


def _encoder_from_bert(hf) -> BERTEncoder:
    config = config_from_huggingface(hf.config)
    return _filled(BERTEncoder(config), _bert_body_weights(hf.state_dict(), config, prefix=""))


def _bert_body_weights(theirs: dict[str, torch.Tensor], config: TransformerConfig, prefix: str) -> dict:
    """The embeddings and blocks of a Hugging Face BERT under the course's names.

    prefix: where ``transformers`` keeps the body: ``"bert."`` inside
        ``BertForMaskedLM``, ``""`` in a ``BertModel``.
    """
    e = prefix + "embeddings."
    ours = {"body.token_embedding.weight": theirs[e + "word_embeddings.weight"],
            "body.position.embedding.weight": theirs[e + "position_embeddings.weight"],
            "segment_embedding.weight": theirs[e + "token_type_embeddings.weight"],
            "body.embedding_norm.weight": theirs[e + "LayerNorm.weight"],
            "body.embedding_norm.bias": theirs[e + "LayerNorm.bias"]}
    block = {"self_attention.q_proj": "attention.self.query", "self_attention.k_proj": "attention.self.key",
             "self_attention.v_proj": "attention.self.value", "self_attention.out_proj": "attention.output.dense",
             "norm1": "attention.output.LayerNorm", "feed_forward.linear1": "intermediate.dense",
             "feed_forward.linear2": "output.dense", "norm2": "output.LayerNorm"}
    for i in range(config.n_layers):
        for mine, their in block.items():
            for kind in ("weight", "bias"):
                ours[f"body.blocks.{i}.{mine}.{kind}"] = theirs[f"{prefix}encoder.layer.{i}.{their}.{kind}"]
    return ours


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
        tokenizer_or_name = transformers.AutoTokenizer.from_pretrained(
            str(tokenizer_or_name), local_files_only=Path(tokenizer_or_name).is_dir())
    if not isinstance(tokenizer_or_name, transformers.PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer_or_name must be a transformers tokenizer or the name of one, "
                        f"got {type(tokenizer_or_name).__name__}")
    return HFTokenizer(tokenizer_or_name)
