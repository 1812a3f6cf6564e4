/* Strict deterministic CBOR (RFC 8949) for untrusted input — internal to the agent.
 *
 * cb_check() accepts exactly one data item spanning the whole buffer and refuses: indefinite
 * lengths, non-shortest heads (integers, lengths, tags), map keys not in canonical order
 * (length-first, then bytewise — what the signer's cbor2 canonical encoder writes) or repeated,
 * floats, simple values other than false/true/null, tags other than 18 at the top (COSE_Sign1),
 * text that is not UTF-8, reserved additional-information values, nesting deeper than
 * CB_MAX_DEPTH, and trailing bytes. tinymlops.bundle.cbor enforces the same rules in Python.
 * After cb_check(), cb_get() navigates without further bounds doubt.
 */
#ifndef TMLA_CBOR_H
#define TMLA_CBOR_H
#include <stddef.h>
#include <stdint.h>

#define CB_MAX_DEPTH 8

enum { CB_UINT, CB_NINT, CB_BYTES, CB_TEXT, CB_ARRAY, CB_MAP, CB_TAG, CB_FALSE, CB_TRUE, CB_NULL };

typedef struct {
    int type;
    uint64_t val;       /* uint; nint: -1 - val; bytes/text: length; array/map: count; tag number */
    uint32_t start;     /* head */
    uint32_t data;      /* first byte after the head */
    uint32_t end;       /* first byte after the item */
} cb_item;

int cb_check(const uint8_t *b, uint32_t n);
void cb_get(const uint8_t *b, uint32_t off, cb_item *it);
/* i-th child start of an array or map item (maps: keys at even, values at odd indices) */
int cb_map_find(const uint8_t *b, const cb_item *map, const char *key, cb_item *val);
uint32_t cb_text_chars(const uint8_t *s, uint32_t len); /* code points of valid UTF-8 */
int cb_text_eq(const uint8_t *b, const cb_item *it, const char *s);
#endif
