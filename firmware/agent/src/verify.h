/* Internal: COSE_Sign1, key statement, manifest, revocation list and recovery statement checks,
 * in the order tinymlops.bundle.verify_bundle applies them. */
#ifndef TMLA_VERIFY_H
#define TMLA_VERIFY_H
#include "tmla/agent.h"
#include "cbor.h"

#define CT_MANIFEST "application/tinymlops-manifest+cbor"
#define CT_KEY_STATEMENT "application/tinymlops-key-statement+cbor"
#define CT_REVOCATIONS "application/tinymlops-revocations+cbor"
#define CT_RECOVERY "application/tinymlops-recovery+cbor"
#define CT_QUOTA "application/tinymlops-quota+cbor"
#define PURPOSE_BUNDLE "bundle-signing" /* key statement purposes (tinymlops.bundle.trust) */
#define PURPOSE_QUOTA "quota-signing"
#define HDR_KEY_STATEMENT "tinymlops-key-statement"
#define MAX_SIGNED_OBJECT (64u * 1024u)
#define MAX_UNIX_SECONDS 253402300799ull
#define UINT63 0x7fffffffffffffffull

typedef struct {
    const uint8_t *buf;          /* the whole COSE_Sign1 */
    cb_item protected_, payload, signature, statement; /* bstr items */
    int has_statement;           /* unprotected holds a byte-string key statement */
    int statement_present;       /* the label is there at all */
    const uint8_t *kid; uint32_t kid_len;
} tmla_sign1;

typedef struct {
    uint8_t kid[8];
    uint8_t pk[32];
    uint64_t valid_from, valid_until;
} tmla_statement;

int tmla_cose_decode(const uint8_t *b, uint32_t n, const char *content_type, int allow_statement, tmla_sign1 *out);
int tmla_cose_verify(const tmla_sign1 *s, const uint8_t pk[32]);
/* a root-signed object: returns OK and the payload item, or UNTRUSTED_KEY / MALFORMED */
int tmla_root_signed(const tmla_agent *a, const uint8_t *b, uint32_t n, const char *ct, cb_item *payload);
/* a root-signed key statement; a well-formed one for a purpose other than `purpose` → UNTRUSTED_KEY */
int tmla_statement_check(const tmla_agent *a, const uint8_t *b, uint32_t n, const char *purpose, tmla_statement *st);
/* a COSE_Sign1 of type ct signed by a key the root certified for `purpose` (its statement in the
 * unprotected header; none → UNTRUSTED_KEY); policy: also the revocation list and the window */
int tmla_key_signed(tmla_agent *a, const uint8_t *b, uint32_t n, const char *ct, const char *purpose, int policy,
                    tmla_sign1 *s, tmla_statement *st);
int tmla_manifest_decode(const uint8_t *b, const cb_item *payload, tmla_manifest *m);
/* everything up to the payload: COSE, key chain, manifest; policy is the caller's */
int tmla_verify_signed_manifest(tmla_agent *a, const uint8_t *b, uint32_t n, int check_time_and_revocation, tmla_manifest *m);
void tmla_hex8(const uint8_t in[8], char out[16]);
int tmla_unhex16(const uint8_t *s, uint32_t len, uint8_t out[8]);
#endif
