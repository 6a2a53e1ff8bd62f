"""Notebook 09's machinery: three ways to ask a pretrained model what it knows.

    questions     questions about stories and their answer spans, from the annotations
    vocabulary    new words for a pretrained model: new embedding rows, the rest kept
    qa            BERT answers by pointing: extractive question answering
    prompting     the coherence task through BERT's masked-LM head: pattern and verbalizer
    instruction   GPT answers by writing: supervised fine-tuning, loss on the answer only
    sweeps        the sweeps over labels and seeds, written to ``results/09_asking.json``
"""
