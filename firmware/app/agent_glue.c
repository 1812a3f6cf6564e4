/* The update agent (firmware/agent) linked into the application, on the part's flash controller.
 *
 * HAL: flash_read = the memory-mapped flash; flash_write = row programs (HAL_FC CMD 3, ≤ 128 B,
 * never across a page); flash_erase = page erase; now = set by the host in the mailbox (the RTC);
 * check_image = the runtime's loader/validator (app_load → tmr_load); self_test = the manifest's
 * golden vectors on the runtime (app_infer), every output within the manifest's tolerance.
 *
 * Boot: agent_boot() overrides app.c's weak hook. At reset it settles a pending slot and verifies
 * the active one; app_init then loads what it returns (or a page that is no model: nothing runs).
 *
 * Host commands (called on the emulated core, kept by the linker through agent_entries):
 *   agent_install_begin()      tmla_init + tmla_install_begin
 *   agent_install_feed(n)      the next n bundle bytes, written by the host into agent_io
 *   agent_install_end()
 *   agent_revocations(n)       a root-signed revocation list in agent_work
 *   agent_recovery(n)          a root-signed recovery statement in agent_work
 *   agent_status()             tmla_init only (the state log into the mailbox)
 *   agent_evidence(n)          a nonce of n bytes in agent_io → the signed evidence report in
 *                              agent_io, its length in agent_mailbox.evidence_bytes
 *   agent_sign(n)              a telemetry window of n bytes in agent_work → its COSE_Sign1 by the
 *                              device key in agent_io (length in agent_mailbox.evidence_bytes)
 *   agent_quota(n)             a quota token (metering-key signed) in agent_work
 *   agent_infer()              one metered inference: the counter is raised in flash first,
 *                              then app_infer; refused (quota_exhausted / quota_expired) beyond
 *                              the installed quota on a metered device
 * Every command leaves its result, the state record and the boot outcome in agent_mailbox.
 */
#include <stddef.h>
#include <stdint.h>

#include "agent_map.h"
#include "app.h"
#include "hal.h"
#include "tmla/agent.h"

#define HAL_FC_SRC HAL_REG(0x110)
#define HAL_FC_LEN HAL_REG(0x114)
#define AGENT_BOX_MAGIC 0x544E4741u /* "AGNT" */

typedef struct {
  uint32_t magic;
  uint32_t io_addr, io_bytes, work_addr, work_bytes;
  int32_t result;        /* last command's tmla_reason (or progress code) */
  int32_t boot_event, boot_reason, running_slot;
  uint32_t running_image_addr, running_image_bytes;
  uint32_t flash_errors; /* controller statuses other than OK seen by the HAL */
  uint64_t running_sequence;
  uint64_t now;          /* host-set Unix seconds */
  uint32_t selftest_vectors, selftest_worst, check_status, pad;
  tmla_state state;
  uint64_t inference_count, quota_limit, quota_expires, quota_serial;
  uint32_t evidence_bytes, infer_status;
} agent_box;

volatile agent_box agent_mailbox __attribute__((used));
uint8_t agent_io[AGENT_IO_BYTES] __attribute__((aligned(8)));
uint8_t agent_work[AGENT_META_BYTES] __attribute__((aligned(8)));
static tmla_agent g_agent;

/* --- HAL ----------------------------------------------------------------------------------------- */
static int in_flash(uint32_t addr, uint32_t len) {
  return addr >= HAL_FLASH_BASE && len <= HAL_FLASH_BYTES && addr - HAL_FLASH_BASE <= HAL_FLASH_BYTES - len;
}

static int g_read(void *u, uint32_t addr, void *buf, uint32_t len) {
  (void)u;
  if (!in_flash(addr, len)) return -1;
  const volatile uint8_t *s = (const volatile uint8_t *)(uintptr_t)addr;
  uint8_t *d = (uint8_t *)buf;
  for (uint32_t i = 0; i < len; i++) d[i] = s[i];
  return 0;
}

static int program_row(uint32_t addr, const uint8_t *src, uint32_t len) {
  static uint32_t row[TMLA_PROG / 4]; /* word-aligned copy, tail padded with erased bytes */
  uint8_t *b = (uint8_t *)row;
  uint32_t words = (len + 3) / 4;
  for (uint32_t i = 0; i < words * 4; i++) b[i] = i < len ? src[i] : 0xff;
  HAL_FC_ADDR = addr;
  HAL_FC_SRC = (uint32_t)(uintptr_t)row;
  HAL_FC_LEN = words * 4;
  HAL_FC_CMD = 3;
  return (int)HAL_FC_STATUS;
}

static int g_write(void *u, uint32_t addr, const void *buf, uint32_t len) {
  (void)u;
  const uint8_t *p = (const uint8_t *)buf;
  if (!in_flash(addr, len) || addr % 4) return -1;
  while (len) { /* rows of ≤ TMLA_PROG bytes that never cross a page */
    uint32_t room = AGENT_PAGE_BYTES - (addr - HAL_FLASH_BASE) % AGENT_PAGE_BYTES;
    uint32_t n = len < TMLA_PROG ? len : TMLA_PROG;
    if (n > room) n = room;
    int rc = program_row(addr, p, n);
    if (rc) {
      agent_mailbox.flash_errors++;
      return -1;
    }
    addr += n; p += n; len -= n;
  }
  return 0;
}

