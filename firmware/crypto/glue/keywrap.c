/* RFC 3394 AES key unwrap (default IV A6A6A6A6A6A6A6A6) over the vetted AES block: our code,
 * tested against the RFC 3394 §4 vectors. */
#include "tmla_crypto.h"

int tmla_aes_key_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len, uint8_t *out)
{
    tmla_aes_ctx aes;
    uint8_t a[8], b[16];
    size_t n = in_len / 8 - 1;
    if (in_len % 8 || in_len < 24 || in_len > 72) return -1;
    if (tmla_aes_init(&aes, kek, kek_len) != 0) return -1;
    for (int i = 0; i < 8; i++) a[i] = in[i];
    for (size_t i = 0; i < n * 8; i++) out[i] = in[8 + i];
    for (int j = 5; j >= 0; j--) {
        for (size_t i = n; i >= 1; i--) {
            uint64_t t = (uint64_t)n * (uint64_t)j + i;
            for (int k = 7; k >= 0; k--) { a[k] ^= (uint8_t)t; t >>= 8; }
            for (int k = 0; k < 8; k++) { b[k] = a[k]; b[8 + k] = out[(i - 1) * 8 + k]; }
            tmla_aes_decrypt(&aes, b, b);
            for (int k = 0; k < 8; k++) { a[k] = b[k]; out[(i - 1) * 8 + k] = b[8 + k]; }
        }
    }
    tmla_aes_wipe(&aes);
    tmla_wipe(b, sizeof b);
    uint8_t bad = 0;
    for (int k = 0; k < 8; k++) bad |= (uint8_t)(a[k] ^ 0xA6);
    if (bad) { tmla_wipe(out, n * 8); return -1; }
    return 0;
}
