"""TRL's own shaping rewards, chosen by name in a profile: length and repetition shaping.

TRL 1.15 ships all three that open-r1 uses (``trl/rewards/``), so nothing here rewrites one:

- ``soft_overlong``: ``trl.rewards.get_soft_overlong_punishment`` (DAPO, arXiv:2503.14476,
  Eq. 13): 0 up to ``L_max - L_cache`` tokens, then falling linearly to -1 at ``L_max``,
  and -1 beyond. Parameters from the profile: ``L_max = max_completion_length`` and
  ``L_cache = max_completion_length // 5`` (DAPO's proportion: 4,096 of 20,480 tokens).
- ``cosine_length``: ``trl.rewards.get_cosine_scaled_reward`` ("Demystifying Long
  Chain-of-Thought Reasoning", arXiv:2502.03373, App. C.1): a right answer earns 1.0 when
  short, falling along a cosine to 0.5 at ``max_len`` tokens; a wrong one gets -1.0 when
  short, rising to -0.5 (a long wrong attempt is punished less, to keep exploring).
  ``max_len = max_completion_length``, the other values TRL's defaults.
- ``repetition``: ``trl.rewards.get_repetition_penalty_reward`` (same paper, App. C.2):
  ``(1 - unique / total token 3-grams) * -1.0``; 0 for a completion without a repeat.

Two adapters, and why (the length schedules themselves are TRL's, called as they are):

1. The course wraps every reward (``callbacks.RecordedReward``), which calls it as
   ``fn(completions, **columns)``; TRL's length rewards take ``completion_ids`` as their
   first argument, so ``TokenShaping`` hands them the ids TRL passes as a keyword.
2. TRL's cosine reward decides correctness itself, with math-verify on a ``\\boxed{}``
   answer against a ``solution`` column. The course's answers are letters, yes/no/maybe and
   numbers in an ``<answer>`` block, judged by ``answers.is_correct``. ``CosineLength``
   computes the course's verdict and gives TRL's function a stand-in that math-verify reads
   the same way (``\\boxed{1}`` against solution ``1`` when right, ``\\boxed{0}`` when wrong).
   Rows with a ``reference`` column (open questions, ``open_ended``) have no exact verdict:
   they get None, which TRL leaves out of the sum.

Use them through a profile: ``profile.replace(shaping_rewards={"soft_overlong": 1.0})``
names the rewards and their weights; ``training.train`` adds them after the course's rewards
(``with_shaping_rewards``; the course's own keep weight 1), and an unknown name is a
``ValueError`` before any model loads. ``shaping_table`` shows what each does on completions
of chosen lengths, right or wrong, varied or repetitive, as a DataFrame, and
``plot_shaping_table`` draws it: one panel per reward, its value against the length.

Scale: the course's correctness reward pays 2.0 and each format reward 0.5. The shaping
rewards pay within [-1, 0] (overlong, repetition) or [-1, 1] (cosine), so at weight 1 a
right answer still outweighs them; ``cosine_length`` adds to correctness, it does not
replace it as in open-r1's recipes.
"""

from __future__ import annotations

from collections.abc import Callable

from medreason_lib.scoring.answers import is_correct
from medreason_lib.scoring.rewards import _per_row
from medreason_lib.scoring.template import format_completion
from medreason_lib.settings.profiles import Profile

__all__ = [
    "SHAPING_REWARDS",
    "CosineLength",
    "TokenShaping",
    "check_names",
    "rewards_for_profile",
    "shaping_reward",
    "plot_shaping_table",
    "shaping_table",
    "with_shaping_rewards",
]

OVERLONG_CACHE_SHARE = 0.2  # DAPO: a 4,096-token soft punishment cache of 20,480


class TokenShaping:
    """One of TRL's token-id rewards as a course reward: ``fn(completions, completion_ids=...,
    **columns)``. Picklable (a class, not a closure), as TRL's own are."""

    def __init__(self, trl_fn: Callable, name: str):
        self.trl_fn = trl_fn
        self.__name__ = name

    def __call__(self, completions, completion_ids=None, **kwargs) -> list[float]:
        if completion_ids is None:
            raise ValueError(
                f"{self.__name__} reads token ids: TRL passes completion_ids; by hand, pass "
                "completion_ids=[tokenizer(text).input_ids for text in texts]"
            )
        if len(completion_ids) != len(completions):
            raise ValueError(
                f"{self.__name__}: {len(completion_ids)} completion_ids for "
                f"{len(completions)} completions"
            )
        return [float(v) for v in self.trl_fn(completion_ids=[list(i) for i in completion_ids])]


