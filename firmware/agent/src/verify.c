/* COSE_Sign1 (RFC 9052) with EdDSA, the root key chain, and the manifest schema: see verify.h.
 * Each check returns the reason tinymlops.bundle.verify_bundle gives for the same defect. */
#include "verify.h"

#define R(x) return (x)

static int bytes_eq(const uint8_t *a, const uint8_t *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) if (a[i] != b[i]) return 0;
    return 1;
}

void tmla_hex8(const uint8_t in[8], char out[16])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) { out[2 * i] = hx[in[i] >> 4]; out[2 * i + 1] = hx[in[i] & 15]; }
}

/* exactly 16 lowercase hex digits (the pattern ^[0-9a-f]{16}$) */
int tmla_unhex16(const uint8_t *s, uint32_t len, uint8_t out[8])
{
    if (len != 16) return -1;
    for (int i = 0; i < 16; i++) {
        uint8_t c = s[i], v;
        if (c >= '0' && c <= '9') v = (uint8_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v = (uint8_t)(c - 'a' + 10);
        else return -1;
        if (i % 2 == 0) out[i / 2] = (uint8_t)(v << 4); else out[i / 2] |= v;
    }
    return 0;
}

int tmla_cose_decode(const uint8_t *b, uint32_t n, const char *ct, int allow_statement, tmla_sign1 *s)
{
    cb_item top, arr, unp, hdr;
    if (cb_check(b, n)) R(TMLA_MALFORMED);
    cb_get(b, 0, &top);
    if (top.type != CB_TAG || top.val != 18) R(TMLA_MALFORMED);
    cb_get(b, top.data, &arr);
    if (arr.type != CB_ARRAY || arr.val != 4) R(TMLA_MALFORMED);
    cb_get(b, arr.data, &s->protected_);
    cb_get(b, s->protected_.end, &unp);
    cb_get(b, unp.end, &s->payload);
    cb_get(b, s->payload.end, &s->signature);
    if (s->protected_.type != CB_BYTES || s->payload.type != CB_BYTES || s->signature.type != CB_BYTES)
        R(TMLA_MALFORMED);
    if (unp.type != CB_MAP) R(TMLA_MALFORMED);
    s->buf = b;
    /* unprotected: at most the key statement (manifests), nothing otherwise */
    s->has_statement = s->statement_present = 0;
    if (unp.val > 1 || (unp.val == 1 && !allow_statement)) R(TMLA_MALFORMED);
    if (unp.val == 1) {
        cb_item k;
        cb_get(b, unp.data, &k);
        if (!cb_text_eq(b, &k, HDR_KEY_STATEMENT)) R(TMLA_MALFORMED);
        cb_get(b, k.end, &s->statement);
        s->statement_present = 1;
        s->has_statement = s->statement.type == CB_BYTES;
    }
    /* protected: exactly {1: -8, 3: content type, 4: kid}, nothing else (no crit, no unknown) */
    const uint8_t *ph = b + s->protected_.data;
    uint32_t pn = (uint32_t)s->protected_.val;
    if (cb_check(ph, pn)) R(TMLA_MALFORMED);
    cb_get(ph, 0, &hdr);
    if (hdr.type != CB_MAP || hdr.val != 3) R(TMLA_MALFORMED);
    cb_item k1, v1, k3, v3, k4, v4;
    cb_get(ph, hdr.data, &k1); cb_get(ph, k1.end, &v1);
    cb_get(ph, v1.end, &k3); cb_get(ph, k3.end, &v3);
    cb_get(ph, v3.end, &k4); cb_get(ph, k4.end, &v4);
    if (k1.type != CB_UINT || k1.val != 1 || k3.type != CB_UINT || k3.val != 3 || k4.type != CB_UINT || k4.val != 4)
        R(TMLA_MALFORMED);
    if (v1.type != CB_NINT || v1.val != 7) R(TMLA_MALFORMED);          /* alg EdDSA (-8) */
    if (v4.type != CB_BYTES || v4.val < 1 || v4.val > 64) R(TMLA_MALFORMED);
    if (!cb_text_eq(ph, &v3, ct)) R(TMLA_MALFORMED);
    if (s->signature.val != 64) R(TMLA_MALFORMED);
    s->kid = ph + v4.data;
    s->kid_len = (uint32_t)v4.val;
    R(TMLA_OK);
}

static void bstr_head(uint8_t *h, uint32_t *hn, uint32_t len)
{
    if (len < 24) { h[0] = (uint8_t)(0x40 | len); *hn = 1; }
    else if (len < 0x100) { h[0] = 0x58; h[1] = (uint8_t)len; *hn = 2; }
    else if (len < 0x10000) { h[0] = 0x59; h[1] = (uint8_t)(len >> 8); h[2] = (uint8_t)len; *hn = 3; }
    else { h[0] = 0x5a; h[1] = (uint8_t)(len >> 24); h[2] = (uint8_t)(len >> 16); h[3] = (uint8_t)(len >> 8); h[4] = (uint8_t)len; *hn = 5; }
}

/* Sig_structure = ["Signature1", protected, h'', payload], streamed into the Ed25519 hash */
int tmla_cose_verify(const tmla_sign1 *s, const uint8_t pk[32])
{
    static const uint8_t pre[] = {0x84, 0x6a, 'S', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', '1'};
    static const uint8_t empty = 0x40;
    uint8_t h[5];
    uint32_t hn;
    tmla_ed25519_ctx e;
    tmla_ed25519_verify_init(&e, s->buf + s->signature.data, pk);
    tmla_ed25519_verify_update(&e, pre, sizeof pre);
    bstr_head(h, &hn, (uint32_t)s->protected_.val);
    tmla_ed25519_verify_update(&e, h, hn);
    tmla_ed25519_verify_update(&e, s->buf + s->protected_.data, (size_t)s->protected_.val);
    tmla_ed25519_verify_update(&e, &empty, 1);
    bstr_head(h, &hn, (uint32_t)s->payload.val);
    tmla_ed25519_verify_update(&e, h, hn);
    tmla_ed25519_verify_update(&e, s->buf + s->payload.data, (size_t)s->payload.val);
    return tmla_ed25519_verify_final(&e);
}

int tmla_root_signed(const tmla_agent *a, const uint8_t *b, uint32_t n, const char *ct, cb_item *payload)
{
    tmla_sign1 s;
    int r;
    if (n > MAX_SIGNED_OBJECT) R(TMLA_MALFORMED);
    if ((r = tmla_cose_decode(b, n, ct, 0, &s)) != TMLA_OK) R(r);
    if (s.kid_len != 8 || !bytes_eq(s.kid, a->root_kid, 8)) R(TMLA_UNTRUSTED_KEY);
    if (tmla_cose_verify(&s, a->prov.root_pk)) R(TMLA_UNTRUSTED_KEY);
    if (cb_check(b + s.payload.data, (uint32_t)s.payload.val)) R(TMLA_MALFORMED);
    *payload = s.payload;
    R(TMLA_OK);
}

static int time_value(const cb_item *v, uint64_t *out)
{
    if (v->type != CB_UINT || v->val > MAX_UNIX_SECONDS) return -1;
    *out = v->val;
    return 0;
}

int tmla_statement_check(const tmla_agent *a, const uint8_t *b, uint32_t n, const char *purpose, tmla_statement *st)
{
    cb_item pl, map, v;
    int r = tmla_root_signed(a, b, n, CT_KEY_STATEMENT, &pl);
    if (r != TMLA_OK) R(r);
    const uint8_t *p = b + pl.data;
    cb_get(p, 0, &map);
    if (map.type != CB_MAP || map.val != 5) R(TMLA_MALFORMED);
    if (!cb_map_find(p, &map, "kid", &v) || v.type != CB_TEXT) R(TMLA_MALFORMED);
    uint8_t kid[8];
    if (tmla_unhex16(p + v.data, (uint32_t)v.val, kid)) R(TMLA_MALFORMED);
    if (!cb_map_find(p, &map, "public_key", &v) || v.type != CB_BYTES || v.val != 32) R(TMLA_MALFORMED);
    for (int i = 0; i < 32; i++) st->pk[i] = p[v.data + i];
    if (!cb_map_find(p, &map, "valid_from", &v) || time_value(&v, &st->valid_from)) R(TMLA_MALFORMED);
    if (!cb_map_find(p, &map, "valid_until", &v) || time_value(&v, &st->valid_until)) R(TMLA_MALFORMED);
    if (!cb_map_find(p, &map, "purpose", &v)) R(TMLA_MALFORMED);
    if (!cb_text_eq(p, &v, PURPOSE_BUNDLE) && !cb_text_eq(p, &v, PURPOSE_QUOTA)) R(TMLA_MALFORMED);
    int for_purpose = cb_text_eq(p, &v, purpose);
    uint8_t d[32];
    tmla_sha256(st->pk, 32, d);
    if (!bytes_eq(d, kid, 8)) R(TMLA_MALFORMED); /* kid is not the id of its key */
    /* a valid statement for the other purpose: the root did not trust this key for this */
    if (!for_purpose) R(TMLA_UNTRUSTED_KEY);
    for (int i = 0; i < 8; i++) st->kid[i] = kid[i];
    R(TMLA_OK);
}

/* --- manifest schema (tinymlops.bundle.manifest, strict) ------------------------------------ */
static const char *const FIELDS[] = {
    "format_version", "model_name", "model_version", "sequence", "vendor_id", "class_id",
    "payload_sha256", "payload_size", "encrypted", "ciphertext_sha256", "ciphertext_size",
    "encryption", "created", "expires", "arena_bytes", "ops", "lineage", "selftest"};
#define NFIELDS (sizeof FIELDS / sizeof FIELDS[0])

static int exact_keys(const uint8_t *b, const cb_item *map, const char *const *names, uint32_t count)
{
    cb_item v;
    if (map->type != CB_MAP || map->val != count) return -1;
    for (uint32_t i = 0; i < count; i++)
        if (!cb_map_find(b, map, names[i], &v)) return -1;
    return 0; /* count equal, all present, no duplicates (canonical): exactly this set */
}

static int text_len_ok(const uint8_t *b, const cb_item *v, uint32_t lo, uint32_t hi)
{
    if (v->type != CB_TEXT) return 0;
    uint32_t c = cb_text_chars(b + v->data, (uint32_t)v->val);
    return c >= lo && c <= hi;
}

static int u63(const cb_item *v, uint64_t *out)
{
    if (v->type != CB_UINT || v->val > UINT63) return -1;
    *out = v->val;
    return 0;
}

static int shape(const uint8_t *b, const cb_item *v, uint64_t dims[8], uint32_t *rank, uint64_t *prod, int *sat)
{
    if (v->type != CB_ARRAY || v->val < 1 || v->val > 8) return -1;
    uint32_t p = v->data;
    *prod = 1; *sat = 0;
    for (uint64_t i = 0; i < v->val; i++) {
        cb_item d;
        cb_get(b, p, &d);
        if (d.type != CB_UINT || d.val < 1 || d.val > UINT63) return -1;
        dims[i] = d.val;
        if (!*sat) {
            if (*prod > UINT64_MAX / d.val) *sat = 1; else *prod *= d.val;
        }
        p = d.end;
    }
    *rank = (uint32_t)v->val;
    return 0;
}

/* count * prod == len, without overflow */
static int size_matches(uint64_t count, uint64_t prod, int sat, uint64_t len)
{
    if (count == 0) return len == 0;
    if (sat) return 0;
    if (prod > UINT64_MAX / count) return 0;
    return count * prod == len;
}

static int selftest_decode(const uint8_t *b, const cb_item *v, tmla_image *img)
{
    static const char *const K[] = {"input_shape", "output_shape", "inputs", "expected", "count", "tolerance"};
    cb_item f, in, ex;
    uint64_t pin, pout;
    int sin, sout;
    if (exact_keys(b, v, K, 6)) return -1;
    cb_map_find(b, v, "input_shape", &f);
    if (shape(b, &f, img->input_shape, &img->in_rank, &pin, &sin)) return -1;
    cb_map_find(b, v, "output_shape", &f);
    if (shape(b, &f, img->output_shape, &img->out_rank, &pout, &sout)) return -1;
    cb_map_find(b, v, "inputs", &in);
    cb_map_find(b, v, "expected", &ex);
    if (in.type != CB_BYTES || ex.type != CB_BYTES) return -1;
    cb_map_find(b, v, "count", &f);
    if (u63(&f, &img->count)) return -1;
    cb_map_find(b, v, "tolerance", &f);
    if (f.type != CB_UINT || f.val > 255) return -1;
    img->tolerance = (uint32_t)f.val;
    if (!size_matches(img->count, pin, sin, in.val) || !size_matches(img->count, pout, sout, ex.val)) return -1;
    img->inputs = b + in.data; img->inputs_len = (uint32_t)in.val;
    img->expected = b + ex.data; img->expected_len = (uint32_t)ex.val;
    img->has_selftest = 1;
    return 0;
}

static int bytes_n(const uint8_t *b, const cb_item *v, uint32_t n, uint8_t *out)
{
    if (v->type != CB_BYTES || v->val != n) return -1;
    if (out) for (uint32_t i = 0; i < n; i++) out[i] = b[v->data + i];
    return 0;
}

int tmla_manifest_decode(const uint8_t *b, const cb_item *pl, tmla_manifest *m)
{
    const uint8_t *p = b + pl->data;
    uint32_t n = (uint32_t)pl->val;
    cb_item map, v;
    if (cb_check(p, n)) R(TMLA_MALFORMED);
    cb_get(p, 0, &map);
    if (map.type != CB_MAP) R(TMLA_MALFORMED);
    if (!cb_map_find(p, &map, "format_version", &v)) R(TMLA_MALFORMED);
    if (v.type != CB_UINT && v.type != CB_NINT) R(TMLA_MALFORMED);
    if (v.type == CB_NINT || v.val != 1) R(TMLA_UNSUPPORTED_VERSION);
    {
        /* later optional fields, absent when None: the device's input step and the image's identity */
        static const char *const OPTIONAL[] = {"preprocessing", "image"};
        uint32_t extra = 0;
        if (map.type != CB_MAP) R(TMLA_MALFORMED);
        for (int i = 0; i < 2; i++) {
            cb_item o;
            if (cb_map_find(p, &map, OPTIONAL[i], &o)) {
                if (o.type != CB_MAP) R(TMLA_MALFORMED);
                extra++;
            }
        }
        if (map.type != CB_MAP || map.val != NFIELDS + extra) R(TMLA_MALFORMED);
        cb_item f;
        for (uint32_t i = 0; i < NFIELDS; i++)
            if (!cb_map_find(p, &map, FIELDS[i], &f)) R(TMLA_MALFORMED);
    }
    m->cbor = p; m->cbor_len = n;
    tmla_image *img = &m->img;
    cb_map_find(p, &map, "vendor_id", &v);
    if (bytes_n(p, &v, 16, 0)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "class_id", &v);
    if (bytes_n(p, &v, 16, m->class_id)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "payload_sha256", &v);
    if (bytes_n(p, &v, 32, m->payload_sha256)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "ciphertext_sha256", &v);
    m->ct_sha_span[0] = v.start; m->ct_sha_span[1] = v.end;
    m->has_ct_sha = v.type != CB_NULL;
    if (m->has_ct_sha && bytes_n(p, &v, 32, m->ciphertext_sha256)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "created", &v);
    if (time_value(&v, &m->created)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "expires", &v);
    if (time_value(&v, &m->expires)) R(TMLA_MALFORMED);
    /* the pydantic model, strict */
    cb_map_find(p, &map, "model_name", &v);
    if (!text_len_ok(p, &v, 1, 256)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "model_version", &v);
    if (!text_len_ok(p, &v, 1, 256)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "sequence", &v);
    if (u63(&v, &m->sequence)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "payload_size", &v);
    if (u63(&v, &m->payload_size)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "encrypted", &v);
    if (v.type != CB_TRUE && v.type != CB_FALSE) R(TMLA_MALFORMED);
    m->encrypted = v.type == CB_TRUE;
    cb_map_find(p, &map, "ciphertext_size", &v);
    m->ct_size_span[0] = v.start; m->ct_size_span[1] = v.end;
    int has_ct_size = v.type != CB_NULL;
    if (has_ct_size && u63(&v, &m->ciphertext_size)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "encryption", &v);
    int has_enc = v.type != CB_NULL;
    if (has_enc) {
        static const char *const K[] = {"alg", "key_wrap", "kek_id", "wrapped_key", "nonce"};
        cb_item f;
        uint8_t tmp[8];
        if (exact_keys(p, &v, K, 5)) R(TMLA_MALFORMED);
        cb_map_find(p, &v, "alg", &f);
        if (!cb_text_eq(p, &f, "A256GCM")) R(TMLA_MALFORMED);
        cb_map_find(p, &v, "key_wrap", &f);
        if (!cb_text_eq(p, &f, "A256KW")) R(TMLA_MALFORMED);
        cb_map_find(p, &v, "kek_id", &f);
        if (f.type != CB_TEXT || tmla_unhex16(p + f.data, (uint32_t)f.val, tmp)) R(TMLA_MALFORMED);
        for (int i = 0; i < 16; i++) m->kek_id[i] = (char)p[f.data + i];
        cb_map_find(p, &v, "wrapped_key", &f);
        if (bytes_n(p, &f, 40, m->wrapped_key)) R(TMLA_MALFORMED);
        cb_map_find(p, &v, "nonce", &f);
        if (bytes_n(p, &f, 12, m->nonce)) R(TMLA_MALFORMED);
    }
    cb_map_find(p, &map, "arena_bytes", &v);
    if (u63(&v, &m->arena_bytes)) R(TMLA_MALFORMED);
    cb_map_find(p, &map, "ops", &v);
    if (v.type != CB_ARRAY || v.val > 1024) R(TMLA_MALFORMED);
    {
        uint32_t q = v.data;
        for (uint64_t i = 0; i < v.val; i++) {
            cb_item o;
            cb_get(p, q, &o);
            if (!text_len_ok(p, &o, 1, 128)) R(TMLA_MALFORMED);
            q = o.end;
        }
        img->ops = p + v.start; img->ops_len = v.end - v.start; img->ops_count = (uint32_t)v.val;
    }
    cb_map_find(p, &map, "lineage", &v);
    {
        /* instance_id (a per-customer watermark instance) is optional: absent when there is none */
        static const char *const K[] = {"mlflow_run_id", "git_sha", "data_md5", "watermark_id", "instance_id"};
        cb_item inst;
        if (v.type != CB_MAP) R(TMLA_MALFORMED);
        uint32_t n = cb_map_find(p, &v, "instance_id", &inst) ? 5 : 4;
        if (exact_keys(p, &v, K, n)) R(TMLA_MALFORMED);
        for (uint32_t i = 0; i < n; i++) {
            cb_item f;
            cb_map_find(p, &v, K[i], &f);
            if (f.type != CB_NULL && f.type != CB_TEXT) R(TMLA_MALFORMED);
        }
    }
    cb_map_find(p, &map, "selftest", &v);
    img->has_selftest = 0;
    if (v.type != CB_NULL && selftest_decode(p, &v, img)) R(TMLA_MALFORMED);
    /* model validator: times, encryption consistency */
    if (m->expires <= m->created) R(TMLA_MALFORMED);
    if (m->encrypted != has_enc) R(TMLA_MALFORMED);
    if (!m->encrypted && (m->has_ct_sha || has_ct_size)) R(TMLA_MALFORMED);
    if (!has_ct_size) m->ciphertext_size = UINT64_MAX; /* "None": never equals payload_size + 16 */
    img->sequence = m->sequence;
    img->arena_bytes = m->arena_bytes;
    R(TMLA_OK);
}

static int revoked(tmla_agent *a, const uint8_t kid[8])
{
    uint8_t k[8];
    uint32_t base = a->lay.revo_addr + (uint32_t)a->st.revo_copy * a->lay.revo_pages * a->lay.page_size;
    if (a->st.revo_copy == TMLA_NO_SLOT) return 0;
    for (uint32_t i = 0; i < a->st.revo_count; i++) {
        if (a->hal->flash_read(a->hal->user, base + 8 * i, k, 8)) return 1; /* unreadable: fail closed */
        if (bytes_eq(k, kid, 8)) return 1;
    }
    return 0;
}

int tmla_key_signed(tmla_agent *a, const uint8_t *b, uint32_t n, const char *ct, const char *purpose, int policy,
                    tmla_sign1 *s, tmla_statement *st)
{
    int r;
    if ((r = tmla_cose_decode(b, n, ct, 1, s)) != TMLA_OK) R(r);
    if (!s->has_statement) R(TMLA_UNTRUSTED_KEY); /* no statement: a root-signed object is not accepted here */
    if ((r = tmla_statement_check(a, b + s->statement.data, (uint32_t)s->statement.val, purpose, st)) != TMLA_OK) R(r);
    if (s->kid_len != 8 || !bytes_eq(s->kid, st->kid, 8)) R(TMLA_KEY_MISMATCH);
    if (tmla_cose_verify(s, st->pk)) R(TMLA_BAD_SIGNATURE);
    if (policy) {
        uint64_t now = a->hal->now(a->hal->user);
        if (!a->revo_ok) R(TMLA_FLASH_ERROR); /* the stored revocation list is damaged: fail closed */
        if (revoked(a, st->kid)) R(TMLA_REVOKED_KEY);
        if (now < st->valid_from) R(TMLA_KEY_NOT_YET_VALID);
        if (now >= st->valid_until) R(TMLA_EXPIRED_KEY);
    }
    R(TMLA_OK);
}

int tmla_verify_signed_manifest(tmla_agent *a, const uint8_t *b, uint32_t n, int policy, tmla_manifest *m)
{
    tmla_sign1 s;
    tmla_statement st;
    int r = tmla_key_signed(a, b, n, CT_MANIFEST, PURPOSE_BUNDLE, policy, &s, &st);
    if (r != TMLA_OK) R(r);
    for (int i = 0; i < 8; i++) m->signing_kid[i] = st.kid[i];
    R(tmla_manifest_decode(b, &s.payload, m));
}
