"""evaluating(model): eval mode inside, the caller's mode restored after, also on error."""

from __future__ import annotations

import pytest
from torch import nn

from conflicting_bundles.modelmode import evaluating


@pytest.mark.parametrize("mode", [True, False])
def test_evaluating_restores_the_callers_mode(mode):
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train(mode)
    with evaluating(net) as m:
        assert m is net and not net.training and not net[1].training
    assert net.training is mode and net[1].training is mode
    with pytest.raises(RuntimeError), evaluating(net):
        raise RuntimeError("boom")
    assert net.training is mode
