#!/usr/bin/env python3
"""Writes the protocol test vectors.

The HMAC values are computed here with Python's own hmac/hashlib, independently
of the Rust code, so that the Rust tests (and the TypeScript SDK's) check the
implementation against a second one. Run: python3 protocol/vectors/generate.py
"""
import hashlib
import hmac
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

LEFT = '{"id":"e-2000-3001-sess-a-1","type":"voice.left","guildId":"2000","userId":"3001","channelId":null,"previousChannelId":"4000","occurredAt":"2026-11-28T00:00:00.123Z"}'
JOINED = '{"id":"e-2000-3001-sess-a-2","type":"voice.joined","guildId":"2000","userId":"3001","channelId":"4000","previousChannelId":null,"occurredAt":"2026-11-28T00:00:01.000Z"}'
MOVED = '{"id":"e-2000-3001-sess-a-3","type":"voice.moved","guildId":"2000","userId":"3001","channelId":"4001","previousChannelId":"4000","occurredAt":"2026-11-28T00:00:02.500Z"}'


def sig(secret: str, ts: str, body: str) -> str:
    mac = hmac.new(secret.encode(), b"v1:" + ts.encode() + b":" + body.encode(), hashlib.sha256)
    return "v1=" + mac.hexdigest()


def write(name, data):
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def events():
    def ev(**over):
        base = json.loads(LEFT)
        base.update(over)
        return json.dumps(base, separators=(",", ":"))

    write("events.json", {
        "valid": [
            {"name": "contract example (left)", "json": LEFT, "type": "voice.left"},
            {"name": "joined", "json": JOINED, "type": "voice.joined"},
            {"name": "moved", "json": MOVED, "type": "voice.moved"},
            {"name": "moved with unknown previous", "json": ev(type="voice.moved", channelId="4001", previousChannelId=None), "type": "voice.moved"},
            {"name": "left with unknown previous", "json": ev(previousChannelId=None), "type": "voice.left"},
            {"name": "unknown fields are kept", "json": LEFT[:-1] + ',"shard":3,"extra":{"a":[1,2]}}', "type": "voice.left"},
            {"name": "microseconds with +00:00", "json": ev(occurredAt="2026-11-28T00:00:00.123456+00:00"), "type": "voice.left"},
            {"name": "max snowflake", "json": ev(userId="18446744073709551615"), "type": "voice.left"},
            {"name": "id of 128 chars", "json": ev(id="a" * 128), "type": "voice.left"},
        ],
        "invalid": [
            {"name": "not json", "json": "{", "error": "Json"},
            {"name": "array", "json": "[]", "error": "Json"},
            {"name": "missing id", "json": LEFT.replace('"id":"e-2000-3001-sess-a-1",', ""), "error": "Json"},
            {"name": "empty id", "json": ev(id=""), "error": "InvalidId"},
            {"name": "id too long", "json": ev(id="a" * 129), "error": "InvalidId"},
            {"name": "id with space", "json": ev(id="a b"), "error": "InvalidId"},
            {"name": "id with slash", "json": ev(id="a/b"), "error": "InvalidId"},
            {"name": "unknown type", "json": ev(type="voice.muted"), "error": "UnknownType"},
            {"name": "guildId as number", "json": LEFT.replace('"guildId":"2000"', '"guildId":2000'), "error": "Json"},
            {"name": "guildId zero", "json": ev(guildId="0"), "error": "InvalidSnowflake"},
            {"name": "guildId not decimal", "json": ev(guildId="12a"), "error": "InvalidSnowflake"},
            {"name": "userId overflow", "json": ev(userId="18446744073709551616"), "error": "InvalidSnowflake"},
            {"name": "userId leading zero", "json": ev(userId="03001"), "error": "InvalidSnowflake"},
            {"name": "channelId set on left", "json": ev(channelId="4000"), "error": "ChannelOnLeave"},
            {"name": "joined without channel", "json": ev(type="voice.joined", previousChannelId=None), "error": "MissingChannel"},
            {"name": "moved without channel", "json": ev(type="voice.moved"), "error": "MissingChannel"},
            {"name": "joined with previous", "json": ev(type="voice.joined", channelId="4000", previousChannelId="4001"), "error": "PreviousOnJoin"},
            {"name": "moved to same channel", "json": ev(type="voice.moved", channelId="4000", previousChannelId="4000"), "error": "MoveToSameChannel"},
            {"name": "timestamp without fraction", "json": ev(occurredAt="2026-11-28T00:00:00Z"), "error": "InvalidTimestamp"},
            {"name": "timestamp with 2 fraction digits", "json": ev(occurredAt="2026-11-28T00:00:00.12Z"), "error": "InvalidTimestamp"},
            {"name": "timestamp not UTC", "json": ev(occurredAt="2026-11-28T01:00:00.123+01:00"), "error": "InvalidTimestamp"},
            {"name": "timestamp garbage", "json": ev(occurredAt="yesterday"), "error": "InvalidTimestamp"},
        ],
    })


