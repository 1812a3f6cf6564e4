/* Strict deterministic CBOR decoder: see cbor.h. */
#include "cbor.h"

static size_t slen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }

static int head(const uint8_t *b, uint32_t n, uint32_t off, int *major, uint64_t *val, uint32_t *data, int *ai_out)
{
    if (off >= n) return -1;
    uint8_t ib = b[off];
    int ai = ib & 31;
    *major = ib >> 5;
    *ai_out = ai;
    uint32_t p = off + 1;
    if (ai < 24) { *val = (uint64_t)ai; *data = p; return 0; }
    if (ai > 27) return -1; /* 28..30 reserved, 31 indefinite */
    uint32_t w = 1u << (ai - 24);
    if (n - p < w) return -1;
    uint64_t v = 0;
    for (uint32_t i = 0; i < w; i++) v = (v << 8) | b[p + i];
    *val = v;
    *data = p + w;
    if (*major == 7) return 0; /* floats and simple(24): judged by the caller */
    /* shortest form only */
    if (ai == 24 && v < 24) return -1;
    if (ai == 25 && v <= 0xff) return -1;
    if (ai == 26 && v <= 0xffff) return -1;
    if (ai == 27 && v <= 0xffffffffu) return -1;
    return 0;
}

static int utf8_ok(const uint8_t *s, uint32_t n)
{
    uint32_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        uint32_t need;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) need = 1;
        else if (c == 0xe0) { need = 2; lo = 0xa0; }
        else if (c >= 0xe1 && c <= 0xec) need = 2;
        else if (c == 0xed) { need = 2; hi = 0x9f; }
        else if (c >= 0xee && c <= 0xef) need = 2;
        else if (c == 0xf0) { need = 3; lo = 0x90; }
        else if (c >= 0xf1 && c <= 0xf3) need = 3;
        else if (c == 0xf4) { need = 3; hi = 0x8f; }
        else return -1;
        if (n - i - 1 < need) return -1;
        if (s[i + 1] < lo || s[i + 1] > hi) return -1;
        for (uint32_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) return -1;
        i += need + 1;
    }
    return 0;
}

/* canonical key order: shorter encoding first, then bytewise; 1 if a < b */
static int key_less(const uint8_t *b, uint32_t as, uint32_t ae, uint32_t bs, uint32_t be)
{
    uint32_t la = ae - as, lb = be - bs;
    if (la != lb) return la < lb;
    for (uint32_t i = 0; i < la; i++)
        if (b[as + i] != b[bs + i]) return b[as + i] < b[bs + i];
    return 0; /* equal: a duplicate */
}

static int check_item(const uint8_t *b, uint32_t n, uint32_t off, int depth, uint32_t *end)
{
    int major, ai;
    uint64_t val;
    uint32_t p;
    if (depth > CB_MAX_DEPTH) return -1;
    if (head(b, n, off, &major, &val, &p, &ai)) return -1;
    switch (major) {
    case 0: case 1:
        *end = p; return 0;
    case 2: case 3:
        if (val > (uint64_t)(n - p)) return -1;
        if (major == 3 && utf8_ok(b + p, (uint32_t)val)) return -1;
        *end = p + (uint32_t)val; return 0;
    case 4:
        if (val > (uint64_t)(n - p)) return -1;
        for (uint64_t i = 0; i < val; i++)
            if (check_item(b, n, p, depth + 1, &p)) return -1;
        *end = p; return 0;
    case 5: {
        if (val > (uint64_t)(n - p) / 2) return -1;
        uint32_t pks = 0, pke = 0;
        for (uint64_t i = 0; i < val; i++) {
            uint32_t ks = p, ke;
            if (check_item(b, n, p, depth + 1, &ke)) return -1;
            if (i > 0 && !key_less(b, pks, pke, ks, ke)) return -1; /* unsorted or duplicate */
            pks = ks; pke = ke;
            if (check_item(b, n, ke, depth + 1, &p)) return -1;
        }
        *end = p; return 0;
    }
    case 6:
        if (depth != 1 || val != 18) return -1; /* only the COSE_Sign1 tag, only at the top */
        return check_item(b, n, p, depth + 1, end);
    default: /* 7 */
        if (ai == 20 || ai == 21 || ai == 22) { *end = p; return 0; }
        return -1; /* undefined, other simple values, floats */
    }
}

int cb_check(const uint8_t *b, uint32_t n)
{
    uint32_t end;
    if (n == 0 || check_item(b, n, 0, 1, &end)) return -1;
    return end == n ? 0 : -1;
}

/* navigation over a checked buffer */
static uint32_t skip(const uint8_t *b, uint32_t off)
{
    cb_item it;
    cb_get(b, off, &it);
    return it.end;
}

void cb_get(const uint8_t *b, uint32_t off, cb_item *it)
{
    uint8_t ib = b[off];
    int major = ib >> 5, ai = ib & 31;
    uint64_t v = (uint64_t)ai;
    uint32_t p = off + 1;
    if (ai >= 24 && ai <= 27) {
        uint32_t w = 1u << (ai - 24);
        v = 0;
        for (uint32_t i = 0; i < w; i++) v = (v << 8) | b[p + i];
        p += w;
    }
    it->start = off;
    it->data = p;
    it->val = v;
    switch (major) {
    case 0: it->type = CB_UINT; it->end = p; break;
    case 1: it->type = CB_NINT; it->end = p; break;
    case 2: it->type = CB_BYTES; it->end = p + (uint32_t)v; break;
    case 3: it->type = CB_TEXT; it->end = p + (uint32_t)v; break;
    case 4: it->type = CB_ARRAY; for (uint64_t i = 0; i < v; i++) p = skip(b, p); it->end = p; break;
    case 5: it->type = CB_MAP; for (uint64_t i = 0; i < 2 * v; i++) p = skip(b, p); it->end = p; break;
    case 6: it->type = CB_TAG; it->end = skip(b, p); break;
    default: it->type = ai == 20 ? CB_FALSE : ai == 21 ? CB_TRUE : CB_NULL; it->end = p; break;
    }
}

int cb_text_eq(const uint8_t *b, const cb_item *it, const char *s)
{
    size_t n = slen(s);
    if (it->type != CB_TEXT || it->val != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (b[it->data + i] != (uint8_t)s[i]) return 0;
    return 1;
}

int cb_map_find(const uint8_t *b, const cb_item *map, const char *key, cb_item *val)
{
    uint32_t p = map->data;
    for (uint64_t i = 0; i < map->val; i++) {
        cb_item k;
        cb_get(b, p, &k);
        cb_get(b, k.end, val);
        if (cb_text_eq(b, &k, key)) return 1;
        p = val->end;
    }
    return 0;
}

uint32_t cb_text_chars(const uint8_t *s, uint32_t len)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) n++;
    return n;
}

/* exported for the host tests: 0 when b is one deterministic item */
int tmla_x_cbor_check(const uint8_t *b, uint32_t n) { return cb_check(b, n); }