static int g_erase(void *u, uint32_t addr) {
  (void)u;
  int rc = hal_flash_erase(addr);
  if (rc) agent_mailbox.flash_errors++;
  return rc ? -1 : 0;
}

static uint64_t g_now(void *u) {
  (void)u;
  return agent_mailbox.now;
}

static int g_check(void *u, const tmla_image *img) {
  (void)u;
  int rc = app_load(img->addr, img->size);
  agent_mailbox.check_status = (uint32_t)rc;
  switch (rc) {
    case 0: return TMLA_OK;
    case 2: case 4: case 5: return TMLA_IMAGE_UNFIT; /* version, arena, op: a model, not for us */
    default: return TMLA_NOT_A_MODEL;                 /* magic, bounds, parameters */
  }
}

static uint64_t prod(const uint64_t *shape, uint32_t rank) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < rank; i++) n *= shape[i];
  return n;
}

static int g_selftest(void *u, const tmla_image *img) {
  (void)u;
  agent_mailbox.selftest_vectors = 0;
  agent_mailbox.selftest_worst = 0;
  if (app_load(img->addr, img->size) != 0) return TMLA_SELFTEST_FAILED;
  if (!img->has_selftest) return TMLA_OK; /* it loaded: nothing to compare */
  uint64_t n_in = prod(img->input_shape, img->in_rank), n_out = prod(img->output_shape, img->out_rank);
  if (n_in != tmr_mailbox.input_bytes || n_out != tmr_mailbox.output_bytes) return TMLA_SELFTEST_FAILED;
  if (img->inputs_len != img->count * n_in || img->expected_len != img->count * n_out) return TMLA_SELFTEST_FAILED;
  for (uint64_t v = 0; v < img->count; v++) {
    int8_t *in = (int8_t *)(uintptr_t)tmr_mailbox.input_addr;
    const int8_t *x = (const int8_t *)img->inputs + v * n_in;
    for (uint64_t i = 0; i < n_in; i++) in[i] = x[i];
    if (app_infer() != 0) return TMLA_SELFTEST_FAILED;
    const int8_t *y = (const int8_t *)(uintptr_t)tmr_mailbox.output_addr;
    const int8_t *want = (const int8_t *)img->expected + v * n_out;
    for (uint64_t j = 0; j < n_out; j++) {
      int32_t d = (int32_t)y[j] - (int32_t)want[j];
      if (d < 0) d = -d;
      if ((uint32_t)d > agent_mailbox.selftest_worst) agent_mailbox.selftest_worst = (uint32_t)d;
      if ((uint32_t)d > img->tolerance) return TMLA_SELFTEST_FAILED;
    }
    agent_mailbox.selftest_vectors++;
  }
  return TMLA_OK;
}

static const tmla_hal g_hal = {0, g_read, g_write, g_erase, g_now, g_check, g_selftest};
static const tmla_layout g_layout = {
    AGENT_PAGE_BYTES, AGENT_PROV_ADDR, AGENT_STATE_ADDR, AGENT_REVO_ADDR, AGENT_REVO_PAGES,
    {AGENT_SLOT0_ADDR, AGENT_SLOT1_ADDR}, AGENT_META_BYTES, AGENT_IMAGE_BYTES, AGENT_METER_ADDR};

/* --- commands ------------------------------------------------------------------------------------ */
static void publish(int result) {
  agent_mailbox.magic = AGENT_BOX_MAGIC;
  agent_mailbox.io_addr = (uint32_t)(uintptr_t)agent_io;
  agent_mailbox.io_bytes = AGENT_IO_BYTES;
  agent_mailbox.work_addr = (uint32_t)(uintptr_t)agent_work;
  agent_mailbox.work_bytes = AGENT_META_BYTES;
  agent_mailbox.result = result;
  agent_mailbox.state = g_agent.st;
  agent_mailbox.inference_count = g_agent.meter.count;
  agent_mailbox.quota_limit = g_agent.meter.limit;
  agent_mailbox.quota_expires = g_agent.meter.expires;
  agent_mailbox.quota_serial = g_agent.meter.serial;
}

static int init(void) { return tmla_init(&g_agent, &g_hal, &g_layout, agent_work); }

uint32_t agent_boot(void) {
  tmla_boot_info info;
  int r = init();
  agent_mailbox.boot_event = TMLA_EV_NONE;
  agent_mailbox.running_slot = -1;
  agent_mailbox.running_sequence = 0;
  agent_mailbox.running_image_addr = 0;
  agent_mailbox.running_image_bytes = 0;
  if (r == TMLA_OK) {
    r = tmla_boot(&g_agent, &info);
    agent_mailbox.boot_event = info.event;
    agent_mailbox.boot_reason = info.reason;
    agent_mailbox.running_slot = info.running_slot;
    agent_mailbox.running_sequence = info.running_sequence;
    if (info.running_slot >= 0) {
      agent_mailbox.running_image_addr = info.image.addr;
      agent_mailbox.running_image_bytes = info.image.size;
    }
  } else {
    agent_mailbox.boot_reason = r;
  }
  publish(r);
  /* nothing verified: hand the app the provisioning page, which is no model image */
  return agent_mailbox.running_slot >= 0 ? agent_mailbox.running_image_addr : AGENT_PROV_ADDR;
}

