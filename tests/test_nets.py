"""Tests of facecascade.nets and facecascade.specs: the 23 specs, shapes, parameters, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facecascade.nets import (
    LandmarkNet,
    LocallySharedConv2d,
    count_parameters,
    create_net,
    format_parameter_table,
    parameter_table,
)
from facecascade.specs import PAPER_TOTAL_PARAMETERS, SPECS, NetSpec, get_spec, list_nets

PATCH_NAMES = [f"{p}{level}{pair}" for level in (2, 3) for p in ("LE", "RE", "N", "LM", "RM")
               for pair in (1, 2)]
ALL_NAMES = ["F1", "EN1", "NM1", *PATCH_NAMES]


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# Hand arithmetic of the layer plans (valid convs, 2x2 max pooling with floor):
# F1 39x39 -> conv4 36x36 -> pool 18 -> conv3 16 -> pool 8 -> conv3 6 -> pool 3 -> conv2 2x2x80
F1_PARAMS = conv(4, 1, 20) + conv(3, 20, 40) + conv(3, 40, 60) + conv(2, 60, 80) \
    + fc(2 * 2 * 80, 120) + fc(120, 10)
# EN1/NM1 39 wide x 31 high -> 36x28 -> 18x14 -> 16x12 -> 8x6 -> 6x4 -> 3x2 -> 2x1 (x80)
EN1_PARAMS = conv(4, 1, 20) + conv(3, 20, 40) + conv(3, 40, 60) + conv(2, 60, 80) \
    + fc(2 * 1 * 80, 120) + fc(120, 6)
# patch 15x15 -> conv4 12 -> pool 6 -> conv3 4 -> pool 2: 2x2x40
PATCH_PARAMS = conv(4, 1, 20) + conv(3, 20, 40) + fc(2 * 2 * 40, 60) + fc(60, 2)


def test_the_23_names_in_canonical_order():
    assert list(SPECS) == ALL_NAMES
    assert list_nets() == ALL_NAMES
    assert len(set(ALL_NAMES)) == 23


def test_list_nets_patterns():
    assert list_nets("LE2*") == ["LE21", "LE22"]
    assert list_nets("le3?") == ["LE31", "LE32"]
    assert list_nets("*1") == ["F1", "EN1", "NM1", *[n for n in PATCH_NAMES if n.endswith("1")]]
    assert list_nets("N?1") == ["NM1", "N21", "N31"]
    assert list_nets("XYZ*") == []


def test_spec_roles():
    f1, en1, nm1 = get_spec("F1"), get_spec("EN1"), get_spec("NM1")
    assert (f1.points, f1.region, f1.input_size) == ((0, 1, 2, 3, 4), "full", (39, 39))
    assert (en1.points, en1.region, en1.input_size) == ((0, 1, 2), "top", (39, 31))
    assert (nm1.points, nm1.region, nm1.input_size) == ((2, 3, 4), "bottom", (39, 31))
    assert f1.pool_after == (True, True, True, False)
    for level in (2, 3):
        for p, point in enumerate(("LE", "RE", "N", "LM", "RM")):
            for pair in (0, 1):
                spec = get_spec(f"{point}{level}{pair + 1}")
                assert (spec.level, spec.points, spec.pair_index, spec.region) == \
                    (level, (p,), pair, None)
                assert spec.input_size == (15, 15) and spec.n_outputs == 2
    assert get_spec("RM32").point_names == ("RM",)


def test_spec_validation():
    with pytest.raises(ValueError, match="pair_index"):
        NetSpec(name="X", level=2, points=(0,), input_size=(15, 15), convs=((4, 20),),
                pool_after=(True,), fcs=(60,))
    with pytest.raises(ValueError, match="pool_after"):
        NetSpec(name="X", level=1, points=(0,), input_size=(15, 15), convs=((4, 20),),
                pool_after=(), fcs=(60,), region="full")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_forward_shape(name):
    spec = get_spec(name)
    net = create_net(name).eval()
    w, h = spec.input_size
    out = net(torch.randn(3, 1, h, w))
    assert out.shape == (3, 2 * len(spec.points)) and out.dtype == torch.float32


@pytest.mark.parametrize("name", ["F1", "EN1", "NM1"])
def test_forward_shape_local_share(name):
    spec = get_spec(name)
    w, h = spec.input_size
    out = create_net(name, local_share=True).eval()(torch.randn(2, 1, h, w))
    assert out.shape == (2, spec.n_outputs)


def test_feature_map_arithmetic():
    assert get_spec("F1").feature_shapes() == [(20, 18, 18), (40, 8, 8), (60, 3, 3), (80, 2, 2)]
    # EN1 and NM1 end at 2 wide x 1 high x 80 channels
    for name in ("EN1", "NM1"):
        assert get_spec(name).feature_shapes() == [
            (20, 14, 18), (40, 6, 8), (60, 2, 3), (80, 1, 2)]
    assert get_spec("N21").feature_shapes() == [(20, 6, 6), (40, 2, 2)]
    assert get_spec("N21").feature_shapes(19) == [(20, 8, 8), (40, 3, 3)]


def test_input_size_override_and_too_small():
    net = create_net("LE31", input_size=19).eval()
    assert net(torch.zeros(1, 1, 19, 19)).shape == (1, 2)
    with pytest.raises(ValueError, match="too small"):
        create_net("LE31", input_size=8)
    with pytest.raises(ValueError, match=r"expects input \(B, 1, 15, 15\)"):
        create_net("LE31")(torch.zeros(1, 1, 16, 16))


def test_parameter_counts_by_hand():
    assert F1_PARAMS == 88_250
    assert count_parameters(create_net("F1")) == F1_PARAMS
    assert count_parameters(create_net("EN1")) == EN1_PARAMS
    assert count_parameters(create_net("NM1")) == EN1_PARAMS
    assert count_parameters(create_net("RM32")) == PATCH_PARAMS
    table = parameter_table()
    assert [n for n, _ in table] == [*ALL_NAMES, "total"]
    assert table[-1][1] == F1_PARAMS + 2 * EN1_PARAMS + 20 * PATCH_PARAMS == 572_622


def test_parameter_counts_local_share_by_hand():
    # conv3 split into 2x2 regions; conv4: F1's 2x2 map gets 2x2 regions, EN1's 2x1 map 2x1
    f1 = F1_PARAMS + 3 * conv(3, 40, 60) + 3 * conv(2, 60, 80)
    en1 = EN1_PARAMS + 3 * conv(3, 40, 60) + 1 * conv(2, 60, 80)
    assert count_parameters(create_net("F1", local_share=True)) == f1
    assert count_parameters(create_net("EN1", local_share=True)) == en1
    assert parameter_table(local_share=True)[-1][1] == f1 + 2 * en1 + 20 * PATCH_PARAMS


def test_format_parameter_table():
    text = format_parameter_table()
    assert "572,622" in text and f"{PAPER_TOTAL_PARAMETERS:,}" in text
    assert all(name in text for name in ALL_NAMES)


def test_xavier_init_and_zero_bias():
    torch.manual_seed(0)
    net = create_net("F1", local_share=True)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, LocallySharedConv2d)):
            if isinstance(m, nn.Linear):
                fan_in, fan_out = m.in_features, m.out_features
            else:
                w = m.weight
                k2 = w.shape[-1] * w.shape[-2]
                fan_in, fan_out = w.shape[-3] * k2, w.shape[-4] * k2
            expected = math.sqrt(2.0 / (fan_in + fan_out))  # std of U(-a, a), a=sqrt(6/(in+out))
            assert m.weight.std().item() == pytest.approx(expected, rel=0.15)
            assert m.weight.abs().max().item() <= math.sqrt(3) * expected + 1e-6
            assert torch.count_nonzero(m.bias) == 0


def test_dropout_025_after_hidden_fc():
    drops = [m for m in create_net("F1").modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.25]
    assert [m.p for m in create_net("N21", dropout=0.1).modules()
            if isinstance(m, nn.Dropout)] == [0.1]
    assert isinstance(create_net("N21").head[-1], nn.Linear)  # the output layer is linear


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="LE21") as info:
        create_net("LE23")
    assert "unknown network 'LE23'" in str(info.value)
    with pytest.raises(ValueError, match="EN1"):
        get_spec("en2")
    with pytest.raises(ValueError, match="valid names: F1, EN1"):
        get_spec("completely-wrong")


def test_local_share_is_level1_only():
    with pytest.raises(ValueError, match="level-1"):
        create_net("LE21", local_share=True)
    assert isinstance(LandmarkNet(get_spec("F1"), local_share=True).features[6],
                      LocallySharedConv2d)


def test_locally_shared_equals_conv_when_weights_equal():
    torch.manual_seed(0)
    plain = nn.Conv2d(5, 7, 3)
    shared = LocallySharedConv2d(5, 7, 3, grid=(2, 3))
    with torch.no_grad():
        shared.weight.copy_(plain.weight.expand_as(shared.weight))
        shared.bias.copy_(plain.bias.expand_as(shared.bias))
    x = torch.randn(2, 5, 11, 10)  # output 9x8, uneven regions
    torch.testing.assert_close(shared(x), plain(x), rtol=1e-5, atol=1e-5)


def test_locally_shared_regions_are_independent():
    torch.manual_seed(0)
    shared = LocallySharedConv2d(2, 3, 2, grid=(2, 2))
    x = torch.randn(1, 2, 7, 7)  # output 6x6: regions of 3x3
    before = shared(x).detach()
    with torch.no_grad():
        shared.weight[1, 0] += 1.0  # bottom-left region only
    diff = (shared(x).detach() - before).abs().sum(dim=1)[0] > 0
    assert diff[3:, :3].all() and not diff[:3].any() and not diff[:, 3:].any()
    with pytest.raises(ValueError, match="smaller than the grid"):
        shared(torch.randn(1, 2, 2, 7))


def test_aligned_widths_change_only_the_conv_channels():
    for name in ALL_NAMES:
        paper, aligned = get_spec(name), get_spec(name, widths="aligned")
        assert [k for k, _ in aligned.convs] == [k for k, _ in paper.convs]
        assert (aligned.input_size, aligned.points, aligned.fcs, aligned.pool_after) == \
            (paper.input_size, paper.points, paper.fcs, paper.pool_after)
        assert all(ch % 16 == 0 for _, ch in aligned.convs), name
    assert get_spec("F1", "paper") is SPECS["F1"]
    f1 = conv(4, 1, 16) + conv(3, 16, 32) + conv(3, 32, 64) + conv(2, 64, 80) \
        + fc(2 * 2 * 80, 120) + fc(120, 10)
    patch = conv(4, 1, 16) + conv(3, 16, 32) + fc(2 * 2 * 32, 60) + fc(60, 2)
    assert count_parameters(create_net("F1", widths="aligned")) == f1
    assert count_parameters(create_net("RM32", widths="aligned")) == patch
    net = create_net("EN1", widths="aligned")
    assert tuple(net(torch.zeros(2, 1, 31, 39)).shape) == (2, 6)


def test_unknown_widths_are_named():
    with pytest.raises(ValueError, match="widths == 'wide'"):
        create_net("F1", widths="wide")


def test_config_knows_every_width_plan():
    from facecascade import config, specs

    assert tuple(specs.WIDTHS) == config.NET_WIDTHS


def test_net_options_follow_the_config():
    from facecascade.config import config_from_dict
    from facecascade.specs import net_options

    cfg = config_from_dict({"level1": {"model": {"local_share": True, "widths": "aligned"}},
                            "level3": {"model": {"widths": "aligned"}}})
    assert net_options("F1", cfg) == {"local_share": True, "widths": "aligned"}
    assert net_options("LE21", cfg) == {"local_share": False, "widths": "paper"}
    assert net_options("LE31", cfg) == {"local_share": False, "widths": "aligned"}
