/* The update agent: provisioning page, state log, streaming install, boot, policies. */
#include "verify.h"

#define STATE_MAGIC 0x534c4d54u /* "TMLS" */
#define META_MAGIC 0x4d4c4d54u  /* "TMLM" */
#define REC 64u

enum { PH_IDLE = 0, PH_HEADER, PH_MANIFEST, PH_PAYLOAD, PH_FAILED, PH_DONE };

static const char *const NAMES[] = {
    "ok", "bad_magic", "unsupported_version", "malformed", "untrusted_key", "key_mismatch",
    "revoked_key", "expired_key", "key_not_yet_valid", "bad_signature", "rollback", "wrong_class",
    "expired_manifest", "payload_truncated", "payload_too_long", "payload_digest_mismatch",
    "ciphertext_digest_mismatch", "missing_key", "wrong_kek", "decryption_failed", "io_error",
    "too_large", "not_a_model", "image_unfit", "fast_forward", "already_installed",
    "stale_revocations", "selftest_failed", "boot_attempts", "slot_corrupt", "wrong_device",
    "stale_recovery", "not_provisioned", "flash_error", "bad_call", "no_model",
    "quota_exhausted", "quota_expired", "stale_quota", "no_device_key"};

const char *tmla_reason_name(int r)
{
    if (r >= 0 && r < TMLA_REASON_COUNT) return NAMES[r];
    if (r == TMLA_MORE) return "more";
    if (r == TMLA_PENDING) return "pending";
    return "unknown";
}

