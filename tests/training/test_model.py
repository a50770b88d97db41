"""DigitSumNet's sum head on a near-tie: why it reads a sharpened belief."""

from __future__ import annotations

import torch

from training.config import TrainConfig
from training.model import NUM_DIGITS, NUM_SUMS, DigitSumNet, ModelConfig

SHIPPED_SHARPNESS = TrainConfig().settle_sharpness


def _uneven_addition_table() -> torch.Tensor:
    """An addition table whose strongest entry of every row is right (d + n), as a trained one
    is, but whose rows are not equally strong: digit 5's row speaks a little louder than digit
    3's, the kind of unevenness a learned table has."""
    table = torch.zeros(NUM_DIGITS, NUM_DIGITS, NUM_SUMS)
    for n in range(NUM_DIGITS):
        for d in range(NUM_DIGITS):
            table[n, d, d + n] = 10.0
    table[:, 5, :] *= 1.06
    return table


def _sums_for_a_near_tie(sharpness: float) -> tuple[int, int]:
    """(the digit head's answer, the sum head's answer - number) for a belief of 0.51 on 3 and
    0.49 on 5, with number 2."""
    model = DigitSumNet(ModelConfig(channels=(4, 4, 4), feature_dim=4, belief_sharpness=sharpness))
    with torch.no_grad():
        model.addition_table.copy_(_uneven_addition_table())
        model.digit_head.weight.zero_()
        model.digit_head.bias.fill_(-30.0)
        model.digit_head.bias[3] = 0.0
        model.digit_head.bias[5] = float(torch.log(torch.tensor(0.49 / 0.51)))
    model.eval()
    number = torch.tensor([2])
    digit_logits, sum_logits = model.heads(torch.zeros(1, 4), number)
    return int(digit_logits.argmax()), int(sum_logits.argmax()) - 2


def test_a_sharpened_belief_keeps_the_sum_with_the_digit_on_a_near_tie() -> None:
    digit, digit_the_sum_read = _sums_for_a_near_tie(sharpness=SHIPPED_SHARPNESS)
    assert (digit, digit_the_sum_read) == (3, 3)


def test_the_plain_softmax_belief_lets_the_uneven_table_pick_the_other_sum() -> None:
    # The failure the sharpening is for, kept as a test so that it stays explained.
    digit, digit_the_sum_read = _sums_for_a_near_tie(sharpness=1.0)
    assert (digit, digit_the_sum_read) == (3, 5)


def test_the_shipped_settings_survive_scripting() -> None:
    config = ModelConfig(channels=(4, 4, 4), feature_dim=4, belief_sharpness=SHIPPED_SHARPNESS)
    model = DigitSumNet(config)
    scripted = torch.jit.script(model.eval())
    assert scripted.belief_sharpness == SHIPPED_SHARPNESS
    image, number = torch.rand(2, 1, 28, 28), torch.tensor([1, 7])
    for got, want in zip(scripted(image, number), model(image, number), strict=True):
        torch.testing.assert_close(got, want)
