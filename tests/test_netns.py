"""The network-namespace plumbing's pure parts (no root, no cluster): rates, names,
the refusal to touch interfaces of another prefix."""

import pytest

from skyhook_py import netns


def test_parse_rate():
    assert netns.parse_rate("10gbit") == 10_000_000_000
    assert netns.parse_rate("1gbit") == 1_000_000_000
    assert netns.parse_rate("500mbit") == 500_000_000
    assert netns.parse_rate("none") is None and netns.parse_rate(None) is None
    with pytest.raises(ValueError, match="'1gb' not understood"):
        netns.parse_rate("1gb")


def test_names_fit_linux_limits_and_differ_per_cluster():
    a, b = netns.prefix_for("/tmp/a"), netns.prefix_for("/tmp/b")
    assert a != b
    net = netns.Network(a, "10.170.3.0/24", 12, "1gbit")
    names = [net.client_if, net.client_peer, net.bridge] + [
        n for h in range(12) for n in (net.host_if(h), net.switch_if(h))]
    assert all(len(n) <= 15 for n in names) and len(set(names)) == len(names)
    assert net.client_addr == "10.170.3.1" and net.host_addr(2) == "10.170.3.12"
    assert netns.Network.from_state(net.to_state()) == net


def test_remove_refuses_a_foreign_prefix():
    for bad in ("eth", "docker", "sk", "veth1234"):
        with pytest.raises(ValueError, match="foreign prefix"):
            netns.remove(bad)
