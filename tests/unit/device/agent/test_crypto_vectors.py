"""The agent's primitives against published vectors, through the host-native C library:
RFC 8032 (Ed25519), RFC 6234 and NIST CAVP byte-oriented SHA-256 (SHA256ShortMsg), NIST CAVP
AES-GCM (gcmEncryptExtIV256 / gcmDecrypt256) and the GCM spec's AES-256 cases, RFC 3394 key
unwrap, FIPS-197 AES-256. Each vector is also checked against Python's hashlib / cryptography,
so a mistyped vector cannot pass silently."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.unit.device.agent.rig import lib

h = bytes.fromhex

RFC8032 = [  # (secret, public, message, signature): RFC 8032 §7.1 TEST 1, 2, 3
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]

SHA256 = [  # RFC 6234 §8.5 TEST1..TEST4, then NIST CAVP SHA256ShortMsg.rsp (Len = 0, 8, 16)
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
    (b"01234567" * 80, "594847328451bdfa85056225462cc1d867d877fb388df0ce35f25ab5562bfbb5"),
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (h("d3"), "28969cdfa74a12c82f3bad960b0b000aca2ac329deea5c2328ebc6f2ba9802c1"),
    (h("11af"), "5ca7133fa735326081558ac312c620eeca9970d1e70a4b95533d956f072d1f98"),
]

_K15 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
_P15 = (
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
_C15 = (
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
)
GCM = [  # (key, iv, plaintext, aad, ciphertext, tag)
    # NIST CAVP gcmEncryptExtIV256.rsp [PTlen = 0][AADlen = 0] Count = 0
    ("b52c505a37d78eda5dd34f20c22540ea1b58963cf8e5bf8ffa85f9f2492505b4", "516c33929df5a3284ff463d7", "", "", "",
     "bdc1ac884d332457a1d2664f168c76f0"),
    # NIST CAVP gcmDecrypt256.rsp [PTlen = 0][AADlen = 0] Count = 0
    ("f5a2b27c74355872eb3ef6c5feafaa740e6ae990d9d48c3bd9bb8235e589f010", "58d2240f580a31c1d24948e9", "", "", "",
     "15e051a5e4a5f5da6cea92e2ebee5bac"),
    # NIST CAVP gcmDecrypt256.rsp [PTlen = 128][AADlen = 128] Count = 0
    ("54e352ea1d84bfe64a1011096111fbe7668ad2203d902a01458c3bbd85bfce14", "df7c3bca00396d0c018495d9",
     "85fc3dfad9b5a8d3258e4fc44571bd3b", "7e968d71b50c1f11fd001f3fef49d045", "426e0efc693b7be1f3018db7ddbb7e4d",
     "ee8257795be6a1164d7e1d2d6cac77a7"),
    # The GCM specification (McGrew & Viega, as submitted to NIST), AES-256 test cases 13-16
    ("00" * 32, "00" * 12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
    ("00" * 32, "00" * 12, "00" * 16, "", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"),
    (_K15, "cafebabefacedbaddecaf888", _P15, "", _C15, "b094dac5d93471bdec1a502270e3cc6c"),
    (_K15, "cafebabefacedbaddecaf888", _P15[:120], "feedfacedeadbeeffeedfacedeadbeefabaddad2", _C15[:120],
     "76fc6ece0f4e1768cddf8853bb2d551b"),
]  # fmt: skip


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_ed25519_rfc8032(secret: str, public: str, message: str, signature: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(h(secret))
    assert key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == h(public)
    assert key.sign(h(message)) == h(signature)
    assert lib().ed25519_verify(h(signature), h(public), h(message))
    bad = bytearray(h(signature))
    bad[5] ^= 1
    assert not lib().ed25519_verify(bytes(bad), h(public), h(message))
    assert not lib().ed25519_verify(h(signature), h(public), h(message) + b"x")


def test_ed25519_refuses_s_at_or_above_the_group_order() -> None:
    """Malleability (RFC 8032 §5.1.7): S + L must not verify."""
    _, public, message, signature = RFC8032[0]
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(h(signature)[32:], "little") + order
    forged = h(signature)[:32] + s.to_bytes(32, "little")
    assert not lib().ed25519_verify(forged, h(public), h(message))


def test_ed25519_random_messages_agree_with_cryptography() -> None:
    for _ in range(50):
        key = Ed25519PrivateKey.generate()
        msg = os.urandom(int.from_bytes(os.urandom(2), "little") % 3000)
        pk = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert lib().ed25519_verify(key.sign(msg), pk, msg)


@pytest.mark.parametrize(("message", "digest"), SHA256)
def test_sha256_rfc6234_and_cavp(message: bytes, digest: str) -> None:
    assert hashlib.sha256(message).hexdigest() == digest
    assert lib().sha256(message).hex() == digest


def test_sha512_rfc6234() -> None:
    for message in (b"abc", b"a" * 1000, b""):
        assert lib().sha512(message) == hashlib.sha512(message).digest()
    assert lib().sha512(b"abc").hex().startswith("ddaf35a193617aba")


def test_aes256_fips197() -> None:
    key = h("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
    block = h("00112233445566778899aabbccddeeff")
    assert lib().aes_encrypt_block(key, block).hex() == "8ea2b7ca516745bfeafc49904b496089"


@pytest.mark.parametrize(("key", "iv", "plaintext", "aad", "ciphertext", "tag"), GCM)
def test_aes_gcm_nist(key: str, iv: str, plaintext: str, aad: str, ciphertext: str, tag: str) -> None:
    assert AESGCM(h(key)).encrypt(h(iv), h(plaintext), h(aad) or None) == h(ciphertext) + h(tag)
    assert lib().gcm_encrypt(h(key), h(iv), h(aad), h(plaintext)) == (h(ciphertext), h(tag))
    assert lib().gcm_decrypt(h(key), h(iv), h(aad), h(ciphertext), h(tag)) == h(plaintext)
    bad = bytearray(h(tag))
    bad[0] ^= 0x80
    assert lib().gcm_decrypt(h(key), h(iv), h(aad), h(ciphertext), bytes(bad)) is None


def test_aes_gcm_streams_like_one_shot() -> None:
    key, iv, aad = os.urandom(32), os.urandom(12), os.urandom(32)
    for size in (1, 15, 16, 17, 255, 4096 + 3):
        pt = os.urandom(size)
        ct = AESGCM(key).encrypt(iv, pt, aad)
        assert lib().gcm_decrypt(key, iv, aad, ct[:-16], ct[-16:]) == pt


def test_aes_key_unwrap_rfc3394() -> None:
    """RFC 3394 §4.6: 256 bits of key data with a 256-bit KEK."""
    kek = h("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
    data = h("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
    wrapped = h("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
    assert aes_key_wrap(kek, data) == wrapped
    assert lib().key_unwrap(kek, wrapped) == data
    tampered = bytearray(wrapped)
    tampered[10] ^= 1
    assert lib().key_unwrap(kek, bytes(tampered)) is None
    assert lib().key_unwrap(os.urandom(32), wrapped) is None
