/* Attestation evidence, the device key's signatures, the monotonic inference counter and quota
 * tokens.
 *
 * Device key: an Ed25519 seed and its public key in the provisioning page (written by the factory;
 * the agent never writes that page, so nothing here can leak or change it). Signing is RFC 8032
 * Ed25519 from monocypher's scalar building blocks (the same monocypher.c the verifier uses) with
 * the agent's SHA-512 (pycryptodome): no new crypto source.
 *
 * Meter log: 64-byte records {magic "TMLC", record number, count, limit, expires, serial, CRC-32}
 * appended over two pages; the highest valid record number wins; a full page continues on the
 * other after erasing it (it holds only older records). A torn record fails its CRC and the one
 * before it stands, so a power cut never lowers the count. The count is raised BEFORE an inference
 * runs: a cut between the two loses an inference, never gives one away.
 *
 * Quota token (tinymlops.bundle.quota): COSE_Sign1, content type application/tinymlops-quota+cbor,
 * signed by a metering key whose root-signed key statement (purpose "quota-signing") rides in the
 * unprotected header, payload {"device_id": bstr16, "expires": uint, "quota": uint, "serial": uint}.
 * The chain is the manifest's (tmla_key_signed): root → statement for quota signing, not revoked,
 * inside its validity window → token. A bundle-signing key's token, or a token the root signed
 * itself (no statement), is untrusted_key: the root stays offline and each key does one job.
 * Installing it sets limit = count + quota (what was left of an older token is replaced) and
 * requires serial > the stored serial, so a token works once.
 */
#include "verify.h"

#include "monocypher.h"

#define METER_MAGIC 0x434c4d54u /* "TMLC" */
#define MREC 64u
#define META_MAGIC 0x4d4c4d54u /* "TMLM" */
#define CT_EVIDENCE "application/eat+cwt"
#define CT_TELEMETRY "application/tinymlops-telemetry+json"

