/* tmla — the tinymlops update agent: verify, install A/B, self-test, confirm or revert.
 *
 * Freestanding C11. No heap, no libc beyond memcpy/memset/memcmp/memmove, no globals: every
 * state lives in a caller-owned tmla_agent. The firmware supplies a tmla_hal (flash, time and the
 * two callbacks into the model runtime) and a flash layout (tmla_layout).
 *
 * Flows:
 *   tmla_init()                                    read provisioning page + state log
 *   tmla_install_begin / _feed* / _end             stream one bundle into the inactive slot;
 *                                                  TMLA_PENDING when it verified and was marked
 *   tmla_boot()                                    at power-on: settle a pending slot (attempts,
 *                                                  verify, check, self-test → confirm or revert),
 *                                                  then verify the active slot before running it
 *   tmla_install_revocations()                     a root-signed revocation list, newer only
 *   tmla_apply_recovery()                          a root-signed recovery statement (lowers the
 *                                                  anti-rollback sequence of one device, once)
 */
#ifndef TMLA_AGENT_H
#define TMLA_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "tmla_crypto.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Why. The first block mirrors tinymlops.bundle.Reason (same names, same order of checks). */
typedef enum {
    TMLA_OK = 0,
    TMLA_BAD_MAGIC,
    TMLA_UNSUPPORTED_VERSION,
    TMLA_MALFORMED,
    TMLA_UNTRUSTED_KEY,
    TMLA_KEY_MISMATCH,
    TMLA_REVOKED_KEY,
    TMLA_EXPIRED_KEY,
    TMLA_KEY_NOT_YET_VALID,
    TMLA_BAD_SIGNATURE,
    TMLA_ROLLBACK,
    TMLA_WRONG_CLASS,
    TMLA_EXPIRED_MANIFEST,
    TMLA_PAYLOAD_TRUNCATED,
    TMLA_PAYLOAD_TOO_LONG,
    TMLA_PAYLOAD_DIGEST_MISMATCH,
    TMLA_CIPHERTEXT_DIGEST_MISMATCH,
    TMLA_MISSING_KEY,
    TMLA_WRONG_KEK,
    TMLA_DECRYPTION_FAILED,
    TMLA_IO_ERROR,
    /* device policy and state */
    TMLA_TOO_LARGE,          /* declared payload larger than a model slot */
    TMLA_NOT_A_MODEL,        /* check_image: the payload is not a model image */
    TMLA_IMAGE_UNFIT,        /* check_image: a model, but not for this runtime (ops, arena) */
    TMLA_FAST_FORWARD,       /* sequence jumps more than the class's bound */
    TMLA_ALREADY_INSTALLED,  /* sequence equal to the running one */
    TMLA_STALE_REVOCATIONS,  /* revocation list not newer than the stored one */
    TMLA_SELFTEST_FAILED,
    TMLA_BOOT_ATTEMPTS,      /* pending image never confirmed within max attempts */
    TMLA_SLOT_CORRUPT,       /* a slot does not verify at boot (signature chain or digest) */
    TMLA_WRONG_DEVICE,       /* recovery statement for another device */
    TMLA_STALE_RECOVERY,     /* recovery statement already used (counter) */
    TMLA_NOT_PROVISIONED,
    TMLA_FLASH_ERROR,
    TMLA_BAD_CALL,           /* API misuse (feed without begin, ...) */
    TMLA_NO_MODEL,           /* boot: nothing verified to run */
    /* metering (attest.c) */
    TMLA_QUOTA_EXHAUSTED,    /* metered device: the inference counter reached the quota (or no quota) */
    TMLA_QUOTA_EXPIRED,      /* metered device: the quota token's expiry has passed */
    TMLA_STALE_QUOTA,        /* quota token serial not above the stored one (a replay) */
    TMLA_NO_DEVICE_KEY,      /* evidence asked of a device provisioned without a key */
    TMLA_REASON_COUNT,
    /* progress codes (not failures) */
    TMLA_MORE = 100,         /* feed: keep going */
    TMLA_PENDING = 101,      /* install_end: verified, written, marked pending: reboot */
} tmla_reason;

const char *tmla_reason_name(int reason);

/* What the runtime callbacks see of an image: where it is, and what its signed manifest says. */
typedef struct {
    uint32_t addr, size;        /* image bytes in flash */
    uint32_t slot;
    uint64_t sequence, arena_bytes;
    const uint8_t *ops;         /* CBOR array of text strings (op names), ops_len bytes */
    uint32_t ops_len, ops_count;
    int has_selftest;
    uint32_t in_rank, out_rank;
    uint64_t input_shape[8], output_shape[8];
    const uint8_t *inputs, *expected;  /* int8, row-major, count vectors */
    uint32_t inputs_len, expected_len;
    uint64_t count;
    uint32_t tolerance;         /* max |delta| per int8 output */
} tmla_image;