class CosineLength:
    """TRL's cosine-scaled length reward with the course's correctness (see the module
    docstring): ``fn(completions, completion_ids=..., answer=..., task=..., options=...)``."""

    __name__ = "cosine_scaled_reward"

    def __init__(self, max_len: int, **values):
        from trl.rewards import get_cosine_scaled_reward

        self.trl_fn = get_cosine_scaled_reward(max_len, **values)

    def __call__(
        self,
        completions,
        completion_ids=None,
        answer=None,
        task=None,
        options=None,
        reference=None,
        **kwargs,
    ) -> list[float | None]:
        n = len(completions)
        if completion_ids is None or answer is None or task is None:
            raise ValueError(
                "cosine_scaled_reward needs completion_ids (TRL passes them) and the answer "
                "and task columns"
            )
        answers, tasks, opts, refs = (
            _per_row(col, n, name, self.__name__)
            for col, name in (
                (answer, "answer"),
                (task, "task"),
                (options, "options"),
                (reference, "reference"),
            )
        )
        open_rows = [bool(r) for r in refs]
        verdicts = [
            not is_open and gold is not None and is_correct(c, str(gold), t, o or None)
            for c, gold, t, o, is_open in zip(
                completions, answers, tasks, opts, open_rows, strict=True
            )
        ]
        stand_ins = [[{"content": "\\boxed{1}" if ok else "\\boxed{0}"}] for ok in verdicts]
        ids = [list(i) for i in completion_ids]
        scores = self.trl_fn(stand_ins, ["1"] * n, ids)
        return [None if is_open else float(s) for s, is_open in zip(scores, open_rows, strict=True)]


def _soft_overlong(profile: Profile, **overrides):
    from trl.rewards import get_soft_overlong_punishment

    top = overrides.pop("max_completion_len", profile.max_completion_length)
    cache = overrides.pop("soft_punish_cache", max(1, int(top * OVERLONG_CACHE_SHARE)))
    fn = get_soft_overlong_punishment(max_completion_len=top, soft_punish_cache=cache, **overrides)
    return TokenShaping(fn, "soft_overlong_punishment_reward")


def _cosine_length(profile: Profile, **overrides):
    return CosineLength(overrides.pop("max_len", profile.max_completion_length), **overrides)


def _repetition(profile: Profile, **overrides):
    from trl.rewards import get_repetition_penalty_reward

    return TokenShaping(get_repetition_penalty_reward(**overrides), "repetition_penalty_reward")


# name -> (factory(profile, **overrides) -> reward, what it does)
SHAPING_REWARDS: dict[str, tuple[Callable, str]] = {
    "soft_overlong": (_soft_overlong, "DAPO's soft overlong punishment, in [-1, 0]"),
    "cosine_length": (_cosine_length, "correctness scaled by length on a cosine, in [-1, 1]"),
    "repetition": (_repetition, "minus the share of repeated token 3-grams, in [-1, 0]"),
}


def check_names(names) -> None:
    """A ``ValueError`` naming the valid choices when ``names`` holds an unknown one."""
    unknown = [n for n in names if n not in SHAPING_REWARDS]
    if unknown:
        raise ValueError(
            f"unknown shaping reward(s) {unknown} in the profile's shaping_rewards; valid: "
            + ", ".join(f"{k} ({v[1]})" for k, v in SHAPING_REWARDS.items())
        )


def shaping_reward(name: str, profile: Profile, **overrides):
    """The reward function ``name`` with its parameters from ``profile`` (``overrides``
    win, e.g. ``soft_punish_cache=16``, ``ngram_size=4``)."""
    check_names([name])
    return SHAPING_REWARDS[name][0](profile, **overrides)


def rewards_for_profile(profile: Profile) -> tuple[list, list[float]]:
    """The profile's shaping rewards and their weights, in the order the profile names them."""
    named = dict(profile.shaping_rewards or {})
    check_names(named)
    for name, weight in named.items():
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            raise ValueError(f"shaping_rewards[{name!r}] must be a number, got {weight!r}")
    return [shaping_reward(n, profile) for n in named], [float(w) for w in named.values()]