uint32_t tmla_crc32(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static void cpy(void *d, const void *s, size_t n) { uint8_t *a = d; const uint8_t *b = s; while (n--) *a++ = *b++; }
static int all_ff(const uint8_t *p, size_t n) { while (n--) if (*p++ != 0xff) return 0; return 1; }

/* --- provisioning page ------------------------------------------------------------------------ */
int tmla_prov_encode(const tmla_prov *p, uint8_t o[TMLA_PROV_BYTES])
{
    for (int i = 0; i < TMLA_PROV_BYTES; i++) o[i] = 0;
    put32(o, TMLA_PROV_MAGIC);
    put32(o + 4, 2);
    cpy(o + 8, p->root_pk, 32);
    cpy(o + 40, p->device_id, 16);
    cpy(o + 56, p->class_id, 16);
    o[72] = p->has_kek;
    cpy(o + 76, p->kek, 32);
    put64(o + 112, p->ff_bound);
    put64(o + 120, p->initial_sequence);
    put32(o + 128, p->max_boot_attempts);
    o[73] = p->metered;
    o[132] = p->has_device_key;
    cpy(o + 136, p->device_sk, 32);
    cpy(o + 168, p->device_pk, 32);
    put32(o + 200, tmla_crc32(0, o, 200));
    return 0;
}

static int prov_load(tmla_agent *a)
{
    uint8_t o[TMLA_PROV_BYTES];
    if (a->hal->flash_read(a->hal->user, a->lay.prov_addr, o, sizeof o)) return -1;
    uint32_t version = get32(o + 4);
    if (get32(o) != TMLA_PROV_MAGIC) return -1;
    if (version == 1) {
        if (get32(o + 132) != tmla_crc32(0, o, 132)) return -1;
    } else if (version != 2 || get32(o + 200) != tmla_crc32(0, o, 200)) {
        return -1;
    }
    tmla_prov *p = &a->prov;
    cpy(p->root_pk, o + 8, 32);
    cpy(p->device_id, o + 40, 16);
    cpy(p->class_id, o + 56, 16);
    p->has_kek = o[72];
    cpy(p->kek, o + 76, 32);
    p->ff_bound = get64(o + 112);
    p->initial_sequence = get64(o + 120);
    p->max_boot_attempts = get32(o + 128);
    if (version == 2) {
        p->metered = o[73];
        p->has_device_key = o[132];
        cpy(p->device_sk, o + 136, 32);
        cpy(p->device_pk, o + 168, 32);
    }
    tmla_wipe(o, sizeof o);
    uint8_t d[32];
    tmla_sha256(p->root_pk, 32, d);
    cpy(a->root_kid, d, 8);
    return 0;
}

/* --- state log: append-only 64-byte records with CRC over two pages, newest valid wins ------- */
static void rec_encode(const tmla_state *s, uint8_t r[REC])
{
    for (unsigned i = 0; i < REC; i++) r[i] = 0;
    put32(r, STATE_MAGIC);
    put32(r + 4, s->seq);
    r[8] = s->active; r[9] = s->pending; r[10] = s->boot_attempts; r[11] = s->last_event;
    r[12] = (uint8_t)s->last_reason; r[13] = (uint8_t)(s->last_reason >> 8);
    r[14] = s->revo_copy;
    put64(r + 16, s->floor);
    put64(r + 24, s->revo_version);
    put32(r + 32, s->revo_count);
    put32(r + 36, s->revo_crc);
    put64(r + 40, s->recovery_counter);
    put64(r + 48, s->active_sequence);
    put32(r + 56, s->boot_count);
    put32(r + 60, tmla_crc32(0, r, 60));
}

static int rec_decode(const uint8_t r[REC], tmla_state *s)
{
    if (get32(r) != STATE_MAGIC || get32(r + 60) != tmla_crc32(0, r, 60)) return -1;
    s->seq = get32(r + 4);
    s->active = r[8]; s->pending = r[9]; s->boot_attempts = r[10]; s->last_event = r[11];
    s->last_reason = (uint16_t)(r[12] | (r[13] << 8));
    s->revo_copy = r[14];
    s->floor = get64(r + 16);
    s->revo_version = get64(r + 24);
    s->revo_count = get32(r + 32);
    s->revo_crc = get32(r + 36);
    s->recovery_counter = get64(r + 40);
    s->active_sequence = get64(r + 48);
    s->boot_count = get32(r + 56); /* bytes that were zero before: old records read as 0 boots */
    if ((s->active > 1 && s->active != TMLA_NO_SLOT) || (s->pending > 1 && s->pending != TMLA_NO_SLOT) ||
        (s->revo_copy > 1 && s->revo_copy != TMLA_NO_SLOT))
        return -1;
    return 0;
}

static int state_load(tmla_agent *a)
{
    uint8_t r[REC];
    uint32_t per = a->lay.page_size / REC;
    a->st_valid = 0;
    for (uint32_t pg = 0; pg < 2; pg++)
        for (uint32_t i = 0; i < per; i++) {
            tmla_state s;
            if (a->hal->flash_read(a->hal->user, a->lay.state_addr + pg * a->lay.page_size + i * REC, r, REC)) return -1;
            if (rec_decode(r, &s)) continue;
            if (!a->st_valid || s.seq > a->st.seq) {
                a->st = s; a->st_valid = 1; a->st_page = pg; a->st_index = i;
            }
        }
    if (!a->st_valid) { /* blank device: the provisioned defaults */
        tmla_state s = {0};
        s.active = s.pending = s.revo_copy = TMLA_NO_SLOT;
        s.floor = a->prov.initial_sequence;
        a->st = s;
        a->st_page = 1; a->st_index = per - 1; /* first append goes to page 0 after an erase */
    }
    return 0;
}

static int state_append(tmla_agent *a, tmla_state *s)
{
    uint8_t r[REC], cur[REC];
    uint32_t per = a->lay.page_size / REC, pg = a->st_page, i = a->st_index + 1;
    s->seq = a->st_valid ? a->st.seq + 1 : 1;
    rec_encode(s, r);
    for (;;) {
        if (i >= per) { /* page full: erase the other (older) page and continue there */
            pg ^= 1; i = 0;
            if (a->hal->flash_erase(a->hal->user, a->lay.state_addr + pg * a->lay.page_size)) return TMLA_FLASH_ERROR;
        }
        uint32_t addr = a->lay.state_addr + pg * a->lay.page_size + i * REC;
        if (a->hal->flash_read(a->hal->user, addr, cur, REC)) return TMLA_FLASH_ERROR;
        if (all_ff(cur, REC)) {
            if (a->hal->flash_write(a->hal->user, addr, r, REC)) return TMLA_FLASH_ERROR;
            a->st = *s; a->st_valid = 1; a->st_page = pg; a->st_index = i;
            return TMLA_OK;
        }
        i++; /* a torn record: skip it */
    }
}

static int revo_check(tmla_agent *a)
{
    uint8_t buf[TMLA_PROG];
    if (a->st.revo_copy == TMLA_NO_SLOT) return a->st.revo_count == 0;
    uint32_t base = a->lay.revo_addr + (uint32_t)a->st.revo_copy * a->lay.revo_pages * a->lay.page_size;
    uint32_t left = a->st.revo_count * 8, off = 0, crc = 0;
    if (left > a->lay.revo_pages * a->lay.page_size) return 0;
    while (left) {
        uint32_t n = left < TMLA_PROG ? left : TMLA_PROG;
        if (a->hal->flash_read(a->hal->user, base + off, buf, n)) return 0;
        crc = tmla_crc32(crc, buf, n);
        off += n; left -= n;
    }
    return crc == a->st.revo_crc;
}

int tmla_init(tmla_agent *a, const tmla_hal *hal, const tmla_layout *lay, uint8_t *work)
{
    uint8_t *z = (uint8_t *)a;
    for (size_t i = 0; i < sizeof *a; i++) z[i] = 0;
    a->hal = hal; a->lay = *lay; a->work = work;
    if (lay->page_size < REC * 2 || lay->page_size % TMLA_PROG) return TMLA_BAD_CALL;
    if (prov_load(a)) return TMLA_NOT_PROVISIONED;
    a->provisioned = 1;
    if (state_load(a)) return TMLA_FLASH_ERROR;
    a->revo_ok = revo_check(a);
    if (lay->meter_addr && tmla_meter_load(a)) return TMLA_FLASH_ERROR;
    return TMLA_OK;
}

/* --- flash helpers for a slot ------------------------------------------------------------------ */
static int erase_range(tmla_agent *a, uint32_t addr, uint32_t len)
{
    for (uint32_t o = 0; o < len; o += a->lay.page_size)
        if (a->hal->flash_erase(a->hal->user, addr + o)) return -1;
    return 0;
}

/* program bytes at the slot's image offset, erasing each page the first time it is reached */
static int slot_write(tmla_agent *a, const uint8_t *d, uint32_t n)
{
    uint32_t base = a->lay.slot_addr[a->target] + a->lay.slot_meta_bytes;
    uint32_t end = a->write_off + n;
    while (a->erased_upto < end) {
        if (a->hal->flash_erase(a->hal->user, base + a->erased_upto)) return -1;
        a->erased_upto += a->lay.page_size;
    }
    if (a->hal->flash_write(a->hal->user, base + a->write_off, d, n)) return -1;
    a->write_off = end;
    return 0;
}

static int prog_put(tmla_agent *a, const uint8_t *d, size_t n)
{
    while (n) {
        uint32_t k = TMLA_PROG - a->prog_len;
        if (k > n) k = (uint32_t)n;
        cpy(a->prog + a->prog_len, d, k);
        a->prog_len += k; d += k; n -= k;
        if (a->prog_len == TMLA_PROG) {
            if (slot_write(a, a->prog, TMLA_PROG)) return -1;
            a->prog_len = 0;
        }
    }
    return 0;
}

/* --- install ----------------------------------------------------------------------------------- */
static int fail(tmla_agent *a, int reason)
{
    a->phase = PH_FAILED;
    a->result = reason;
    tmla_wipe(&a->gcm, sizeof a->gcm);
    return reason;
}

int tmla_install_begin(tmla_agent *a)
{
    if (!a->provisioned) return TMLA_NOT_PROVISIONED;
    a->phase = PH_HEADER;
    a->result = TMLA_MORE;
    a->hdr_got = a->man_got = a->man_len = 0;
    a->stored_total = a->stored_got = 0;
    a->prog_len = a->write_off = a->erased_upto = 0;
    return TMLA_MORE;
}

static const uint8_t AAD_CONTEXT[] = "tinymlops-bundle-aad-v1"; /* + its NUL, as the Python side */
static const uint8_t KEK_ID_CONTEXT[] = "tinymlops-kek-id-v1";

static int policy(tmla_agent *a)
{
    tmla_manifest *m = &a->m;
    uint64_t now = a->hal->now(a->hal->user);
    int active = a->st.active != TMLA_NO_SLOT;
    for (int i = 0; i < 16; i++)
        if (m->class_id[i] != a->prov.class_id[i]) return TMLA_WRONG_CLASS;
    if (m->sequence < a->st.floor) return TMLA_ROLLBACK;
    if (active && (m->sequence == a->st.floor || m->sequence == a->st.active_sequence)) return TMLA_ALREADY_INSTALLED;
    if (m->sequence - a->st.floor > a->prov.ff_bound) return TMLA_FAST_FORWARD;
    if (now >= m->expires) return TMLA_EXPIRED_MANIFEST;
    if (m->encrypted && m->ciphertext_size != m->payload_size + 16) return TMLA_MALFORMED;
    if (m->encrypted && !m->has_ct_sha) return TMLA_MALFORMED;
    return TMLA_OK;
}

static int keys(tmla_agent *a)
{
    tmla_manifest *m = &a->m;
    if (!m->encrypted) return TMLA_OK;
    if (!a->prov.has_kek) return TMLA_MISSING_KEY;
    uint8_t d[32], cek[32];
    char id[16];
    tmla_sha256_ctx c;
    tmla_sha256_init(&c);
    tmla_sha256_update(&c, KEK_ID_CONTEXT, sizeof KEK_ID_CONTEXT);
    tmla_sha256_update(&c, a->prov.kek, 32);
    tmla_sha256_final(&c, d);
    tmla_hex8(d, id);
    for (int i = 0; i < 16; i++)
        if (id[i] != m->kek_id[i]) return TMLA_WRONG_KEK;
    if (tmla_aes_key_unwrap(a->prov.kek, 32, m->wrapped_key, 40, cek)) return TMLA_WRONG_KEK;
    /* associated data: SHA-256(context || the manifest with both ciphertext fields null) */
    tmla_sha256_init(&c);
    tmla_sha256_update(&c, AAD_CONTEXT, sizeof AAD_CONTEXT);
    const uint8_t nul = 0xf6;
    uint32_t s1 = m->ct_sha_span[0], e1 = m->ct_sha_span[1], s2 = m->ct_size_span[0], e2 = m->ct_size_span[1];
    if (s2 < s1) { uint32_t t = s1; s1 = s2; s2 = t; t = e1; e1 = e2; e2 = t; }
    tmla_sha256_update(&c, m->cbor, s1);
    tmla_sha256_update(&c, &nul, 1);
    tmla_sha256_update(&c, m->cbor + e1, s2 - e1);
    tmla_sha256_update(&c, &nul, 1);
    tmla_sha256_update(&c, m->cbor + e2, m->cbor_len - e2);
    tmla_sha256_final(&c, d);
    tmla_gcm_init(&a->gcm, cek, 32, m->nonce);
    tmla_wipe(cek, sizeof cek);
    tmla_gcm_aad(&a->gcm, d, 32);
    return TMLA_OK;
}

static int slot_meta_write(tmla_agent *a)
{
    uint32_t base = a->lay.slot_addr[a->target];
    uint8_t h[8];
    if (erase_range(a, base, a->lay.slot_meta_bytes)) return -1;
    put32(h, META_MAGIC);
    put32(h + 4, a->man_len);
    if (a->hal->flash_write(a->hal->user, base, h, 8)) return -1;
    if (a->hal->flash_write(a->hal->user, base + 8, a->work, a->man_len)) return -1;
    return 0;
}

static int manifest_done(tmla_agent *a)
{
    int r = tmla_verify_signed_manifest(a, a->work, a->man_len, 1, &a->m);
    if (r == TMLA_OK) r = policy(a);
    if (r == TMLA_OK) r = keys(a);
    if (r != TMLA_OK) return fail(a, r);
    if (a->m.payload_size > a->lay.slot_image_bytes) return fail(a, TMLA_TOO_LARGE);
    a->stored_total = a->m.encrypted ? a->m.ciphertext_size : a->m.payload_size;
    a->target = a->st.active == 0 ? 1 : 0;
    if (a->st.pending == a->target) { /* an older pending image there is being replaced */
        tmla_state s = a->st;
        s.pending = TMLA_NO_SLOT; s.boot_attempts = 0; s.last_event = TMLA_EV_CLEARED;
        if (state_append(a, &s)) return fail(a, TMLA_FLASH_ERROR);
    }
    if (slot_meta_write(a)) return fail(a, TMLA_FLASH_ERROR);
    tmla_sha256_init(&a->plain);
    tmla_sha256_init(&a->cipher);
    a->phase = PH_PAYLOAD;
    return TMLA_MORE;
}

static int payload(tmla_agent *a, const uint8_t *d, size_t n)
{
    uint8_t out[TMLA_PROG];
    while (n) {
        uint64_t body = a->m.payload_size; /* plaintext or ciphertext-without-tag bytes */
        if (a->stored_got < body) {
            size_t k = n < TMLA_PROG ? n : TMLA_PROG;
            if ((uint64_t)k > body - a->stored_got) k = (size_t)(body - a->stored_got);
            if (a->m.encrypted) {
                tmla_sha256_update(&a->cipher, d, k);
                tmla_gcm_decrypt(&a->gcm, d, out, k);
            } else {
                cpy(out, d, k);
            }
            tmla_sha256_update(&a->plain, out, k);
            if (prog_put(a, out, k)) return fail(a, TMLA_FLASH_ERROR);
            a->stored_got += k; d += k; n -= k;
        } else if (a->stored_got < a->stored_total) { /* the GCM tag */
            size_t k = (size_t)(a->stored_total - a->stored_got);
            if (k > n) k = n;
            cpy(a->tag + (a->stored_got - body), d, k);
            tmla_sha256_update(&a->cipher, d, k);
            a->stored_got += k; d += k; n -= k;
        } else {
            return fail(a, TMLA_PAYLOAD_TOO_LONG); /* refused at the first byte past the declared size */
        }
    }
    return TMLA_MORE;
}

int tmla_install_feed(tmla_agent *a, const uint8_t *d, size_t n)
{
    if (a->phase == PH_FAILED) return a->result;
    if (a->phase < PH_HEADER || a->phase > PH_PAYLOAD) return TMLA_BAD_CALL;
    while (n && a->phase != PH_PAYLOAD) {
        if (a->phase == PH_HEADER) {
            a->hdr[a->hdr_got++] = *d++; n--;
            if (a->hdr_got == 4 && !(a->hdr[0] == 'T' && a->hdr[1] == 'M' && a->hdr[2] == 'L' && a->hdr[3] == 'B'))
                return fail(a, TMLA_BAD_MAGIC);
            if (a->hdr_got == 10) {
                uint32_t ver = ((uint32_t)a->hdr[4] << 8) | a->hdr[5];
                a->man_len = ((uint32_t)a->hdr[6] << 24) | ((uint32_t)a->hdr[7] << 16) | ((uint32_t)a->hdr[8] << 8) | a->hdr[9];
                if (ver != 1) return fail(a, TMLA_UNSUPPORTED_VERSION);
                if (a->man_len > (1u << 20)) return fail(a, TMLA_MALFORMED);
                if (a->man_len > a->lay.slot_meta_bytes - 8) return fail(a, TMLA_MALFORMED); /* device limit */
                a->phase = PH_MANIFEST;
                if (a->man_len == 0) { int r = manifest_done(a); if (r != TMLA_MORE) return r; }
            }
        } else { /* PH_MANIFEST */
            uint32_t k = a->man_len - a->man_got;
            if (k > n) k = (uint32_t)n;
            cpy(a->work + a->man_got, d, k);
            a->man_got += k; d += k; n -= k;
            if (a->man_got == a->man_len) {
                int r = manifest_done(a);
                if (r != TMLA_MORE) return r;
            }
        }
    }
    if (n && a->phase == PH_PAYLOAD) return payload(a, d, n);
    return TMLA_MORE;
}

static void image_at(tmla_agent *a, int slot, tmla_image *img)
{
    img->slot = (uint32_t)slot;
    img->addr = a->lay.slot_addr[slot] + a->lay.slot_meta_bytes;
    img->size = (uint32_t)a->m.payload_size;
}

int tmla_install_end(tmla_agent *a)
{
    uint8_t d[32];
    if (a->phase == PH_FAILED) return a->result;
    if (a->phase == PH_HEADER || a->phase == PH_MANIFEST) {
        if (a->phase == PH_HEADER && a->hdr_got < 4) {
            /* fewer than 4 bytes: Python compares what it has only once 4 are there */
        }
        return fail(a, TMLA_MALFORMED);
    }
    if (a->phase != PH_PAYLOAD) return TMLA_BAD_CALL;
    if (a->stored_got < a->stored_total) return fail(a, TMLA_PAYLOAD_TRUNCATED);
    if (a->prog_len && slot_write(a, a->prog, a->prog_len)) return fail(a, TMLA_FLASH_ERROR);
    a->prog_len = 0;
    if (a->m.encrypted) {
        tmla_sha256_final(&a->cipher, d);
        if (tmla_ct_compare(d, a->m.ciphertext_sha256, 32)) return fail(a, TMLA_CIPHERTEXT_DIGEST_MISMATCH);
        if (tmla_gcm_finish(&a->gcm, a->tag)) return fail(a, TMLA_DECRYPTION_FAILED);
    }
    tmla_sha256_final(&a->plain, d);
    if (tmla_ct_compare(d, a->m.payload_sha256, 32)) return fail(a, TMLA_PAYLOAD_DIGEST_MISMATCH);
    image_at(a, a->target, &a->m.img);
    int r = a->hal->check_image(a->hal->user, &a->m.img);
    if (r != TMLA_OK) return fail(a, r == TMLA_IMAGE_UNFIT ? TMLA_IMAGE_UNFIT : TMLA_NOT_A_MODEL);
    tmla_state s = a->st;
    s.pending = (uint8_t)a->target; s.boot_attempts = 0; s.last_event = TMLA_EV_PENDING; s.last_reason = TMLA_OK;
    if (state_append(a, &s)) return fail(a, TMLA_FLASH_ERROR);
    a->phase = PH_DONE;
    a->result = TMLA_PENDING;
    return TMLA_PENDING;
}

/* --- boot -------------------------------------------------------------------------------------- */
/* re-verify a slot from flash: the signed manifest (root chain, class) and the image digest */
static int slot_verify(tmla_agent *a, int slot)
{
    uint8_t h[8], buf[TMLA_PROG], d[32];
    uint32_t base = a->lay.slot_addr[slot];
    if (a->hal->flash_read(a->hal->user, base, h, 8)) return TMLA_FLASH_ERROR;
    uint32_t len = get32(h + 4);
    if (get32(h) != META_MAGIC || len > a->lay.slot_meta_bytes - 8) return TMLA_SLOT_CORRUPT;
    if (a->hal->flash_read(a->hal->user, base + 8, a->work, len)) return TMLA_FLASH_ERROR;
    a->man_len = len;
    if (tmla_verify_signed_manifest(a, a->work, len, 0, &a->m) != TMLA_OK) return TMLA_SLOT_CORRUPT;
    for (int i = 0; i < 16; i++)
        if (a->m.class_id[i] != a->prov.class_id[i]) return TMLA_SLOT_CORRUPT;
    if (a->m.payload_size > a->lay.slot_image_bytes) return TMLA_SLOT_CORRUPT;
    tmla_sha256_ctx c;
    tmla_sha256_init(&c);
    uint32_t addr = base + a->lay.slot_meta_bytes, left = (uint32_t)a->m.payload_size;
    while (left) {
        uint32_t n = left < TMLA_PROG ? left : TMLA_PROG;
        if (a->hal->flash_read(a->hal->user, addr, buf, n)) return TMLA_FLASH_ERROR;
        tmla_sha256_update(&c, buf, n);
        addr += n; left -= n;
    }
    tmla_sha256_final(&c, d);
    if (tmla_ct_compare(d, a->m.payload_sha256, 32)) return TMLA_SLOT_CORRUPT;
    image_at(a, slot, &a->m.img);
    return TMLA_OK;
}

int tmla_boot(tmla_agent *a, tmla_boot_info *out)
{
    int r;
    out->event = TMLA_EV_NONE; out->reason = TMLA_OK; out->running_slot = -1; out->running_sequence = 0;
    if (!a->provisioned) { out->reason = TMLA_NOT_PROVISIONED; return TMLA_NOT_PROVISIONED; }
    a->phase = PH_IDLE;
    /* Every boot is counted in the state log before anything else: one record, shared with a
     * pending slot's attempt. A torn record fails its CRC and the one before stands, so a cut
     * never lowers the count (it may leave that boot uncounted). */
    tmla_state b = a->st;
    if (b.boot_count < 0xffffffffu) b.boot_count++;
    if (a->st.pending != TMLA_NO_SLOT) {
        int slot = a->st.pending;
        tmla_state s = b;
        s.boot_attempts = (uint8_t)(s.boot_attempts < 255 ? s.boot_attempts + 1 : 255);
        s.last_event = TMLA_EV_ATTEMPT;
        if (state_append(a, &s)) { out->reason = TMLA_FLASH_ERROR; return TMLA_FLASH_ERROR; }
        if (a->st.boot_attempts > a->prov.max_boot_attempts) r = TMLA_BOOT_ATTEMPTS;
        else if ((r = slot_verify(a, slot)) != TMLA_OK) { /* SLOT_CORRUPT or FLASH_ERROR */ }
        else if (a->m.sequence < a->st.floor) r = TMLA_ROLLBACK;
        else if ((r = a->hal->check_image(a->hal->user, &a->m.img)) != TMLA_OK) r = r == TMLA_IMAGE_UNFIT ? r : TMLA_NOT_A_MODEL;
        else if (a->hal->self_test(a->hal->user, &a->m.img) != TMLA_OK) r = TMLA_SELFTEST_FAILED;
        s = a->st;
        s.pending = TMLA_NO_SLOT; s.boot_attempts = 0;
        if (r == TMLA_OK) {
            s.active = (uint8_t)slot;
            if (a->m.sequence > s.floor) s.floor = a->m.sequence;
            s.active_sequence = a->m.sequence;
            s.last_event = TMLA_EV_CONFIRMED; s.last_reason = TMLA_OK;
        } else {
            s.last_event = TMLA_EV_REVERTED; s.last_reason = (uint16_t)r;
        }
        if (state_append(a, &s)) { out->reason = TMLA_FLASH_ERROR; return TMLA_FLASH_ERROR; }
        out->event = r == TMLA_OK ? TMLA_EV_CONFIRMED : TMLA_EV_REVERTED;
        out->reason = r;
    } else {
        (void)state_append(a, &b); /* a flash that refuses the count must not stop the model */
    }
    if (a->st.active == TMLA_NO_SLOT) {
        if (out->reason == TMLA_OK) out->reason = TMLA_NO_MODEL;
        return TMLA_OK;
    }
    r = slot_verify(a, a->st.active); /* never run an image that does not verify now */
    if (r != TMLA_OK) {
        if (out->reason == TMLA_OK) out->reason = r;
        return TMLA_OK;
    }
    out->running_slot = a->st.active;
    out->running_sequence = a->m.sequence;
    out->image = a->m.img;
    return TMLA_OK;
}

/* --- revocation lists and recovery ----------------------------------------------------------- */
int tmla_install_revocations(tmla_agent *a, const uint8_t *b, size_t n)
{
    cb_item pl, map, v, seq, iss;
    if (!a->provisioned) return TMLA_NOT_PROVISIONED;
    int r = tmla_root_signed(a, b, (uint32_t)n, CT_REVOCATIONS, &pl);
    if (r != TMLA_OK) return r;
    const uint8_t *p = b + pl.data;
    cb_get(p, 0, &map);
    if (map.type != CB_MAP || map.val != 3) return TMLA_MALFORMED;
    if (!cb_map_find(p, &map, "sequence", &seq) || seq.type != CB_UINT) return TMLA_MALFORMED;
    if (!cb_map_find(p, &map, "issued", &iss) || iss.type != CB_UINT || iss.val > MAX_UNIX_SECONDS) return TMLA_MALFORMED;
    if (!cb_map_find(p, &map, "revoked", &v) || v.type != CB_ARRAY) return TMLA_MALFORMED;
    uint32_t q = v.data, count = 0;
    for (uint64_t i = 0; i < v.val; i++) {
        cb_item k;
        cb_get(p, q, &k);
        if (k.type != CB_TEXT) return TMLA_MALFORMED;
        q = k.end;
    }
    /* newer only; a damaged stored list may be replaced by one of the same version */
    if (seq.val < a->st.revo_version || (seq.val == a->st.revo_version && a->revo_ok)) return TMLA_STALE_REVOCATIONS;
    int copy = a->st.revo_copy == 0 ? 1 : 0;
    uint32_t base = a->lay.revo_addr + (uint32_t)copy * a->lay.revo_pages * a->lay.page_size, crc = 0;
    if (erase_range(a, base, a->lay.revo_pages * a->lay.page_size)) return TMLA_FLASH_ERROR;
    q = v.data;
    for (uint64_t i = 0; i < v.val; i++) {
        cb_item k;
        uint8_t kid[8];
        cb_get(p, q, &k);
        q = k.end;
        if (tmla_unhex16(p + k.data, (uint32_t)k.val, kid)) continue; /* can never name a key id */
        if ((count + 1) * 8 > a->lay.revo_pages * a->lay.page_size) return TMLA_TOO_LARGE;
        if (a->hal->flash_write(a->hal->user, base + count * 8, kid, 8)) return TMLA_FLASH_ERROR;
        crc = tmla_crc32(crc, kid, 8);
        count++;
    }
    tmla_state s = a->st;
    s.revo_copy = (uint8_t)copy; s.revo_version = seq.val; s.revo_count = count; s.revo_crc = crc;
    s.last_event = TMLA_EV_REVOCATIONS; s.last_reason = TMLA_OK;
    if (state_append(a, &s)) return TMLA_FLASH_ERROR;
    a->revo_ok = 1;
    return TMLA_OK;
}

int tmla_apply_recovery(tmla_agent *a, const uint8_t *b, size_t n)
{
    static const char *const K[] = {"class_id", "device_id", "recovery_counter", "sequence", "issued"};
    cb_item pl, map, v;
    if (!a->provisioned) return TMLA_NOT_PROVISIONED;
    int r = tmla_root_signed(a, b, (uint32_t)n, CT_RECOVERY, &pl);
    if (r != TMLA_OK) return r;
    const uint8_t *p = b + pl.data;
    cb_get(p, 0, &map);
    if (map.type != CB_MAP || map.val != 5) return TMLA_MALFORMED;
    for (int i = 0; i < 5; i++)
        if (!cb_map_find(p, &map, K[i], &v)) return TMLA_MALFORMED;
    cb_map_find(p, &map, "issued", &v);
    if (v.type != CB_UINT || v.val > MAX_UNIX_SECONDS) return TMLA_MALFORMED;
    cb_map_find(p, &map, "sequence", &v);
    if (v.type != CB_UINT || v.val > UINT63) return TMLA_MALFORMED;
    uint64_t sequence = v.val;
    cb_map_find(p, &map, "recovery_counter", &v);
    if (v.type != CB_UINT) return TMLA_MALFORMED;
    uint64_t counter = v.val;
    cb_map_find(p, &map, "class_id", &v);
    if (v.type != CB_BYTES || v.val != 16) return TMLA_MALFORMED;
    for (int i = 0; i < 16; i++) if (p[v.data + i] != a->prov.class_id[i]) return TMLA_WRONG_CLASS;
    cb_map_find(p, &map, "device_id", &v);
    if (v.type != CB_BYTES || v.val != 16) return TMLA_MALFORMED;
    for (int i = 0; i < 16; i++) if (p[v.data + i] != a->prov.device_id[i]) return TMLA_WRONG_DEVICE;
    if (counter != a->st.recovery_counter) return TMLA_STALE_RECOVERY; /* one use each */
    tmla_state s = a->st;
    s.floor = sequence; s.recovery_counter = counter + 1;
    s.last_event = TMLA_EV_RECOVERY; s.last_reason = TMLA_OK;
    if (state_append(a, &s)) return TMLA_FLASH_ERROR;
    return TMLA_OK;
}
