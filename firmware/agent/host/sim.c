/* Host-native simulation of one device, driven from Python with ctypes
 * (tinymlops.device.agent.driver):
 *   - flash in a caller-owned buffer, page erase, erase-before-write enforced (a write may only
 *     land on erased 0xFF bytes), the provisioning page write-protected against the agent;
 *   - a power cut at the Nth write or erase: a torn operation (half the bytes written, or half
 *     the page erased), then longjmp back to the entry point, as a reset would. Flash persists;
 *     the agent's RAM is abandoned;
 *   - a stand-in model runtime ("TMDL" images: y = clamp((x . W) >> 7)), for check_image and the
 *     golden-vector self-test, until firmware/runtime is linked in.
 */
#include <setjmp.h>
#include <string.h>

#include "tmla/agent.h"

#define SIM_CUT (-2)

typedef struct {
    int32_t event, reason, running_slot, pad;
    uint64_t running_sequence;
} tmla_sim_boot_out;

typedef struct {
    uint8_t *flash;
    uint32_t flash_len;
    uint8_t *work;
    tmla_layout lay;
    tmla_hal hal;
    tmla_agent agent;
    uint64_t now;
    int64_t ops, cut_at;       /* cut when ops reaches cut_at (1-based); 0: never */
    int64_t writes, erases, bytes_written;
    int64_t violations;        /* writes onto unerased bytes, unaligned erases, out of range */
    int64_t prov_touches;      /* attempts to write or erase the provisioning page */
    uint32_t arena_budget;
    int32_t force_selftest_fail, cut_happened;
    jmp_buf jb;
} tmla_sim;

static int in_prov(tmla_sim *s, uint32_t addr, uint32_t len)
{
    uint32_t ps = s->lay.page_size;
    uint32_t lo = s->lay.prov_addr, hi = lo + (TMLA_PROV_BYTES + ps - 1) / ps * ps;
    return addr < hi && addr + len > lo;
}

static int sim_read(void *u, uint32_t addr, void *buf, uint32_t len)
{
    tmla_sim *s = u;
    if (addr > s->flash_len || len > s->flash_len - addr) { s->violations++; return -1; }
    memcpy(buf, s->flash + addr, len);
    return 0;
}

static void cut(tmla_sim *s) { s->cut_happened = 1; longjmp(s->jb, 1); }

static int sim_write(void *u, uint32_t addr, const void *buf, uint32_t len)
{
    tmla_sim *s = u;
    const uint8_t *b = buf;
    if (addr > s->flash_len || len > s->flash_len - addr) { s->violations++; return -1; }
    if (in_prov(s, addr, len)) { s->prov_touches++; return -1; }
    for (uint32_t i = 0; i < len; i++)
        if (s->flash[addr + i] != 0xff) { s->violations++; return -1; }
    s->ops++; s->writes++;
    if (s->cut_at && s->ops == s->cut_at) { /* torn: the first half lands */
        memcpy(s->flash + addr, b, len / 2);
        cut(s);
    }
    memcpy(s->flash + addr, b, len);
    s->bytes_written += len;
    return 0;
}

static int sim_erase(void *u, uint32_t addr)
{
    tmla_sim *s = u;
    uint32_t ps = s->lay.page_size;
    if (addr % ps || addr >= s->flash_len) { s->violations++; return -1; }
    if (in_prov(s, addr, ps)) { s->prov_touches++; return -1; }
    s->ops++; s->erases++;
    if (s->cut_at && s->ops == s->cut_at) { /* torn: half the page erased */
        memset(s->flash + addr, 0xff, ps / 2);
        cut(s);
    }
    memset(s->flash + addr, 0xff, ps);
    return 0;
}

static uint64_t sim_now(void *u) { return ((tmla_sim *)u)->now; }

/* --- the stand-in runtime ----------------------------------------------------------------------- */
static uint32_t rd32(const uint8_t *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }

static int sim_check_image(void *u, const tmla_image *img)
{
    tmla_sim *s = u;
    uint8_t h[16];
    if (img->size < 16) return TMLA_NOT_A_MODEL;
    sim_read(s, img->addr, h, 16);
    if (memcmp(h, "TMDL", 4) != 0) return TMLA_NOT_A_MODEL;
    uint64_t arena = rd32(h + 4), n_in = rd32(h + 8), n_out = rd32(h + 12);
    if (n_in == 0 || n_out == 0 || 16 + n_in * n_out != img->size) return TMLA_NOT_A_MODEL;
    if (arena > s->arena_budget || img->arena_bytes > s->arena_budget) return TMLA_IMAGE_UNFIT;
    return TMLA_OK;
}

