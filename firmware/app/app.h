/* The application: loads a model image from a flash slot and runs inferences.
 * The update agent (firmware/agent/, a separate component) calls into it:
 *   app_load(slot_addr, slot_bytes)  after it has verified/installed an image (and for self-test),
 *   app_infer()                      to run one inference on the input already in the arena.
 * agent_boot() is weak here: an agent that links in overrides it and chooses the slot to boot. */
#ifndef APP_H
#define APP_H
#include <stdint.h>

typedef struct {
  uint32_t magic;        /* APP_MAILBOX_MAGIC once the app has booted */
  uint32_t status;       /* tmr_status of the last load/infer */
  uint32_t slot_addr;    /* image the app runs */
  uint32_t arena_addr;
  uint32_t arena_bytes;  /* arena available */
  uint32_t arena_need;   /* the image's memory plan */
  uint32_t input_addr;
  uint32_t input_bytes;
  uint32_t output_addr;
  uint32_t output_bytes;
  uint32_t ops_run;
  uint32_t invocations;
  uint32_t profile;      /* host sets 1: mark every op boundary on HAL_MARK */
  uint32_t command;      /* free for the agent */
  uint32_t arg0, arg1;
} app_mailbox;

#define APP_MAILBOX_MAGIC 0x584F424Du /* "MBOX" */

extern volatile app_mailbox tmr_mailbox;

int app_load(uint32_t slot_addr, uint32_t slot_bytes);
int app_infer(void);
void app_init(void);
uint32_t agent_boot(void);
void tmr_halt(void);
#endif