int tmla_sign_telemetry(tmla_agent *a, const uint8_t *payload, uint32_t len, uint8_t *out, uint32_t cap,
                        uint32_t *out_len)
{
    return tmla_sign_cose(a, CT_TELEMETRY, payload, len, out, cap, out_len);
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static int all_ff(const uint8_t *p, size_t n) { while (n--) if (*p++ != 0xff) return 0; return 1; }

/* --- Ed25519 signing (RFC 8032 §5.1.6) ------------------------------------------------------- */
/* the message as consecutive parts (hashed twice, never assembled) */
void tmla_sign_parts(const uint8_t seed[32], const uint8_t pk[32], const uint8_t *const *part, const uint32_t *size,
                     int n, uint8_t sig[64])
{
    uint8_t h[64], s[32], r[32], k[32], wide[64];
    tmla_sha512_ctx c;
    tmla_sha512_init(&c);
    tmla_sha512_update(&c, seed, 32);
    tmla_sha512_final(&c, h);
    crypto_eddsa_trim_scalar(s, h);
    tmla_sha512_init(&c);
    tmla_sha512_update(&c, h + 32, 32);
    for (int i = 0; i < n; i++) tmla_sha512_update(&c, part[i], size[i]);
    tmla_sha512_final(&c, wide);
    crypto_eddsa_reduce(r, wide);
    crypto_eddsa_scalarbase(sig, r);
    tmla_sha512_init(&c);
    tmla_sha512_update(&c, sig, 32);
    tmla_sha512_update(&c, pk, 32);
    for (int i = 0; i < n; i++) tmla_sha512_update(&c, part[i], size[i]);
    tmla_sha512_final(&c, wide);
    crypto_eddsa_reduce(k, wide);
    crypto_eddsa_mul_add(sig + 32, k, s, r);
    tmla_wipe(h, sizeof h);
    tmla_wipe(s, sizeof s);
    tmla_wipe(r, sizeof r);
    tmla_wipe(wide, sizeof wide);
}

int tmla_sign(const uint8_t seed[32], const uint8_t pk[32], const uint8_t *msg, size_t len, uint8_t sig[64])
{
    uint8_t h[64], s[32], r[32], k[32], wide[64];
    tmla_sha512_ctx c;
    tmla_sha512_init(&c);
    tmla_sha512_update(&c, seed, 32);
    tmla_sha512_final(&c, h);
    crypto_eddsa_trim_scalar(s, h);
    tmla_sha512_init(&c);                      /* r = H(prefix || M) mod L */
    tmla_sha512_update(&c, h + 32, 32);
    tmla_sha512_update(&c, msg, len);
    tmla_sha512_final(&c, wide);
    crypto_eddsa_reduce(r, wide);
    crypto_eddsa_scalarbase(sig, r);           /* R = rB */
    tmla_sha512_init(&c);                      /* k = H(R || A || M) mod L */
    tmla_sha512_update(&c, sig, 32);
    tmla_sha512_update(&c, pk, 32);
    tmla_sha512_update(&c, msg, len);
    tmla_sha512_final(&c, wide);
    crypto_eddsa_reduce(k, wide);
    crypto_eddsa_mul_add(sig + 32, k, s, r);   /* S = k*s + r mod L */
    tmla_wipe(h, sizeof h);
    tmla_wipe(s, sizeof s);
    tmla_wipe(r, sizeof r);
    tmla_wipe(wide, sizeof wide);
    return 0;
}

/* --- meter log ------------------------------------------------------------------------------- */
static void mrec_encode(const tmla_meter *m, uint8_t r[MREC])
{
    for (unsigned i = 0; i < MREC; i++) r[i] = 0;
    put32(r, METER_MAGIC);
    put32(r + 4, m->seq);
    put64(r + 8, m->count);
    put64(r + 16, m->limit);
    put64(r + 24, m->expires);
    put64(r + 32, m->serial);
    put32(r + 60, tmla_crc32(0, r, 60));
}

static int mrec_decode(const uint8_t r[MREC], tmla_meter *m)
{
    if (get32(r) != METER_MAGIC || get32(r + 60) != tmla_crc32(0, r, 60)) return -1;
    m->seq = get32(r + 4);
    m->count = get64(r + 8);
    m->limit = get64(r + 16);
    m->expires = get64(r + 24);
    m->serial = get64(r + 32);
    return 0;
}

int tmla_meter_load(tmla_agent *a)
{
    uint8_t r[MREC];
    uint32_t per = a->lay.page_size / MREC;
    a->meter_valid = 0;
    for (uint32_t pg = 0; pg < 2; pg++)
        for (uint32_t i = 0; i < per; i++) {
            tmla_meter m;
            if (a->hal->flash_read(a->hal->user, a->lay.meter_addr + pg * a->lay.page_size + i * MREC, r, MREC))
                return -1;
            if (mrec_decode(r, &m)) continue;
            if (!a->meter_valid || m.seq > a->meter.seq) {
                a->meter = m; a->meter_valid = 1; a->meter_page = pg; a->meter_index = i;
            }
        }
    if (!a->meter_valid) {
        tmla_meter z = {0};
        a->meter = z;
        a->meter_page = 1; a->meter_index = per - 1; /* first append erases page 0 */
    }
    return 0;
}

static int meter_append(tmla_agent *a, tmla_meter *m)
{
    uint8_t r[MREC], cur[MREC];
    uint32_t per = a->lay.page_size / MREC, pg = a->meter_page, i = a->meter_index + 1;
    m->seq = a->meter_valid ? a->meter.seq + 1 : 1;
    mrec_encode(m, r);
    for (;;) {
        if (i >= per) {
            pg ^= 1; i = 0;
            if (a->hal->flash_erase(a->hal->user, a->lay.meter_addr + pg * a->lay.page_size)) return TMLA_FLASH_ERROR;
        }
        uint32_t addr = a->lay.meter_addr + pg * a->lay.page_size + i * MREC;
        if (a->hal->flash_read(a->hal->user, addr, cur, MREC)) return TMLA_FLASH_ERROR;
        if (all_ff(cur, MREC)) {
            if (a->hal->flash_write(a->hal->user, addr, r, MREC)) return TMLA_FLASH_ERROR;
            a->meter = *m; a->meter_valid = 1; a->meter_page = pg; a->meter_index = i;
            return TMLA_OK;
        }
        i++; /* torn or foreign bytes: skip */
    }
}

int tmla_meter_consume(tmla_agent *a)
{
    if (!a->provisioned) return TMLA_NOT_PROVISIONED;
    if (!a->lay.meter_addr) return TMLA_BAD_CALL;
    if (a->prov.metered) {
        if (a->meter.serial == 0 || a->meter.count >= a->meter.limit) return TMLA_QUOTA_EXHAUSTED;
        if (a->hal->now(a->hal->user) >= a->meter.expires) return TMLA_QUOTA_EXPIRED;
    }
    tmla_meter m = a->meter;
    m.count++;
    return meter_append(a, &m);
}

int tmla_install_quota(tmla_agent *a, const uint8_t *b, size_t n)
{
    static const char *const K[] = {"device_id", "expires", "quota", "serial"};
    cb_item pl, map, v;
    if (!a->provisioned) return TMLA_NOT_PROVISIONED;
    if (!a->lay.meter_addr) return TMLA_BAD_CALL;
    tmla_sign1 s;
    tmla_statement st;
    if (n > MAX_SIGNED_OBJECT) return TMLA_MALFORMED;
    int r = tmla_key_signed(a, b, (uint32_t)n, CT_QUOTA, PURPOSE_QUOTA, 1, &s, &st);
    if (r != TMLA_OK) return r;
    pl = s.payload;
    if (cb_check(b + pl.data, (uint32_t)pl.val)) return TMLA_MALFORMED;
    const uint8_t *p = b + pl.data;
    cb_get(p, 0, &map);
    if (map.type != CB_MAP || map.val != 4) return TMLA_MALFORMED;
    uint64_t val[3];
    for (int i = 0; i < 4; i++) {
        if (!cb_map_find(p, &map, K[i], &v)) return TMLA_MALFORMED;
        if (i == 0) {
            if (v.type != CB_BYTES || v.val != 16) return TMLA_MALFORMED;
            for (int j = 0; j < 16; j++) if (p[v.data + j] != a->prov.device_id[j]) return TMLA_WRONG_DEVICE;
        } else {
            if (v.type != CB_UINT || v.val > UINT63) return TMLA_MALFORMED;
            val[i - 1] = v.val;
        }
    }
    uint64_t expires = val[0], quota = val[1], serial = val[2];
    if (serial <= a->meter.serial) return TMLA_STALE_QUOTA;
    if (a->hal->now(a->hal->user) >= expires) return TMLA_QUOTA_EXPIRED;
    tmla_meter m = a->meter;
    m.limit = quota > UINT63 - m.count ? UINT63 : m.count + quota;
    m.expires = expires; m.serial = serial;
    return meter_append(a, &m);
}

/* --- evidence -------------------------------------------------------------------------------- */
typedef struct { uint8_t *p; uint32_t n, cap; int over; } wr;

static void w_byte(wr *w, uint8_t b) { if (w->n < w->cap) w->p[w->n++] = b; else w->over = 1; }
static void w_bytes(wr *w, const uint8_t *b, uint32_t n) { while (n--) w_byte(w, *b++); }
static void w_head(wr *w, uint8_t major, uint64_t v)
{
    uint8_t m = (uint8_t)(major << 5);
    if (v < 24) { w_byte(w, m | (uint8_t)v); return; }
    int len = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffu ? 4 : 8;
    w_byte(w, m | (uint8_t)(len == 1 ? 24 : len == 2 ? 25 : len == 4 ? 26 : 27));
    for (int i = len - 1; i >= 0; i--) w_byte(w, (uint8_t)(v >> (8 * i)));
}
static void w_uint(wr *w, uint64_t v) { w_head(w, 0, v); }
static void w_nkey(wr *w, int k) { w_head(w, 1, (uint64_t)(-1 - k)); } /* negative claim key */
static void w_bstr(wr *w, const uint8_t *b, uint32_t n) { w_head(w, 2, n); w_bytes(w, b, n); }
static void w_tstr(wr *w, const char *s) { uint32_t n = 0; while (s[n]) n++; w_head(w, 3, n); w_bytes(w, (const uint8_t *)s, n); }

/* state, sequence and payload digest of a slot (decoded, not re-verified: boot verifies what runs) */
static void slot_claim(tmla_agent *a, int slot, wr *w)
{
    uint8_t h[8];
    int code = a->st.active == slot ? 1 : a->st.pending == slot ? 2 : 3;
    uint32_t base = a->lay.slot_addr[slot];
    tmla_sign1 s;
    int ok = 0;
    if (!a->hal->flash_read(a->hal->user, base, h, 8) && get32(h) == META_MAGIC &&
        get32(h + 4) <= a->lay.slot_meta_bytes - 8) {
        uint32_t len = get32(h + 4);
        if (!a->hal->flash_read(a->hal->user, base + 8, a->work, len) &&
            tmla_cose_decode(a->work, len, CT_MANIFEST, 1, &s) == TMLA_OK &&
            tmla_manifest_decode(a->work, &s.payload, &a->m) == TMLA_OK)
            ok = 1;
    }
    w_head(w, 4, 3);
    if (!ok) { w_uint(w, 0); w_uint(w, 0); w_byte(w, 0xf6); return; }
    w_uint(w, (uint64_t)code);
    w_uint(w, a->m.sequence);
    w_bstr(w, a->m.payload_sha256, 32);
}

static void device_kid(const tmla_agent *a, uint8_t kid[8])
{
    uint8_t d[32];
    tmla_sha256(a->prov.device_pk, 32, d);
    for (int i = 0; i < 8; i++) kid[i] = d[i];
}

int tmla_evidence(tmla_agent *a, const uint8_t *nonce, uint32_t nonce_len, uint8_t *out, uint32_t cap,
                  uint32_t *out_len)
{
    uint8_t pl[384], ueid[17];
    if (!a->provisioned) return TMLA_NOT_PROVISIONED;
    if (!a->prov.has_device_key) return TMLA_NO_DEVICE_KEY;
    if (nonce_len < 8 || nonce_len > 64) return TMLA_BAD_CALL;
    /* claims map, keys in canonical order: 10 (nonce), -1 … -10, 256 (ueid), 267 (bootcount) */
    wr w = {pl, 0, sizeof pl, 0};
    w_head(&w, 5, 13);
    w_uint(&w, 10); w_bstr(&w, nonce, nonce_len);                         /* eat_nonce */
    w_nkey(&w, -1);                                                       /* running slot */
    if (a->st.active == TMLA_NO_SLOT) w_byte(&w, 0xf6); else w_uint(&w, a->st.active);
    w_nkey(&w, -2); w_head(&w, 4, 2); slot_claim(a, 0, &w); slot_claim(a, 1, &w); /* slots */
    w_nkey(&w, -3); w_uint(&w, a->st.floor);                              /* anti-rollback sequence */
    w_nkey(&w, -4); w_uint(&w, a->st.revo_version);                       /* revocation list version */
    w_nkey(&w, -5); w_uint(&w, a->meter.count);                           /* inference counter */
    w_nkey(&w, -6); w_bstr(&w, a->prov.class_id, 16);                     /* class */
    w_nkey(&w, -7); w_uint(&w, a->st.active_sequence);                    /* running sequence */
    w_nkey(&w, -8); w_uint(&w, a->st.seq);                                /* state record number */
    w_nkey(&w, -9); w_uint(&w, a->meter.serial);                          /* quota serial */
    w_nkey(&w, -10); w_uint(&w, a->meter.limit);                          /* quota limit */
    ueid[0] = 0x01;                                                       /* RAND ueid */
    for (int i = 0; i < 16; i++) ueid[i + 1] = a->prov.device_id[i];
    w_uint(&w, 256); w_bstr(&w, ueid, 17);
    w_uint(&w, 267); w_uint(&w, a->st.boot_count);                        /* EAT bootcount */
    if (w.over) return TMLA_BAD_CALL;
    return tmla_sign_cose(a, CT_EVIDENCE, pl, w.n, out, cap, out_len);
}

/* COSE_Sign1 by the device key: 18([{1: -8, 3: content type, 4: kid}, {}, payload, signature]) */
int tmla_sign_cose(tmla_agent *a, const char *content_type, const uint8_t *payload, uint32_t len, uint8_t *out,
                   uint32_t cap, uint32_t *out_len)
{
    uint8_t prot[96], kid[8], sig[64];
    if (!a->provisioned) return TMLA_NOT_PROVISIONED;
    if (!a->prov.has_device_key) return TMLA_NO_DEVICE_KEY;
    device_kid(a, kid);
    wr h = {prot, 0, sizeof prot, 0};
    w_head(&h, 5, 3);
    w_uint(&h, 1); w_byte(&h, 0x27);
    w_uint(&h, 3); w_tstr(&h, content_type);
    w_uint(&h, 4); w_bstr(&h, kid, 8);
    if (h.over) return TMLA_BAD_CALL;
    /* Sig_structure ["Signature1", protected, h'', payload], hashed as it streams: never copied */
    uint8_t head[32];
    wr s = {head, 0, sizeof head, 0};
    w_head(&s, 4, 4); w_tstr(&s, "Signature1"); w_head(&s, 2, h.n);
    uint8_t mid[16];
    wr m = {mid, 0, sizeof mid, 0};
    w_bstr(&m, (const uint8_t *)"", 0);
    w_head(&m, 2, len);
    const uint8_t *parts[4] = {head, prot, mid, payload};
    uint32_t sizes[4] = {s.n, h.n, m.n, len};
    tmla_sign_parts(a->prov.device_sk, a->prov.device_pk, parts, sizes, 4, sig);
    wr o = {out, 0, cap, 0};
    w_head(&o, 6, 18); w_head(&o, 4, 4);
    w_bstr(&o, prot, h.n); w_head(&o, 5, 0); w_bstr(&o, payload, len); w_bstr(&o, sig, 64);
    if (o.over) return TMLA_BAD_CALL;
    *out_len = o.n;
    return TMLA_OK;
}