static int sim_self_test(void *u, const tmla_image *img)
{
    tmla_sim *s = u;
    if (s->force_selftest_fail) return TMLA_SELFTEST_FAILED;
    if (!img->has_selftest) return TMLA_OK; /* it loaded (check_image passed): nothing to compare */
    const uint8_t *h = s->flash + img->addr;
    uint32_t n_in = rd32(h + 8), n_out = rd32(h + 12);
    const int8_t *w = (const int8_t *)(h + 16);
    uint64_t pin = 1, pout = 1;
    for (uint32_t i = 0; i < img->in_rank; i++) pin *= img->input_shape[i];
    for (uint32_t i = 0; i < img->out_rank; i++) pout *= img->output_shape[i];
    if (pin != n_in || pout != n_out) return TMLA_SELFTEST_FAILED;
    for (uint64_t v = 0; v < img->count; v++) {
        const int8_t *x = (const int8_t *)img->inputs + v * n_in;
        const int8_t *want = (const int8_t *)img->expected + v * n_out;
        for (uint32_t j = 0; j < n_out; j++) {
            int32_t acc = 0;
            for (uint32_t i = 0; i < n_in; i++) acc += (int32_t)x[i] * (int32_t)w[i * n_out + j];
            acc >>= 7;
            if (acc > 127) acc = 127;
            if (acc < -128) acc = -128;
            int32_t d = acc - want[j];
            if (d < 0) d = -d;
            if ((uint32_t)d > img->tolerance) return TMLA_SELFTEST_FAILED;
        }
    }
    return TMLA_OK;
}

/* --- exported entry points ---------------------------------------------------------------------- */
size_t tmla_sim_sizeof(void) { return sizeof(tmla_sim); }
size_t tmla_agent_sizeof(void) { return sizeof(tmla_agent); }

void tmla_sim_setup(tmla_sim *s, uint8_t *flash, uint32_t flash_len, const tmla_layout *lay, uint8_t *work)
{
    memset(s, 0, sizeof *s);
    s->flash = flash; s->flash_len = flash_len; s->lay = *lay; s->work = work;
    s->hal.user = s;
    s->hal.flash_read = sim_read; s->hal.flash_write = sim_write; s->hal.flash_erase = sim_erase;
    s->hal.now = sim_now; s->hal.check_image = sim_check_image; s->hal.self_test = sim_self_test;
    s->arena_budget = 0xffffffffu;
}

/* The class's own runtime instead of the stand-in (the host build for a part without an emulator:
 * its TFLM firmware's checks, run by the host). NULL restores the stand-in. */
typedef int (*tmla_sim_runtime_fn)(void *user, const tmla_image *img);
void tmla_sim_runtime(tmla_sim *s, tmla_sim_runtime_fn check, tmla_sim_runtime_fn self_test)
{
    s->hal.check_image = check ? check : sim_check_image;
    s->hal.self_test = self_test ? self_test : sim_self_test;
}

void tmla_sim_configure(tmla_sim *s, uint64_t now, int64_t cut_at, uint32_t arena_budget, int32_t force_fail)
{
    s->now = now; s->cut_at = cut_at; s->ops = 0; s->cut_happened = 0;
    s->arena_budget = arena_budget; s->force_selftest_fail = force_fail;
}

void tmla_sim_counters(const tmla_sim *s, int64_t out[6])
{
    out[0] = s->ops; out[1] = s->writes; out[2] = s->erases; out[3] = s->violations; out[4] = s->prov_touches;
    out[5] = s->bytes_written;
}

#define GUARD if (setjmp(s->jb)) return SIM_CUT

int tmla_sim_init(tmla_sim *s) { GUARD; return tmla_init(&s->agent, &s->hal, &s->lay, s->work); }

int tmla_sim_begin(tmla_sim *s)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    if (r != TMLA_OK) return r;
    return tmla_install_begin(&s->agent);
}
int tmla_sim_feed(tmla_sim *s, const uint8_t *b, size_t n) { GUARD; return tmla_install_feed(&s->agent, b, n); }
int tmla_sim_end(tmla_sim *s) { GUARD; return tmla_install_end(&s->agent); }

/* the whole bundle in chunks of `chunk` bytes: what a transport would do */
int tmla_sim_install(tmla_sim *s, const uint8_t *b, size_t n, size_t chunk)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    if (r != TMLA_OK) return r;
    r = tmla_install_begin(&s->agent);
    for (size_t off = 0; off < n && r == TMLA_MORE; off += chunk)
        r = tmla_install_feed(&s->agent, b + off, n - off < chunk ? n - off : chunk);
    if (r != TMLA_MORE) return r;
    return tmla_install_end(&s->agent);
}

