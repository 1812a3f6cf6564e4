/* SHA-256: pycryptodome's src/SHA256.c (hash_SHA2_template.c + the portable compression), used
 * through its own init/update/digest on a caller-owned state; no allocation. */
#define NO_CPYTHON_MODULE 1
#define HAVE_STDINT_H 1
#define HAVE_POSIX_MEMALIGN 1
#include "SHA256.c"
#include "tmla_crypto.h"

_Static_assert(sizeof(hash_state) <= sizeof(tmla_sha256_ctx), "tmla_sha256_ctx too small");

void tmla_sha256_init(tmla_sha256_ctx *c) { sha_init_state((hash_state *)c, DIGEST_SIZE); }
void tmla_sha256_update(tmla_sha256_ctx *c, const void *data, size_t len)
{
    if (len) SHA256_update((hash_state *)c, (const uint8_t *)data, len);
}
void tmla_sha256_final(tmla_sha256_ctx *c, uint8_t out[32]) { SHA256_digest((hash_state *)c, out, 32); }
void tmla_sha256(const void *data, size_t len, uint8_t out[32])
{
    tmla_sha256_ctx c;
    tmla_sha256_init(&c);
    tmla_sha256_update(&c, data, len);
    tmla_sha256_final(&c, out);
}
