/* AES block cipher: pycryptodome's src/AES.c (Rijndael reference, Rijmen/Bosselaers/Barreto). */
#define NO_CPYTHON_MODULE 1
#define HAVE_STDINT_H 1
#define HAVE_POSIX_MEMALIGN 1
#define MODULE_NAME AES
#include "AES.c"
#include "tmla_crypto.h"

_Static_assert(sizeof(struct block_state) <= sizeof(tmla_aes_ctx), "tmla_aes_ctx too small");

int tmla_aes_init(tmla_aes_ctx *c, const uint8_t *key, size_t key_len)
{
    return block_init((struct block_state *)c, key, key_len) == 0 ? 0 : -1;
}
void tmla_aes_encrypt(const tmla_aes_ctx *c, const uint8_t in[16], uint8_t out[16])
{
    block_encrypt((struct block_state *)c, in, out);
}
void tmla_aes_decrypt(const tmla_aes_ctx *c, const uint8_t in[16], uint8_t out[16])
{
    block_decrypt((struct block_state *)c, in, out);
}