typedef struct {
    void *user;
    /* flash: reads anywhere; writes only into erased bytes; erase one page at a page address.
     * Return 0 on success. */
    int (*flash_read)(void *user, uint32_t addr, void *buf, uint32_t len);
    int (*flash_write)(void *user, uint32_t addr, const void *buf, uint32_t len);
    int (*flash_erase)(void *user, uint32_t addr);
    uint64_t (*now)(void *user);                               /* Unix seconds */
    int (*check_image)(void *user, const tmla_image *img);     /* TMLA_OK / NOT_A_MODEL / IMAGE_UNFIT */
    int (*self_test)(void *user, const tmla_image *img);       /* TMLA_OK / SELFTEST_FAILED */
} tmla_hal;

/* Flash layout of one profile; every address and size a multiple of page_size. */
typedef struct {
    uint32_t page_size;
    uint32_t prov_addr;         /* 1 page, written at provisioning only */
    uint32_t state_addr;        /* 2 pages: the power-cut-safe state log */
    uint32_t revo_addr;         /* 2 copies of revo_pages pages: the stored revocation list */
    uint32_t revo_pages;
    uint32_t slot_addr[2];      /* A/B model slots: manifest area, then image area */
    uint32_t slot_meta_bytes;   /* the signed manifest as received (also the RAM work buffer size) */
    uint32_t slot_image_bytes;  /* the model image capacity */
    uint32_t meter_addr;        /* 2 pages: the power-cut-safe inference counter log (attest.c) */
} tmla_layout;

/* Provisioning page (little-endian) at prov_addr: version 1 is 136 bytes (no device key),
 * version 2 is 204 bytes and adds the metered flag and the device's Ed25519 key pair (the 32-byte
 * secret seed and its public key), written by the factory; the agent only ever reads them. */
#define TMLA_PROV_MAGIC 0x504c4d54u /* "TMLP" */
#define TMLA_PROV_BYTES 204
#define TMLA_PROV_V1_BYTES 136
typedef struct {
    uint8_t root_pk[32];
    uint8_t device_id[16];
    uint8_t class_id[16];
    uint8_t has_kek;
    uint8_t kek[32];
    uint64_t ff_bound;          /* max sequence jump above the stored one */
    uint64_t initial_sequence;
    uint32_t max_boot_attempts;
    uint8_t metered;            /* refuse inference beyond the installed quota */
    uint8_t has_device_key;
    uint8_t device_sk[32];      /* Ed25519 seed: never leaves the device */
    uint8_t device_pk[32];
} tmla_prov;

/* Metering record: the newest valid one (highest record number) of the two meter pages. */
typedef struct {
    uint32_t seq;               /* record number */
    uint64_t count;             /* inferences started, ever: only grows */
    uint64_t limit;             /* count at which a metered device stops */
    uint64_t expires;           /* Unix seconds; 0: no quota */
    uint64_t serial;            /* of the last installed quota token */
} tmla_meter;

/* One record of the state log. */
#define TMLA_NO_SLOT 0xffu
typedef struct {
    uint32_t seq;               /* record number: newest valid wins */
    uint8_t active, pending, boot_attempts, last_event;
    uint16_t last_reason;
    uint8_t revo_copy;
    uint64_t floor;             /* anti-rollback sequence */
    uint64_t revo_version;
    uint32_t revo_count, revo_crc;
    uint64_t recovery_counter;
    uint64_t active_sequence;
    uint32_t boot_count;        /* boots, ever (tmla_boot); 0 in records written before it existed */
} tmla_state;

enum { TMLA_EV_NONE = 0, TMLA_EV_PENDING, TMLA_EV_CONFIRMED, TMLA_EV_REVERTED, TMLA_EV_REVOCATIONS,
       TMLA_EV_RECOVERY, TMLA_EV_ATTEMPT, TMLA_EV_CLEARED };

typedef struct {
    int event;                  /* TMLA_EV_CONFIRMED / REVERTED / NONE (plain boot) */
    int reason;                 /* why reverted, or TMLA_NO_MODEL / TMLA_SLOT_CORRUPT, else OK */
    int running_slot;           /* -1: no verified model to run */
    uint64_t running_sequence;
    tmla_image image;           /* of the running slot, valid while the agent is untouched */
} tmla_boot_info;

#define TMLA_PROG 128           /* flash program chunk; divides every page size */

