"""Learner-facing checks: instant, specific feedback on every exercise.

``check_<function>(learner_fn)`` runs the learner's function on a few cases,
compares with a reference and names known mistakes in hints. The framework
is in ``framework.py``; each group of exercises has its own module.
"""
from course_lib.checks.framework import (
    STATUSES, SUMMARY_MIME_TYPE, Case, CaseResult, CheckResult, Mistake, check_function, contains_nan_or_inf,
    describe_difference, same_output_as,
)
from course_lib.checks.softmax_checks import check_softmax
from course_lib.checks.attention_checks import (
    check_attention_scores, check_scaled_dot_product_attention, check_sinusoidal_positional_encoding, check_split_heads,
)
from course_lib.checks.transformer_checks import (
    check_causal_mask, check_cross_attention, check_encoder_block_forward, check_layer_norm,
)
from course_lib.checks.transfer_checks import check_gpt_finetune_loss, check_per_position_loss
from course_lib.checks.pretraining_checks import (
    check_fill_masks, check_generate_greedy, check_mask_tokens, check_sample_next_token,
)

__all__ = [
    "STATUSES", "SUMMARY_MIME_TYPE", "Case", "CaseResult", "CheckResult", "Mistake", "check_function",
    "contains_nan_or_inf", "describe_difference", "same_output_as",
    "check_softmax",
    "check_attention_scores", "check_scaled_dot_product_attention", "check_split_heads",
    "check_sinusoidal_positional_encoding",
    "check_layer_norm", "check_encoder_block_forward", "check_causal_mask", "check_cross_attention",
    "check_per_position_loss", "check_gpt_finetune_loss",
    "check_mask_tokens", "check_fill_masks", "check_sample_next_token", "check_generate_greedy",
]
