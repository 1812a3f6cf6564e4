/* GHASH: pycryptodome's src/ghash_portable.c (constant-time, no tables). */
#define NO_CPYTHON_MODULE 1
#define HAVE_STDINT_H 1
#define HAVE_POSIX_MEMALIGN 1
#if UINTPTR_MAX > 0xffffffffu || defined(__x86_64__) || defined(__aarch64__)
#define SYS_BITS 64
#else
#define SYS_BITS 32
#endif
#include "ghash_portable.c"
#include "tmla_crypto.h"

_Static_assert(sizeof(t_exp_key) <= sizeof(tmla_ghash_key), "tmla_ghash_key too small");

void tmla_ghash_init(tmla_ghash_key *k, const uint8_t h[16]) { expand_key_bytes((t_exp_key *)k, h); }
void tmla_ghash_blocks(const tmla_ghash_key *k, uint8_t y[16], const uint8_t *data, size_t len16)
{
    if (len16) ghash_blocks(y, data, len16, (const t_exp_key *)k);
}
