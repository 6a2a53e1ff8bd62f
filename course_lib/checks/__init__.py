"""Learner-facing checks: instant, specific feedback on every exercise.

``check_<function>(learner_fn)`` runs the learner's function on a few cases,
compares with a reference and names known mistakes in hints. The framework
is in ``framework.py``; each group of exercises has its own module.
"""
from course_lib.checks.framework import (
    STATUSES, SUMMARY_MIME_TYPE, Case, CaseResult, CheckResult, Mistake, check_function, contains_nan_or_inf,
    describe_difference, same_output_as, same_output_as_any_of,
)
from course_lib.checks.softmax_checks import check_softmax
from course_lib.checks.attention_checks import (
    check_attention_scores, check_scaled_dot_product_attention, check_split_heads,
)
from course_lib.checks.transformer_checks import check_encoder_block_forward, check_layer_norm
from course_lib.checks.transfer_checks import check_gpt_finetune_loss, check_per_position_loss
from course_lib.checks.asking_checks import check_best_span, check_sft_labels, check_verbalizer_logits
from course_lib.checks.alignment_checks import check_dpo_loss, check_preference_loss, check_sequence_log_prob
from course_lib.checks.policy_gradient_checks import check_policy_gradient_loss, check_ppo_clip_loss
from course_lib.checks.pretraining_checks import check_fill_masks, check_mask_tokens
from course_lib.checks.generation_checks import check_generate_greedy, check_sample_next_token
from course_lib.checks.position_checks import check_shift_matrix, check_sinusoidal_positional_encoding
from course_lib.checks.decoder_checks import check_causal_mask, check_cross_attention, check_decoder_block_forward
from course_lib.checks.training_checks import check_training_step
from course_lib.checks.gpt_checks import check_gpt_forward, check_kv_cache_step
from course_lib.checks.scoring_checks import check_gpt_sentence_score, check_pseudo_log_likelihood
from course_lib.checks.finetuning_checks import check_mean_pool, check_trainable_parameters

__all__ = [
    "STATUSES", "SUMMARY_MIME_TYPE", "Case", "CaseResult", "CheckResult", "Mistake", "check_function",
    "contains_nan_or_inf", "describe_difference", "same_output_as", "same_output_as_any_of",
    "check_softmax",
    "check_attention_scores", "check_scaled_dot_product_attention", "check_split_heads",
    "check_sinusoidal_positional_encoding",
    "check_layer_norm", "check_encoder_block_forward", "check_causal_mask", "check_cross_attention",
    "check_per_position_loss", "check_gpt_finetune_loss",
    "check_mask_tokens", "check_fill_masks", "check_sample_next_token", "check_generate_greedy",
    "check_best_span", "check_verbalizer_logits", "check_sft_labels",
    "check_sequence_log_prob", "check_preference_loss", "check_dpo_loss",
    "check_policy_gradient_loss", "check_ppo_clip_loss",
    "check_shift_matrix", "check_decoder_block_forward", "check_training_step", "check_gpt_forward",
    "check_kv_cache_step", "check_gpt_sentence_score", "check_pseudo_log_likelihood", "check_mean_pool",
    "check_trainable_parameters",
]