def frames():
    ev_frame = '{"v":1,"type":"event","event":"voice.left","cursor":"1764288000000-42","payload":' + LEFT + "}"
    write("frames.json", {
        "client": {
            "valid": [
                {"name": "auth", "json": '{"v":1,"type":"auth","token":"eyJ.x.y"}', "frame": {"type": "auth", "token": "eyJ.x.y", "resume": None, "scope": "guild"}},
                {"name": "auth with resume", "json": '{"v":1,"type":"auth","token":"t","resume":{"cursor":"1764288000000-42"}}', "frame": {"type": "auth", "token": "t", "resume": "1764288000000-42", "scope": "guild"}},
                {"name": "auth scope self", "json": '{"v":1,"type":"auth","token":"t","scope":"self"}', "frame": {"type": "auth", "token": "t", "resume": None, "scope": "self"}},
                {"name": "auth scope guild explicit, unknown field", "json": '{"v":1,"type":"auth","token":"t","scope":"guild","x":true}', "frame": {"type": "auth", "token": "t", "resume": None, "scope": "guild"}},
                {"name": "ping", "json": '{"v":1,"type":"ping"}', "frame": {"type": "ping"}},
            ],
            "invalid": [
                {"name": "not json", "json": "hello", "error": "NotJson"},
                {"name": "array", "json": "[1]", "error": "NotJson"},
                {"name": "no version", "json": '{"type":"ping"}', "error": "UnsupportedVersion"},
                {"name": "version 2", "json": '{"v":2,"type":"ping"}', "error": "UnsupportedVersion"},
                {"name": "version as string", "json": '{"v":"1","type":"ping"}', "error": "UnsupportedVersion"},
                {"name": "no type", "json": '{"v":1}', "error": "MissingType"},
                {"name": "unknown type", "json": '{"v":1,"type":"subscribe"}', "error": "UnknownType"},
                {"name": "auth without token", "json": '{"v":1,"type":"auth"}', "error": "MissingToken"},
                {"name": "auth empty token", "json": '{"v":1,"type":"auth","token":""}', "error": "MissingToken"},
                {"name": "auth token not string", "json": '{"v":1,"type":"auth","token":5}', "error": "MissingToken"},
                {"name": "resume not object", "json": '{"v":1,"type":"auth","token":"t","resume":"c"}', "error": "InvalidResume"},
                {"name": "resume without cursor", "json": '{"v":1,"type":"auth","token":"t","resume":{}}', "error": "InvalidResume"},
                {"name": "bad scope", "json": '{"v":1,"type":"auth","token":"t","scope":"all"}', "error": "InvalidScope"},
            ],
        },
        "server": {
            "valid": [
                {"name": "ack", "json": '{"v":1,"type":"ack","event":"auth.ok","cursor":"1764288000000-42","recovered":true}'},
                {"name": "ack not recovered", "json": '{"v":1,"type":"ack","event":"auth.ok","cursor":"1764288000000-0","recovered":false}'},
                {"name": "event", "json": ev_frame},
                {"name": "ping", "json": '{"v":1,"type":"ping"}'},
                {"name": "pong", "json": '{"v":1,"type":"pong"}'},
                {"name": "error", "json": '{"v":1,"type":"error","code":"token_expired","message":"the token has expired"}'},
            ],
            "invalid": [
                {"name": "ack without recovered", "json": '{"v":1,"type":"ack","event":"auth.ok","cursor":"1-1"}', "error": "BadField"},
                {"name": "event with unknown kind", "json": '{"v":1,"type":"event","event":"voice.x","cursor":"1-1","payload":{}}', "error": "BadField"},
                {"name": "event without payload", "json": '{"v":1,"type":"event","event":"voice.left","cursor":"1-1"}', "error": "BadField"},
                {"name": "no version", "json": '{"type":"pong"}', "error": "UnsupportedVersion"},
            ],
        },
    })


def close_codes():
    write("close_codes.json", [
        {"code": 1000, "name": "Normal", "errorCode": "normal", "clientAction": "nothing"},
        {"code": 1012, "name": "Restart", "errorCode": "service_restart", "clientAction": "reconnect_resume"},
        {"code": 4000, "name": "ProtocolError", "errorCode": "protocol_error", "clientAction": "report_backoff"},
        {"code": 4001, "name": "AuthFailed", "errorCode": "auth_failed", "clientAction": "new_token"},
        {"code": 4002, "name": "AuthTimeout", "errorCode": "auth_timeout", "clientAction": "reconnect"},
        {"code": 4003, "name": "TokenExpired", "errorCode": "token_expired", "clientAction": "new_token_resume"},
        {"code": 4008, "name": "SlowConsumer", "errorCode": "slow_consumer", "clientAction": "reconnect_resume"},
        {"code": 4029, "name": "RateLimited", "errorCode": "rate_limited", "clientAction": "backoff"},
    ])