typedef struct tmla_manifest tmla_manifest;

struct tmla_manifest {
    const uint8_t *cbor; uint32_t cbor_len;         /* the manifest map, inside the work buffer */
    uint64_t sequence, payload_size, ciphertext_size, arena_bytes, created, expires;
    uint8_t class_id[16], payload_sha256[32], ciphertext_sha256[32];
    int encrypted, has_ct_sha;
    char kek_id[16];
    uint8_t wrapped_key[40], nonce[12];
    uint32_t ct_sha_span[2], ct_size_span[2];       /* value spans, for the GCM associated data */
    tmla_image img;
    uint8_t signing_kid[8];
};

typedef struct {
    const tmla_hal *hal;
    tmla_layout lay;
    uint8_t *work;                  /* RAM buffer of lay.slot_meta_bytes */
    tmla_prov prov;
    int provisioned;
    tmla_state st;
    int st_valid;
    uint32_t st_page, st_index;     /* where the newest record is */
    uint8_t root_kid[8];
    int revo_ok;                    /* the stored list matches its CRC */
    /* install */
    int phase, result, target;
    uint8_t hdr[10];
    uint32_t hdr_got, man_len, man_got;
    uint64_t stored_total, stored_got;
    tmla_manifest m;
    tmla_sha256_ctx plain, cipher;
    tmla_gcm_ctx gcm;
    uint8_t tag[16];
    uint8_t prog[TMLA_PROG];
    uint32_t prog_len, write_off, erased_upto;
    /* metering */
    tmla_meter meter;
    uint32_t meter_page, meter_index;
    int meter_valid;
} tmla_agent;

int tmla_init(tmla_agent *a, const tmla_hal *hal, const tmla_layout *lay, uint8_t *work);
int tmla_install_begin(tmla_agent *a);
int tmla_install_feed(tmla_agent *a, const uint8_t *data, size_t len);
int tmla_install_end(tmla_agent *a);
int tmla_boot(tmla_agent *a, tmla_boot_info *out);
int tmla_install_revocations(tmla_agent *a, const uint8_t *cose, size_t len);
int tmla_apply_recovery(tmla_agent *a, const uint8_t *cose, size_t len);

/* Attestation and metering (attest.c).
 *   tmla_evidence()       a COSE_Sign1 (EdDSA, the device key) over EAT claims (RFC 9711): the
 *                         verifier's nonce, the ueid, both slots' states, sequences and payload
 *                         digests, the running slot, floor, revocation version, state record
 *                         number, the boot count (EAT bootcount) and the inference counter.
 *                         out_len gets its length.
 *   tmla_meter_consume()  one inference: refused on a metered device beyond its quota or past
 *                         its expiry, else the counter is raised in flash BEFORE the inference runs
 *   tmla_install_quota()  a quota token for this device (serial above the stored one), signed by a
 *                         metering key whose root-signed statement (purpose quota-signing, not
 *                         revoked, in its window) it carries; root- or bundle-key-signed: refused
 *   tmla_sign()           Ed25519 (RFC 8032) with the device key: monocypher's scalar primitives,
 *                         the hashes by the agent's SHA-512 */
int tmla_evidence(tmla_agent *a, const uint8_t *nonce, uint32_t nonce_len, uint8_t *out, uint32_t cap,
                  uint32_t *out_len);
int tmla_meter_consume(tmla_agent *a);
int tmla_install_quota(tmla_agent *a, const uint8_t *cose, size_t len);
int tmla_sign(const uint8_t seed[32], const uint8_t pk[32], const uint8_t *msg, size_t len, uint8_t sig[64]);
int tmla_meter_load(tmla_agent *a);
/* any payload (a telemetry window) as a COSE_Sign1 by the device key, content type given */
int tmla_sign_cose(tmla_agent *a, const char *content_type, const uint8_t *payload, uint32_t len, uint8_t *out,
                   uint32_t cap, uint32_t *out_len);
int tmla_sign_telemetry(tmla_agent *a, const uint8_t *payload, uint32_t len, uint8_t *out, uint32_t cap,
                        uint32_t *out_len);
void tmla_sign_parts(const uint8_t seed[32], const uint8_t pk[32], const uint8_t *const *part, const uint32_t *size,
                     int n, uint8_t sig[64]);

/* helpers exposed for the runtime glue and the tests */
uint32_t tmla_crc32(uint32_t crc, const void *data, size_t len);
int tmla_prov_encode(const tmla_prov *p, uint8_t out[TMLA_PROV_BYTES]);

#ifdef __cplusplus
}
#endif
#endif
