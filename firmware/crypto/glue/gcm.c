/* AES-GCM (NIST SP 800-38D) composed from the vetted AES block and GHASH: 96-bit nonce only,
 * streaming, no allocation. Our code (pycryptodome composes GCM in Python, not in C); tested
 * against NIST CAVP gcmDecrypt256 / gcmEncryptExtIV256 vectors. */
#include "tmla_crypto.h"

static void inc32(uint8_t ctr[16])
{
    for (int i = 15; i >= 12; i--)
        if (++ctr[i] != 0) break;
}

int tmla_gcm_init(tmla_gcm_ctx *g, const uint8_t *key, size_t key_len, const uint8_t nonce[12])
{
    uint8_t h[16] = {0};
    if (tmla_aes_init(&g->aes, key, key_len) != 0) return -1;
    tmla_aes_encrypt(&g->aes, h, h);
    tmla_ghash_init(&g->gk, h);
    tmla_wipe(h, sizeof h);
    for (int i = 0; i < 12; i++) g->j0[i] = nonce[i];
    g->j0[12] = g->j0[13] = g->j0[14] = 0;
    g->j0[15] = 1;
    for (int i = 0; i < 16; i++) { g->ctr[i] = g->j0[i]; g->y[i] = 0; }
    g->aad_len = g->ct_len = 0;
    g->ks_used = 16;
    g->buf_len = 0;
    return 0;
}

static void ghash_pad(tmla_gcm_ctx *g, const uint8_t *data, size_t len)
{
    size_t whole = len & ~(size_t)15;
    tmla_ghash_blocks(&g->gk, g->y, data, whole);
    if (len > whole) {
        uint8_t last[16] = {0};
        for (size_t i = 0; i < len - whole; i++) last[i] = data[whole + i];
        tmla_ghash_blocks(&g->gk, g->y, last, 16);
    }
}

void tmla_gcm_aad(tmla_gcm_ctx *g, const uint8_t *aad, size_t len)
{
    ghash_pad(g, aad, len);
    g->aad_len += len;
}

/* absorb ciphertext bytes into GHASH, 16 at a time */
static void absorb(tmla_gcm_ctx *g, const uint8_t *c, size_t len)
{
    while (len) {
        if (g->buf_len == 0 && len >= 16) {
            size_t whole = len & ~(size_t)15;
            tmla_ghash_blocks(&g->gk, g->y, c, whole);
            c += whole;
            len -= whole;
            continue;
        }
        g->buf[g->buf_len++] = *c++;
        len--;
        if (g->buf_len == 16) {
            tmla_ghash_blocks(&g->gk, g->y, g->buf, 16);
            g->buf_len = 0;
        }
    }
}

static void xcrypt(tmla_gcm_ctx *g, const uint8_t *in, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (g->ks_used == 16) {
            inc32(g->ctr);
            tmla_aes_encrypt(&g->aes, g->ctr, g->ks);
            g->ks_used = 0;
        }
        out[i] = in[i] ^ g->ks[g->ks_used++];
    }
    g->ct_len += len;
}

void tmla_gcm_decrypt(tmla_gcm_ctx *g, const uint8_t *in, uint8_t *out, size_t len)
{
    absorb(g, in, len); /* before xcrypt: in and out may alias */
    xcrypt(g, in, out, len);
}

void tmla_gcm_encrypt(tmla_gcm_ctx *g, const uint8_t *in, uint8_t *out, size_t len)
{
    xcrypt(g, in, out, len);
    absorb(g, out, len);
}

static void store_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}

void tmla_gcm_tag(tmla_gcm_ctx *g, uint8_t tag[16])
{
    uint8_t lens[16], ek0[16];
    if (g->buf_len) {
        for (uint32_t i = g->buf_len; i < 16; i++) g->buf[i] = 0;
        tmla_ghash_blocks(&g->gk, g->y, g->buf, 16);
        g->buf_len = 0;
    }
    store_be64(lens, g->aad_len * 8);
    store_be64(lens + 8, g->ct_len * 8);
    tmla_ghash_blocks(&g->gk, g->y, lens, 16);
    tmla_aes_encrypt(&g->aes, g->j0, ek0);
    for (int i = 0; i < 16; i++) tag[i] = ek0[i] ^ g->y[i];
}

int tmla_gcm_finish(tmla_gcm_ctx *g, const uint8_t tag[16])
{
    uint8_t mine[16];
    tmla_gcm_tag(g, mine);
    int bad = tmla_ct_compare(mine, tag, 16);
    tmla_wipe(mine, sizeof mine);
    tmla_wipe(&g->aes, sizeof g->aes);
    return bad ? -1 : 0;
}

int tmla_ct_compare(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++) d |= (uint8_t)(a[i] ^ b[i]);
    return d != 0;
}

void tmla_wipe(void *p, size_t n)
{
    volatile uint8_t *v = (volatile uint8_t *)p;
    while (n--) *v++ = 0;
}

void tmla_aes_wipe(tmla_aes_ctx *c) { tmla_wipe(c, sizeof *c); }
