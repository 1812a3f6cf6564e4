/* Ed25519 verification (RFC 8032): monocypher's crypto_eddsa_check_equation (pymonocypher sdist)
 * with the challenge h = SHA-512(R || A || M) mod L computed here by the streamed SHA-512, so the
 * message (a COSE Sig_structure) never has to sit in RAM as one piece. */
#include "monocypher.h"
#include "tmla_crypto.h"

void tmla_ed25519_verify_init(tmla_ed25519_ctx *c, const uint8_t sig[64], const uint8_t pk[32])
{
    for (int i = 0; i < 64; i++) c->sig[i] = sig[i];
    for (int i = 0; i < 32; i++) c->pk[i] = pk[i];
    tmla_sha512_init(&c->sha);
    tmla_sha512_update(&c->sha, sig, 32);
    tmla_sha512_update(&c->sha, pk, 32);
}
void tmla_ed25519_verify_update(tmla_ed25519_ctx *c, const void *msg, size_t len)
{
    tmla_sha512_update(&c->sha, msg, len);
}
int tmla_ed25519_verify_final(tmla_ed25519_ctx *c)
{
    uint8_t hash[64], h[32];
    tmla_sha512_final(&c->sha, hash);
    crypto_eddsa_reduce(h, hash);
    /* rejects S >= L and public keys that do not decode; compares the recomputed R bytewise */
    return crypto_eddsa_check_equation(c->sig, c->pk, h) == 0 ? 0 : -1;
}
int tmla_ed25519_verify(const uint8_t sig[64], const uint8_t pk[32], const void *msg, size_t len)
{
    tmla_ed25519_ctx c;
    tmla_ed25519_verify_init(&c, sig, pk);
    tmla_ed25519_verify_update(&c, msg, len);
    return tmla_ed25519_verify_final(&c);
}