def with_shaping_rewards(profile: Profile, reward_funcs: list, overrides: dict):
    """``(reward_funcs + the profile's shaping rewards, overrides)``, with GRPOConfig's
    ``reward_weights`` in ``overrides`` when a shaping weight is not 1 (the rewards before
    them keep 1.0; ``reward_weights`` already in ``overrides`` must then cover them all)."""
    funcs, weights = rewards_for_profile(profile)
    if not funcs:
        return list(reward_funcs), overrides
    combined = [*reward_funcs, *funcs]
    given = overrides.get("reward_weights")
    if given is not None:
        if len(given) != len(combined):
            raise ValueError(
                f"reward_weights has {len(given)} weights for {len(combined)} "
                "rewards (the course's, yours, then the profile's shaping ones)"
            )
        return combined, overrides
    if any(w != 1.0 for w in weights):
        overrides = {**overrides, "reward_weights": [1.0] * len(reward_funcs) + weights}
    return combined, overrides


# ----------------------------------------------------------------------- what they do

_VARIED = (
    "The patient has fever cough and a consolidation on the chest film so pneumonia is "
    "likely and sputum culture with blood counts would confirm bacterial infection before "
    "antibiotics are chosen by severity age allergies recent travel and local resistance "
    "patterns while oxygen saturation renal function and hydration guide admission decisions "
)
_REPEATED = "the answer is yes because yes. "


def shaping_table(profile: Profile, tokenizer=None, lengths=None, names=None):
    """What each shaping reward gives completions of chosen lengths: a DataFrame with one row
    per (tokens, right or wrong, varied or repetitive reasoning) and one column per reward
    (``names``, default all), plus ``shaping_total`` (their sum at weight 1).

    ``tokenizer``: the profile's (default: loaded from its model; the tiny one is built
    locally). ``lengths``: completion lengths in tokens (default 4 to 1.25 x
    ``max_completion_length``). Each row's token ids are the first ``tokens`` ids of a
    completion whose answer block says "yes" (gold "yes", PubMedQA) or "no"; its reasoning is
    ordinary text or one phrase repeated.
    """
    import pandas as pd

    names = list(names or SHAPING_REWARDS)
    check_names(names)
    if tokenizer is None:
        from transformers import AutoTokenizer

        from medreason_lib.models import (
            resolve_model_id,  # tiny's local folder, smol's offline build
        )

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_id(profile.model_id, profile.seed))
    top = profile.max_completion_length
    lengths = list(lengths or sorted({4, *range(top // 8, int(top * 1.25) + 1, max(1, top // 8))}))
    funcs = {name: shaping_reward(name, profile) for name in names}
    rows, completions, ids = [], [], []
    for style, unit in (("varied", _VARIED), ("repetitive", _REPEATED)):
        reasoning = unit * (1 + 2 * max(lengths) // max(1, len(tokenizer(unit).input_ids)))
        for correct in (True, False):
            text = format_completion(reasoning, "yes" if correct else "no")
            full = tokenizer(text).input_ids
            for n in lengths:
                rows.append({"tokens": n, "correct": correct, "reasoning": style})
                completions.append(text)
                ids.append(full[:n])
    columns = {"answer": ["yes"] * len(rows), "task": ["pubmedqa"] * len(rows)}
    table = pd.DataFrame(rows)
    for name, fn in funcs.items():
        table[name] = fn(completions, completion_ids=ids, **columns)
    table["shaping_total"] = table[names].sum(axis=1)
    return table


def plot_shaping_table(table, max_completion_length: int | None = None):
    """One panel per shaping reward of ``shaping_table``'s DataFrame: its value against the
    completion's length in tokens, one line per (right or wrong, varied or repetitive
    reasoning); ``max_completion_length``, when given, as a dashed line. Returns the Figure."""
    import matplotlib.pyplot as plt

    names = [c for c in table.columns if c in SHAPING_REWARDS]
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 2.8), squeeze=False)
    styles = {(True, "varied"): "-", (False, "varied"): "--"}
    for ax, name in zip(axes[0], names, strict=True):
        for (correct, style), rows in table.groupby(["correct", "reasoning"]):
            line = styles.get((correct, style), ":")
            label = f"{'right' if correct else 'wrong'}, {style}"
            ax.plot(rows["tokens"], rows[name], ls=line, marker=".", label=label)
        if max_completion_length:
            ax.axvline(max_completion_length, color="grey", ls="--", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("completion tokens")
        ax.set_ylim(-1.05, 1.05)
    axes[0][0].set_ylabel("reward")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
