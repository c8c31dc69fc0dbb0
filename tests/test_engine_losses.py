"""Loss strings: parsing, the weighted sum, and per-term values for the log."""

import argparse

import pytest
import torch
import torch.nn.functional as F

from filter_basis.engine.losses import build_loss, parse_loss_string
from filter_basis.errors import OptionError
from super_resolution.loss import LOSS_TYPES


def test_parse_loss_string():
    assert parse_loss_string("1*L1") == [(1.0, "L1")]
    assert parse_loss_string("1*L1+0.5*MSE") == [(1.0, "L1"), (0.5, "MSE")]
    for bad in ("L1", "x*L1", "1*", "1*L1+"):
        with pytest.raises(OptionError, match="WEIGHT\\*TYPE"):
            parse_loss_string(bad)


def test_weighted_sum_and_terms():
    loss = build_loss("1*L1+0.5*MSE", LOSS_TYPES, argparse.Namespace(rgb_range=255))
    out, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    total = loss(out, target)
    expected_terms = {"L1": F.l1_loss(out, target), "MSE": 0.5 * F.mse_loss(out, target)}
    torch.testing.assert_close(total, expected_terms["L1"] + expected_terms["MSE"])
    assert set(loss.last) == {"L1", "MSE"}
    for name, value in expected_terms.items():
        torch.testing.assert_close(loss.last[name], value)
