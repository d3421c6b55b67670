#!/usr/bin/env python3
"""Writes the seed corpora, corpus/<target>/, from the shapes the tests use.

Run from anywhere: `python3 fuzz/make_seeds.py`. The seeds are committed; what the fuzzer adds
during a run is not (docs/SECURITY.md, "Fuzzing").
"""

import base64
import hashlib
import hmac
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = b"0123456789abcdef0123456789abcdef"  # token_extraction's authenticator

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(fin, opcode, payload, masked=True, mask=b"\x12\x34\x56\x78"):
    """A client frame, as tests/it/frames.rs's RawClient::send writes it."""
    out = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        out.append(bit | n)
    elif n <= 0xFFFF:
        out.append(bit | 126)
        out += n.to_bytes(2, "big")
    else:
        out.append(bit | 127)
        out += n.to_bytes(8, "big")
    if masked:
        out += mask
        out += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    else:
        out += payload
    return bytes(out)


def close(code, reason=b""):
    return frame(True, CLOSE, code.to_bytes(2, "big") + reason)


def ws(limit_log2, chunk, *frames):
    """ws_codec input: limit byte (16 << k), read-size byte (0: 8 KiB), the stream."""
    return bytes([limit_log2, chunk]) + b"".join(frames)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims):
    head = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET, head.encode(), hashlib.sha256).digest()
    return head + "." + b64(sig)


ACCESS = {"sub": "alice", "username": "Alice", "type": "access", "exp": 4102444800}
TOKEN = jwt(ACCESS)
e_acute = "é".encode()

SEEDS = {
    "ws_codec": {
        "text_hello": ws(6, 0, frame(True, TEXT, b"hello")),
        # frames.rs: a fragmented message with a ping between fragments, é split in two.
        "fragments_ping_between": ws(6, 1,
                                     frame(False, TEXT, b"frag"),
                                     frame(True, PING, b"are you there"),
                                     frame(False, CONT, b"men"),
                                     frame(False, CONT, e_acute[:1]),
                                     frame(True, CONT, e_acute[1:])),
        "binary_then_close_reason": ws(6, 7, frame(True, BINARY, bytes([0, 159, 255])),
                                       frame(True, PONG, b""), close(4321, b"done here")),
        # 16-bit length form, over a 64-byte limit: refused and skipped, the close still read.
        "too_big_then_close": ws(2, 0, frame(True, TEXT, b"y" * 300), close(1000)),
        "too_big_in_fragments": ws(2, 13, frame(False, TEXT, b"a" * 60),
                                   frame(True, CONT, b"a" * 60), close(1000)),
        # 64-bit length form (its payload cut short).
        "len64_truncated": ws(7, 0, frame(True, BINARY, b"z" * 70000)[:64]),
        "unmasked": ws(6, 0, bytes([0x81, 0x02]) + b"hi"),
        "reserved_bit": ws(6, 0, bytes([0xC1, 0x80, 0, 0, 0, 0])),
        "unknown_opcode": ws(6, 0, bytes([0x83, 0x80, 0, 0, 0, 0])),
        "orphan_continuation": ws(6, 0, bytes([0x80, 0x80, 0, 0, 0, 0])),
        "invalid_utf8": ws(6, 0, bytes([0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28])),
        "close_bad_reason": ws(6, 0, close(1000, b"\xff")),
        "close_one_byte": ws(6, 0, frame(True, CLOSE, b"\x03")),
        "close_1005": ws(6, 0, close(1005)),
        "long_ping": ws(6, 0, bytes([0x89, 0xFE, 0, 126]) + b"\0" * 130),
    },
    "native_decode": {
        "join": b'{"type": "join", "room": "lobby"}',
        "join_since": b'{"type": "join", "room": "lobby", "since": 0}',
        "message": b'{"type": "message", "room": "lobby", "content": "hi", "client_msg_id": "c-1"}',
        "message_data": b'{"type":"message","room":"lobby","content":"a\\u0000b","data":{"k":[1,2.5,null,true]}}',
        "leave": b'{"type": "leave", "room": "lobby"}',
        "user_list": b'{"type":"user_list","room":"lobby"}',
        "ping": b'{"type": "ping"}',
        "unknown_multibyte": ('{"type": "a' + "é" * 40 + '"}').encode(),
        "bad_room": b'{"type":"join","room":"has space"}',
        "not_json": b"not json",
    },
    "channels_decode": {
        "message": b"\x64" + b'{"message": "Hi!"}',
        "not_a_string": b"\x64" + b'{"message": 5}',
        "missing": b"\x64" + b'{"text": "Hi!"}',
        "not_json": b"\x64" + b"Hi!",
        "blank": b"\x00" + b'{"message": "  \\t"}',
        "too_long": b"\x03" + '{"message": "héllo"}'.encode(),
    },
    "token_scoped_decode": {
        "plain": b"\x64" + b"hi",
        "json_string": b"\x64" + b'"hello \\"Ann\\""',
        "unquoted": b"\x64" + b'hello "Ann"',
        "object": b"\x64" + b'{"not": "a string"}',
        "empty_string": b"\x64" + b'""',
        "too_long": b"\x02" + '"\\u00e9t\\u00e9"'.encode(),
    },
    "token_extraction": {
        "query": ("room=a&token=" + TOKEN).encode(),
        "cookie": ("\nc theme=dark; access_token=" + TOKEN).encode(),
        "cookie_quoted": ('\nc token="' + TOKEN + '"').encode(),
        "bearer": ("\na Bearer " + TOKEN).encode(),
        "subprotocol": ("\np chat, token." + TOKEN).encode(),
        "everywhere": ("token=" + TOKEN + "\nc access_token=x.y.z\na bearer a.b.c\np token.q").encode(),
        "claims_refresh": b"\ns " + json.dumps({**ACCESS, "type": "refresh"}).encode(),
        "claims_expired": b"\ns " + json.dumps({**ACCESS, "exp": 1}).encode(),
        "claims_extra": b'\ns {"sub":"c1","name":"Ann","room_id":"K7PQ2XHM","exp":4102444800,"nbf":0,"type":"access"}',
        "alg_none": b'\nh {"alg":"none","typ":"JWT"}\ns ' + json.dumps(ACCESS).encode(),
        # Found by this target, minimized: `Cookie: token="` was found as an empty token.
        "regression_quoted_empty_cookie": b'\nctoken="',
    },
    "http_bodies": {
        "credentials": b'{"username": "alice", "password": "correct horse battery"}',
        "refresh": ('{"refresh_token": "' + TOKEN + '"}').encode(),
        "create_room": b'{"name": "secret", "private": true}',
        "create_room_public": b'{"name": "lobby"}',
        "add_member": b'{"user_id": "0190a5b2-6c1e-7000-8000-000000000001"}',
        "wrong_shape": b'{"name": 5, "private": "yes"}',
        "query_create": b"name=Ann",
        "query_join": b"name=Bob&room_id=NOPE2345",
        "query_history": b"before=10&limit=200",
        "query_room_list": b"after=12&limit=50",
    },
}

for target, seeds in SEEDS.items():
    folder = os.path.join(HERE, "corpus", target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
