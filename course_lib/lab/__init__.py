"""The course's lab bench: what the notebooks use to look at models and measure them.

Nothing here is part of a transformer. These modules train the course's
models with fixed recipes, probe what they learned, compare them, draw them
and let a learner explore them with widgets:

    cooccurrence  word vectors from counts (notebook 01)
    translation   the story world's second language and its translator (04)
    pretraining   BERT and GPT pretraining recipes and their metrics (05, 06)
    probes        what a trained BERT knows (05)
    explorers     ipywidgets over plain functions, and their base class (05, 06)
    comparison    BERT and GPT position by position (07)
    finetuning    transfer-learning experiments (08)
    asking/       asking a pretrained model: questions, extractive QA, prompts, instruction tuning (09)
    chat/         from GPT to ChatGPT: comparisons, reward model, RLHF, DPO (10)
    viz           every figure of the course, and the attention explorer (01)
    drawing       the diagrams' palette, style and drawing primitives
    diagrams      the architecture diagrams (SVG files in notebooks/figures/)

They import the transformer modules above them (``course_lib.models`` and
friends), never the other way round.
"""
