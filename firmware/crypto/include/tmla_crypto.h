/* tmla_crypto.h — the agent's view of its crypto primitives.
 *
 * Every primitive is a thin glue over vetted sources fetched from a package registry at build
 * time (see firmware/crypto/README.md): SHA-256, SHA-512, AES and GHASH from the pycryptodome
 * sdist's C sources, the Ed25519 check equation from the pymonocypher sdist's monocypher.c.
 * The two modes composed here (GCM from AES + GHASH, RFC 3394 key unwrap from AES) are small,
 * our own, and tested against NIST CAVP and RFC 3394 vectors.
 *
 * Contexts are opaque, fixed-size and caller-allocated: nothing here allocates.
 */
#ifndef TMLA_CRYPTO_H
#define TMLA_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct { uint64_t opaque[18]; } tmla_sha256_ctx;  /* 144 bytes */
typedef struct { uint64_t opaque[32]; } tmla_sha512_ctx;  /* 256 bytes */
typedef struct { uint32_t opaque[122]; } tmla_aes_ctx;     /* 488 bytes: enc + dec schedules */

void tmla_sha256_init(tmla_sha256_ctx *c);
void tmla_sha256_update(tmla_sha256_ctx *c, const void *data, size_t len);
void tmla_sha256_final(tmla_sha256_ctx *c, uint8_t out[32]);
void tmla_sha256(const void *data, size_t len, uint8_t out[32]);

void tmla_sha512_init(tmla_sha512_ctx *c);
void tmla_sha512_update(tmla_sha512_ctx *c, const void *data, size_t len);
void tmla_sha512_final(tmla_sha512_ctx *c, uint8_t out[64]);

/* AES-128/192/256 block cipher; returns 0, or -1 for a bad key length. */
int tmla_aes_init(tmla_aes_ctx *c, const uint8_t *key, size_t key_len);
void tmla_aes_encrypt(const tmla_aes_ctx *c, const uint8_t in[16], uint8_t out[16]);
void tmla_aes_decrypt(const tmla_aes_ctx *c, const uint8_t in[16], uint8_t out[16]);
void tmla_aes_wipe(tmla_aes_ctx *c);

/* GHASH (NIST SP 800-38D): y <- (y ^ block_i) * H for each 16-byte block. */
typedef struct { uint64_t opaque[10]; } tmla_ghash_key;
void tmla_ghash_init(tmla_ghash_key *k, const uint8_t h[16]);
void tmla_ghash_blocks(const tmla_ghash_key *k, uint8_t y[16], const uint8_t *data, size_t len16);

/* AES-GCM decryption, streaming, 96-bit nonce. Plaintext is produced before the tag is
 * checked: the caller must treat it as untrusted until tmla_gcm_finish() returns 0. */
typedef struct {
    tmla_aes_ctx aes;
    tmla_ghash_key gk;
    uint8_t j0[16], ctr[16], y[16], ks[16], buf[16];
    uint64_t aad_len, ct_len;
    uint32_t ks_used, buf_len;
} tmla_gcm_ctx;
int tmla_gcm_init(tmla_gcm_ctx *g, const uint8_t *key, size_t key_len, const uint8_t nonce[12]);
void tmla_gcm_aad(tmla_gcm_ctx *g, const uint8_t *aad, size_t len); /* once, before any data */
void tmla_gcm_decrypt(tmla_gcm_ctx *g, const uint8_t *in, uint8_t *out, size_t len);
void tmla_gcm_encrypt(tmla_gcm_ctx *g, const uint8_t *in, uint8_t *out, size_t len); /* tests */
void tmla_gcm_tag(tmla_gcm_ctx *g, uint8_t tag[16]);
int tmla_gcm_finish(tmla_gcm_ctx *g, const uint8_t tag[16]); /* 0: tag verifies (constant time) */

/* RFC 3394 AES key unwrap with the default IV; 0 on success, -1 on integrity failure.
 * out receives in_len - 8 bytes; in_len must be a multiple of 8, 24..72. */
int tmla_aes_key_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len, uint8_t *out);

/* Ed25519 (RFC 8032, pure) verification with the message streamed in. */
typedef struct {
    tmla_sha512_ctx sha;
    uint8_t sig[64];
    uint8_t pk[32];
} tmla_ed25519_ctx;
void tmla_ed25519_verify_init(tmla_ed25519_ctx *c, const uint8_t sig[64], const uint8_t pk[32]);
void tmla_ed25519_verify_update(tmla_ed25519_ctx *c, const void *msg, size_t len);
int tmla_ed25519_verify_final(tmla_ed25519_ctx *c); /* 0: valid */
int tmla_ed25519_verify(const uint8_t sig[64], const uint8_t pk[32], const void *msg, size_t len);

/* constant-time compare: 0 when equal */
int tmla_ct_compare(const uint8_t *a, const uint8_t *b, size_t n);
void tmla_wipe(void *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif
