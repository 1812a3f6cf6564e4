/* SHA-512: pycryptodome's src/SHA512.c, for the Ed25519 challenge hash. */
#define NO_CPYTHON_MODULE 1
#define HAVE_STDINT_H 1
#define HAVE_POSIX_MEMALIGN 1
#include "SHA512.c"
#include "tmla_crypto.h"

_Static_assert(sizeof(hash_state) <= sizeof(tmla_sha512_ctx), "tmla_sha512_ctx too small");

void tmla_sha512_init(tmla_sha512_ctx *c) { sha_init_state((hash_state *)c, 64); }
void tmla_sha512_update(tmla_sha512_ctx *c, const void *data, size_t len)
{
    if (len) SHA512_update((hash_state *)c, (const uint8_t *)data, len);
}
void tmla_sha512_final(tmla_sha512_ctx *c, uint8_t out[64]) { SHA512_digest((hash_state *)c, out, 64); }
