"""Notebook 10's machinery: from a GPT with a flaw inherited from its data to one aligned with people.

    data          the flawed answers, sampling, the exact judge, the labellers' comparisons, KL
    sft           the starting model with a rude habit (``chat-sft``) and the chat checkpoints
    reward_model  GPT's body and a scalar head, trained with Bradley-Terry on comparisons
    rlhf          REINFORCE with a KL penalty to the starting model: towards the reward model (RLHF)
                  or towards the exact judge (RLVR)
    dpo           DPO on the same comparisons: no reward model, no sampling
    best_of_n     n sampled answers, one kept by the reward model, the judge or a majority vote
    pipeline      the lesson end to end, judged exactly: ``course bench``'s ``chat``
    sweeps        the long runs notebook 10 plots (``python -m course_lib.lab.chat.sweeps``)
"""
