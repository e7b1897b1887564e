"""The heap-saving copies and tables agree with the protocol's single sources (CPython)."""

from __future__ import annotations

from firmware.etp_node import audit_read as audit_read_mod
from firmware.etp_node import battery as battery_mod
from firmware.etp_node import core as core_mod
from firmware.etp_node import evaluator as evaluator_mod
from firmware.etp_node.battery import SimBattery
from firmware.etp_node.core import NodeCore
from shared_etp import frame, frame_dict, schema, topics
from shared_etp.frame import derive_key

KEY = derive_key(b"memory-test-master-secret-0123", 7)


def test_required_masks_match_required_fields() -> None:
    """schema.REQUIRED_MASK (what boards check) says the same as names.REQUIRED."""
    for msg_type, names in enumerate(schema.REQUIRED):
        mask = 0
        for name in names:
            mask |= 1 << schema.FIELD_KEY[name]
        assert mask == schema.REQUIRED_MASK[msg_type], schema.TYPE_NAMES[msg_type]
    assert tuple(schema.FIELD_NAMES[k] for k in range(11)) == schema.HEADER_FIELDS
    assert schema.HEADER_MASK == (1 << 11) - 1


def test_frame_private_constants_match_schema() -> None:
    """frame.py's and frame_dict.py's private copies (boards skip schema) equal schema's values."""
    assert frame._PROTOCOL_VERSION == schema.PROTOCOL_VERSION
    assert frame._TAG_BYTES == schema.TAG_BYTES
    assert frame._MAX_FRAME_BYTES == schema.MAX_FRAME_BYTES
    assert frame._DEFAULT_TTL_MS == schema.DEFAULT_TTL_MS
    assert len(schema.TYPE_NAMES) == frame._TYPE_COUNT
    assert frame_dict._PROTOCOL_VERSION == schema.PROTOCOL_VERSION
    assert frame_dict._MAX_FRAME_BYTES == schema.MAX_FRAME_BYTES
    assert frame_dict._DEFAULT_TTL_MS == schema.DEFAULT_TTL_MS


def test_firmware_private_constants_match_schema() -> None:
    """Every _NAME = const(n) copy in the firmware equals schema.NAME."""
    checked = 0
    for module in (core_mod, evaluator_mod, battery_mod, audit_read_mod):
        for name in dir(module):
            public = name[1:]
            if name.startswith("_") and public.isupper() and hasattr(schema, public):
                assert getattr(module, name) == getattr(schema, public), (module, name)
                checked += 1
    assert checked >= 30
    assert evaluator_mod._NOTICE_REPUTATION == frame.NOTICE_REPUTATION
    assert evaluator_mod._NOTICE_CLEARING == frame.NOTICE_CLEARING
    keys = {name: value for name, value in vars(core_mod).items() if name.startswith("_K_")}
    assert len(keys) >= 12
    for name, value in keys.items():  # core's payload field keys: schema.FIELD_KEY's
        assert schema.FIELD_KEY[name[3:].lower()] == value, name


def test_core_topics_match_the_topic_scheme() -> None:
    """NodeCore spells the topics itself (boards skip shared_etp.topics): same strings."""
    config = {"device_id": 7, "site": "siteA", "key": KEY, "notice_key": KEY,
              "reserve_mc": 20000, "pct_for_sale": 8000, "dynamic_reserve": True,
              "hold_timeout_ms": 3000, "min_reputation": 2000}
    core = NodeCore(config, SimBattery())
    assert core.topic_req == topics.device_topic("siteA", 7, topics.REQUEST)
    assert core.topic_resp == topics.device_topic("siteA", 7, topics.RESPONSE)
    assert core.birth()[0] == topics.device_topic("siteA", 7, topics.BIRTH)
    assert core.will()[0] == topics.device_topic("siteA", 7, topics.DEATH)
    assert core.status()[0] == topics.device_topic("siteA", 7, topics.STATUS)
    assert core.subscriptions() == [
        topics.device_topic("siteA", 7, topics.REQUEST),
        topics.notice_topic("siteA", 7, topics.REPUTATION),
        topics.notice_topic("siteA", 7, topics.CLEARING),
        topics.notice_topic("siteA", 7, topics.TIME),
    ]