int agent_install_begin(void) {
  int r = init();
  if (r == TMLA_OK) r = tmla_install_begin(&g_agent);
  publish(r);
  return r;
}

int agent_install_feed(uint32_t n) {
  int r = n <= AGENT_IO_BYTES ? tmla_install_feed(&g_agent, agent_io, n) : TMLA_BAD_CALL;
  publish(r);
  return r;
}

int agent_install_end(void) {
  int r = tmla_install_end(&g_agent);
  publish(r);
  return r;
}

int agent_revocations(uint32_t n) {
  int r = init();
  if (r == TMLA_OK) r = n <= AGENT_META_BYTES ? tmla_install_revocations(&g_agent, agent_work, n) : TMLA_BAD_CALL;
  publish(r);
  return r;
}

int agent_recovery(uint32_t n) {
  int r = init();
  if (r == TMLA_OK) r = n <= AGENT_META_BYTES ? tmla_apply_recovery(&g_agent, agent_work, n) : TMLA_BAD_CALL;
  publish(r);
  return r;
}

int agent_status(void) {
  int r = init();
  publish(r);
  return r;
}

int agent_evidence(uint32_t n) {
  static uint8_t nonce[64];
  uint32_t len = 0;
  int r = init();
  agent_mailbox.evidence_bytes = 0;
  if (r == TMLA_OK && (n < 8 || n > sizeof nonce)) r = TMLA_BAD_CALL;
  if (r == TMLA_OK) {
    for (uint32_t i = 0; i < n; i++) nonce[i] = agent_io[i];
    r = tmla_evidence(&g_agent, nonce, n, agent_io, AGENT_IO_BYTES, &len);
  }
  if (r == TMLA_OK) agent_mailbox.evidence_bytes = len;
  publish(r);
  return r;
}

int agent_sign(uint32_t n) {
  uint32_t len = 0;
  int r = init();
  agent_mailbox.evidence_bytes = 0;
  if (r == TMLA_OK && n > AGENT_META_BYTES) r = TMLA_BAD_CALL;
  if (r == TMLA_OK) r = tmla_sign_telemetry(&g_agent, agent_work, n, agent_io, AGENT_IO_BYTES, &len);
  if (r == TMLA_OK) agent_mailbox.evidence_bytes = len;
  publish(r);
  return r;
}

int agent_quota(uint32_t n) {
  int r = init();
  if (r == TMLA_OK) r = n <= AGENT_META_BYTES ? tmla_install_quota(&g_agent, agent_work, n) : TMLA_BAD_CALL;
  publish(r);
  return r;
}

int agent_infer(void) {
  int r = init();
  if (r == TMLA_OK) r = tmla_meter_consume(&g_agent); /* counted in flash before it runs */
  agent_mailbox.infer_status = 0;
  if (r == TMLA_OK) agent_mailbox.infer_status = (uint32_t)app_infer();
  publish(r);
  return r;
}

/* primitives, for the benchmark: cycles of one operation on this core */
int agent_x_ed25519(uint32_t sig, uint32_t pk, uint32_t msg, uint32_t len) {
  return tmla_ed25519_verify((const uint8_t *)(uintptr_t)sig, (const uint8_t *)(uintptr_t)pk,
                             (const void *)(uintptr_t)msg, len);
}

int agent_x_sha256(uint32_t data, uint32_t len, uint32_t out) {
  tmla_sha256((const void *)(uintptr_t)data, len, (uint8_t *)(uintptr_t)out);
  return 0;
}

int agent_x_gcm(uint32_t key, uint32_t buf, uint32_t len, uint32_t tag) {
  static tmla_gcm_ctx g;
  static const uint8_t nonce[12] = {0};
  if (tmla_gcm_init(&g, (const uint8_t *)(uintptr_t)key, 32, nonce)) return -1;
  uint8_t *p = (uint8_t *)(uintptr_t)buf;
  tmla_gcm_decrypt(&g, p, p, len);
  return tmla_gcm_finish(&g, (const uint8_t *)(uintptr_t)tag);
}

__attribute__((used, section(".entries"))) const void *const agent_entries[] = {
    (const void *)agent_install_begin, (const void *)agent_install_feed, (const void *)agent_install_end,
    (const void *)agent_revocations,   (const void *)agent_recovery,     (const void *)agent_status,
    (const void *)agent_x_ed25519,     (const void *)agent_x_sha256,     (const void *)agent_x_gcm,
    (const void *)agent_evidence,      (const void *)agent_quota,        (const void *)agent_infer,
    (const void *)agent_sign,
    (const void *)&agent_mailbox};
