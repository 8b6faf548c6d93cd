"""Redis topology settings: parsed into a RedisTarget, bad values refused naming the value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatwire.backends.bus_redis import bus_channel
from chatwire.backends.redis_client import RedisTarget, parse_sentinel_hosts
from chatwire.config import Settings


def settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg, arg-type]


def test_sentinel_hosts_are_parsed_with_the_default_port() -> None:
    s = settings(redis_url="redis://:pw@x/2", redis_sentinel_hosts="10.0.0.1:26380, 10.0.0.2")  # type: ignore[arg-type]
    target = RedisTarget.from_settings(s)
    assert target.sentinels == (("10.0.0.1", 26380), ("10.0.0.2", 26379))
    assert target.mode == "sentinel" and target.service == "mymaster"
    assert parse_sentinel_hosts(["[::1]:5000"]) == [("::1", 5000)]


@pytest.mark.parametrize("bad", ["h:port", "h:0", ":26379", "h:99999"])
def test_a_bad_sentinel_address_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValidationError, match="not a host:port sentinel address"):
        settings(redis_sentinel_hosts=bad)


def test_cluster_and_sentinel_exclude_each_other_and_braces_are_refused() -> None:
    with pytest.raises(ValidationError, match="exclude each other"):
        settings(redis_cluster="true", redis_sentinel_hosts="h:1")
    with pytest.raises(ValidationError, match="must not contain"):
        settings(redis_prefix="cw{x}:")


def test_cluster_names_keep_each_scripts_keys_in_one_slot() -> None:
    from redis.crc import key_slot

    log = key_slot(b"cw:{log}:seq")
    assert key_slot(bus_channel("cw:bus:", "room:user:u1", True).encode()) == log
    assert key_slot(bus_channel("cw:bus:", "room:channel:c1", True).encode()) == log
    assert key_slot(bus_channel("cw:bus:", "room:note:n1", True).encode()) != log
    assert bus_channel("cw:bus:", "room:user:u1", False) == "cw:bus:room:user:u1"