def signatures():
    ts = "1795824000123"
    now = 1795824000123
    cases = []

    def case(name, keys, body, stamp_secret, key_id, timestamp=ts, now_ms=now, tolerance=300000, result="ok", header=None):
        h = header if header is not None else sig(stamp_secret, timestamp, body)
        cases.append({
            "name": name, "keys": keys, "body": body, "timestamp": timestamp,
            "keyId": key_id, "signature": h, "nowMs": now_ms, "toleranceMs": tolerance, "result": result,
        })

    case("valid, signing key", "k1=topsecret", LEFT, "topsecret", "k1")
    case("valid, no key id means the default (first) key", "k1=topsecret,k0=old", LEFT, "topsecret", None)
    case("valid, rotated: old key still verifies", "k2=newer,k1=topsecret", LEFT, "topsecret", "k1")
    case("valid, replay without freshness check", "k1=topsecret", LEFT, "topsecret", "k1", now_ms=None)
    case("valid, exactly at the tolerance", "k1=topsecret", JOINED, "topsecret", "k1", now_ms=now + 300000)
    case("wrong key", "k1=topsecret", LEFT, "not-the-secret", "k1", result="Mismatch")
    case("unknown key id", "k1=topsecret", LEFT, "topsecret", "k9", result="UnknownKey")
    case("stale timestamp (301 s old)", "k1=topsecret", LEFT, "topsecret", "k1", now_ms=now + 301000, result="Stale")
    case("timestamp from the future (301 s)", "k1=topsecret", LEFT, "topsecret", "k1", now_ms=now - 301000, result="Stale")
    case("body changed by one byte", "k1=topsecret", LEFT.replace("3001", "3002"), "topsecret", "k1",
         header=sig("topsecret", ts, LEFT), result="Mismatch")
    case("timestamp changed", "k1=topsecret", LEFT, "topsecret", "k1", timestamp="1795824000124",
         header=sig("topsecret", ts, LEFT), result="Mismatch")
    case("missing signature", "k1=topsecret", LEFT, "topsecret", "k1", header="", result="MissingSignature")
    case("uppercase hex", "k1=topsecret", LEFT, "topsecret", "k1",
         header=sig("topsecret", ts, LEFT).upper().replace("V1=", "v1="), result="MalformedSignature")
    case("no v1= prefix", "k1=topsecret", LEFT, "topsecret", "k1",
         header=sig("topsecret", ts, LEFT)[3:], result="MalformedSignature")
    case("short hex", "k1=topsecret", LEFT, "topsecret", "k1",
         header=sig("topsecret", ts, LEFT)[:-2], result="MalformedSignature")
    case("missing timestamp", "k1=topsecret", LEFT, "topsecret", "k1", timestamp="", result="MissingTimestamp")
    case("timestamp in seconds with fraction", "k1=topsecret", LEFT, "topsecret", "k1", timestamp="1795824000.123", result="MalformedTimestamp")
    write("signatures.json", cases)


def subjects():
    write("subjects.json", {
        "valid": [
            {"prefix": "voice", "subject": "voice.v1.2000.left", "guildId": "2000", "type": "voice.left"},
            {"prefix": "voice", "subject": "voice.v1.2000.joined", "guildId": "2000", "type": "voice.joined"},
            {"prefix": "voice", "subject": "voice.v1.18446744073709551615.moved", "guildId": "18446744073709551615", "type": "voice.moved"},
            {"prefix": "acme.prod", "subject": "acme.prod.v1.7.left", "guildId": "7", "type": "voice.left"},
        ],
        "invalid": [
            {"prefix": "voice", "subject": "voice.v1.2000", "error": "Malformed"},
            {"prefix": "voice", "subject": "voice.v2.2000.left", "error": "Malformed"},
            {"prefix": "voice", "subject": "other.v1.2000.left", "error": "WrongPrefix"},
            {"prefix": "voice", "subject": "voice.v1.abc.left", "error": "InvalidGuild"},
            {"prefix": "voice", "subject": "voice.v1.0.left", "error": "InvalidGuild"},
            {"prefix": "voice", "subject": "voice.v1.2000.muted", "error": "UnknownKind"},
            {"prefix": "voice", "subject": "voice.v1.2000.left.extra", "error": "UnknownKind"},
        ],
    })


events()
frames()
close_codes()
signatures()
subjects()
