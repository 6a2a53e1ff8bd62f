"""Notebook 10's machinery: from a GPT with a flaw inherited from its data to one aligned with people.

    data          the flawed answers, sampling, the exact judge, the labellers' comparisons, KL
    sft           the starting model with a rude habit (``chat-sft``) and the chat checkpoints
    reward_model  GPT's body and a scalar head, trained with Bradley-Terry on comparisons
    rlhf          REINFORCE with a baseline and a KL penalty to the starting model
    dpo           DPO on the same comparisons: no reward model, no sampling
    pipeline      the lesson end to end: the stages, the failure runs, ``course bench``'s ``chat``
"""