int tmla_sim_boot(tmla_sim *s, tmla_sim_boot_out *out)
{
    tmla_boot_info info;
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    if (r != TMLA_OK) { out->event = 0; out->reason = r; out->running_slot = -1; return r; }
    r = tmla_boot(&s->agent, &info);
    out->event = info.event; out->reason = info.reason; out->running_slot = info.running_slot;
    out->running_sequence = info.running_sequence;
    return r;
}

int tmla_sim_revocations(tmla_sim *s, const uint8_t *b, size_t n)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    return r != TMLA_OK ? r : tmla_install_revocations(&s->agent, b, n);
}

int tmla_sim_recovery(tmla_sim *s, const uint8_t *b, size_t n)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    return r != TMLA_OK ? r : tmla_apply_recovery(&s->agent, b, n);
}

/* attestation and metering */
int tmla_sim_evidence(tmla_sim *s, const uint8_t *nonce, uint32_t nn, uint8_t *out, uint32_t cap, uint32_t *len)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    return r != TMLA_OK ? r : tmla_evidence(&s->agent, nonce, nn, out, cap, len);
}
int tmla_sim_sign(tmla_sim *s, const uint8_t *payload, uint32_t n, uint8_t *out, uint32_t cap, uint32_t *len)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    return r != TMLA_OK ? r : tmla_sign_telemetry(&s->agent, payload, n, out, cap, len);
}
int tmla_sim_consume(tmla_sim *s)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    return r != TMLA_OK ? r : tmla_meter_consume(&s->agent);
}
int tmla_sim_quota(tmla_sim *s, const uint8_t *b, size_t n)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    return r != TMLA_OK ? r : tmla_install_quota(&s->agent, b, n);
}
int tmla_sim_meter(tmla_sim *s, tmla_meter *out)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    *out = s->agent.meter;
    return r;
}
int tmla_x_sign(const uint8_t seed[32], const uint8_t pk[32], const uint8_t *m, size_t n, uint8_t sig[64])
{
    return tmla_sign(seed, pk, m, n, sig);
}

int tmla_sim_state(tmla_sim *s, tmla_state *out)
{
    GUARD;
    int r = tmla_init(&s->agent, &s->hal, &s->lay, s->work);
    *out = s->agent.st;
    return r;
}

/* --- primitives, for the vector tests and the benchmark -------------------------------------- */
int tmla_x_sha256(const uint8_t *d, size_t n, uint8_t out[32]) { tmla_sha256(d, n, out); return 0; }
int tmla_x_sha512(const uint8_t *d, size_t n, uint8_t out[64])
{
    tmla_sha512_ctx c;
    tmla_sha512_init(&c); tmla_sha512_update(&c, d, n); tmla_sha512_final(&c, out);
    return 0;
}
int tmla_x_ed25519_verify(const uint8_t sig[64], const uint8_t pk[32], const uint8_t *m, size_t n)
{
    return tmla_ed25519_verify(sig, pk, m, n);
}
/* mode 0: decrypt (checks tag, returns 0/-1), 1: encrypt (writes tag) */
int tmla_x_gcm(int mode, const uint8_t *key, size_t klen, const uint8_t iv[12], const uint8_t *aad, size_t alen,
               const uint8_t *in, uint8_t *out, size_t n, uint8_t tag[16])
{
    tmla_gcm_ctx g;
    if (tmla_gcm_init(&g, key, klen, iv)) return -2;
    tmla_gcm_aad(&g, aad, alen);
    if (mode == 1) { tmla_gcm_encrypt(&g, in, out, n); tmla_gcm_tag(&g, tag); return 0; }
    tmla_gcm_decrypt(&g, in, out, n);
    return tmla_gcm_finish(&g, tag);
}
int tmla_x_aes_encrypt(const uint8_t *key, size_t klen, const uint8_t in[16], uint8_t out[16])
{
    tmla_aes_ctx c;
    if (tmla_aes_init(&c, key, klen)) return -1;
    tmla_aes_encrypt(&c, in, out);
    return 0;
}
int tmla_x_unwrap(const uint8_t *kek, size_t klen, const uint8_t *in, size_t n, uint8_t *out)
{
    return tmla_aes_key_unwrap(kek, klen, in, n, out);
}
int tmla_x_cbor_check(const uint8_t *b, uint32_t n);
